"""The contract every target passes: sandbox, SCIM and LDAP.

Each target fixture yields a Target whose directory holds identities u01..u30 and empty
entitlements ent-a..ent-d at the start of every test.
"""

from __future__ import annotations

import pytest

from wavekit.adapters.targets.base import BatchResult, Target
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.grants import Grant, grant_set
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import plan_package, plan_restore, prove_restore
from wavekit.domain.states import PackageState

USERS = [f"u{i:02d}" for i in range(1, 31)]
ENTS = ["ent-a", "ent-b", "ent-c", "ent-d"]
TARGETS = ["sandbox_contract_target", "ldap_contract_target", "scim_contract_target"]


@pytest.fixture
def sandbox_contract_target(sqlite_url: str) -> SandboxTarget:
    return SandboxTarget(sqlite_url, sandbox="contract")


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Target:
    return request.getfixturevalue(request.param)


class Crash(RuntimeError):
    pass


def crash_after(batches: int):  # type: ignore[no-untyped-def]
    """A progress callback that kills the apply after `batches` batches have landed."""
    def on_batch(batch: BatchResult) -> None:
        if batch.index + 1 >= batches:
            raise Crash(f"simulated crash after batch {batch.index}")
    return on_batch


def test_read_reflects_apply(target: Target) -> None:
    grants = grant_set([(u, "ent-a") for u in USERS[:10]] + [("u01", "ent-b")])
    result = target.apply(grants, [], batch_size=4)
    assert result.added == 11
    assert target.read_grants(["ent-a", "ent-b"]) == grants
    assert target.read_grants(["ent-c"]) == frozenset()


def test_apply_twice_changes_nothing_the_second_time(target: Target) -> None:
    adds = grant_set([(u, e) for u in USERS[:12] for e in ENTS[:2]])
    target.apply(adds, [], batch_size=5)
    removes = grant_set([(u, "ent-a") for u in USERS[:3]])
    target.apply([], removes, batch_size=5)
    again = target.apply(adds - removes, removes, batch_size=5)
    assert again.changed == 0
    assert target.read_grants(ENTS) == adds - removes


def test_partial_failure_then_reapply_converges(target: Target) -> None:
    adds = grant_set([(u, e) for u in USERS for e in ENTS[:3]])  # 90 grants
    with pytest.raises(Crash):
        target.apply(adds, [], batch_size=20, on_batch=crash_after(2))
    landed = target.read_grants(ENTS)
    assert 0 < len(landed) < len(adds)
    result = target.apply(adds, [], batch_size=20)
    assert result.added == len(adds) - len(landed)
    assert target.read_grants(ENTS) == adds


def test_rollback_restores_prior_bundle_and_leaves_outsiders_alone(target: Target) -> None:
    # Before the release: u01..u05 hold ent-c (to be removed), u06 holds the legacy ent-d,
    # and u20 (not a member) holds ent-a and ent-d: none of the package's business.
    before = grant_set([(u, "ent-c") for u in USERS[:5]] + [("u06", "ent-d"), ("u20", "ent-a"),
                                                            ("u20", "ent-d")])
    target.apply(before, [])
    pkg = PackageView(key="p", name="P", state=PackageState.RELEASE_READY,
                      members=frozenset(USERS[:10]), entitlements=frozenset({"ent-a", "ent-b"}),
                      removes=frozenset({"ent-c"}), retires=frozenset({"ent-d"}))
    plan = plan_package(pkg, target.read_grants(pkg.scope))
    assert plan.prior == before
    target.apply(plan.adds, plan.removes | plan.retirements, batch_size=7)
    live = target.read_grants(pkg.scope)
    assert Grant("u20", "ent-a") in live and Grant("u20", "ent-d") in live
    assert not any(g.entitlement in {"ent-c"} for g in live)

    restore = plan_restore(plan.prior, plan.touched, live)
    target.apply(restore.adds, restore.removes, batch_size=7)
    readback = target.read_grants(pkg.scope)
    assert readback == before
    assert prove_restore(plan.prior, plan.touched, readback).equal
    # Rolling back again is a no-op.
    again = plan_restore(plan.prior, plan.touched, readback)
    assert target.apply(again.adds, again.removes).changed == 0


def test_batches_hold_whole_entitlements_so_a_group_is_written_once() -> None:
    from wavekit.adapters.targets.base import batched

    grants = grant_set([(u, "big") for u in USERS] + [(u, "s1") for u in USERS[:4]]
                       + [(u, "s2") for u in USERS[:4]] + [(u, "s3") for u in USERS[:3]])
    cut = list(batched(grants, 10))
    # "big" (30) alone, in batches of 10; s1+s2 share one (8); s3 would make 11: its own.
    assert [sorted({g.entitlement for g in b}) for b in cut] == [
        ["big"], ["big"], ["big"], ["s1", "s2"], ["s3"]]
    assert [len(b) for b in cut] == [10, 10, 10, 8, 3]
    assert sorted(g for b in cut for g in b) == sorted(grants)
    # A batch as large as the group: one batch per group, never two groups split.
    assert [len(b) for b in batched(grants, 30)] == [30, 11]
    with pytest.raises(ValueError):
        list(batched(grants, 0))


def test_sandbox_reads_grants_as_a_frame_as_it_reads_them_as_grants(store_url: str) -> None:
    # The nightly run's one read of every scope: more entitlements than one IN list holds,
    # a name holding the separator the frame read joins holders with, another sandbox's
    # grants left out, and an entitlement nobody holds.
    target = SandboxTarget(store_url)
    ents = [f"ent-{i:04d}" for i in range(620)]
    grants = grant_set([(u, e) for i, e in enumerate(ents) for u in USERS[: 1 + i % 7]]
                       + [("odd\x1fname", "ent-0003"), ("odd\x1fname", "ent-0600")])
    target.apply(grants, [], batch_size=5_000)
    SandboxTarget(store_url, sandbox="other").apply(grant_set([("u01", "ent-0001"),
                                                                ("x", "ent-0002")]), [])
    wanted = [*ents[1:], "never-granted"]
    frame = target.read_grant_frame(wanted)
    assert list(frame.columns) == ["identity", "entitlement"]
    pairs = list(zip(frame["identity"], frame["entitlement"], strict=True))
    assert len(pairs) == len(set(pairs))
    assert grant_set(pairs) == target.read_grants(wanted) == grant_set(
        g for g in grants if g.entitlement != "ent-0000")
    assert target.read_grant_frame([]).empty
