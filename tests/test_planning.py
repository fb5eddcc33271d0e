"""Planning and restore as pure functions, table-style."""

from __future__ import annotations

from wavekit.domain.grants import Grant, grant_set
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import plan_package, plan_restore, prove_restore
from wavekit.domain.states import PackageState

PKG = PackageView(key="p", name="P", state=PackageState.RELEASE_READY,
                  members=frozenset({"ann", "bob"}), entitlements=frozenset({"e1", "e2"}),
                  removes=frozenset({"old"}), retires=frozenset({"legacy"}))


def test_plan_adds_only_what_is_missing_and_removes_only_what_is_held() -> None:
    current = grant_set([("ann", "e1"), ("ann", "old"), ("bob", "legacy"), ("zed", "e1"),
                         ("zed", "legacy"), ("ann", "unrelated")])
    plan = plan_package(PKG, current)
    assert plan.adds == grant_set([("ann", "e2"), ("bob", "e1"), ("bob", "e2")])
    assert plan.removes == grant_set([("ann", "old")])
    # zed is not a member: their legacy grant is not the package's to retire.
    assert plan.retirements == grant_set([("bob", "legacy")])
    assert ("ann", "unrelated") not in plan.prior
    assert plan.prior == current - grant_set([("ann", "unrelated")])
    assert plan.counts() == {"adds": 3, "removes": 1, "retirements": 1}


def test_plan_on_a_target_already_matching_is_empty() -> None:
    current = grant_set([(m, e) for m in PKG.members for e in PKG.entitlements])
    assert plan_package(PKG, current).is_empty


def test_restore_undoes_exactly_the_touched_grants() -> None:
    prior = grant_set([("ann", "old"), ("bob", "legacy"), ("zed", "e1")])
    plan = plan_package(PKG, prior)
    after = (prior | plan.adds) - plan.removes - plan.retirements
    after |= {Grant("eve", "e1")}  # someone else granted e1 out of band meanwhile
    restore = plan_restore(prior, plan.touched, after)
    assert restore.adds == plan.removes | plan.retirements
    assert restore.removes == plan.adds
    readback = (after | restore.adds) - restore.removes
    proof = prove_restore(prior, plan.touched, readback)
    assert proof.touched_restored
    assert proof.drift_outside == {Grant("eve", "e1")}  # reported, not silently removed
    assert not proof.equal
    clean = prove_restore(prior, plan.touched, readback - {Grant("eve", "e1")})
    assert clean.equal and clean.prior_count == clean.readback_count == 3


def test_restore_proof_catches_an_unrestored_grant() -> None:
    prior = grant_set([("ann", "old")])
    touched = grant_set([("ann", "old"), ("ann", "e1")])
    proof = prove_restore(prior, touched, grant_set([("ann", "e1")]))
    assert not proof.touched_restored
    assert proof.mismatched == grant_set([("ann", "old"), ("ann", "e1")])
