"""Containment's pure parts: who is suspended, which grants, and a release's grants at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wavekit.adapters.slack.messages import contained_message
from wavekit.domain.containment import (
    SuspensionRecord,
    containment_scope,
    grants_at,
    plan_suspension,
    suspended_at,
    who_to_suspend,
)
from wavekit.domain.grants import grant_set
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import plan_package
from wavekit.domain.states import PackageState

D0 = datetime(2026, 4, 8, 9, tzinfo=UTC)
H = timedelta(hours=1)
PKG = PackageView(key="pkg", name="Pkg", state=PackageState.WATCHING,
                  members=frozenset({"a", "b", "c"}), entitlements=frozenset({"e1", "e2"}),
                  retires=frozenset({"old"}), removes=frozenset({"gone"}))


def test_scope_defaults_to_the_identities_involved() -> None:
    assert containment_scope(None) == "identities"
    assert containment_scope({"containment": "package"}) == "package"
    assert containment_scope({"containment": "everything"}) == "identities"
    assert who_to_suspend(PKG, {"a", "x"}, "identities") == {"a"}  # x is not a member
    assert who_to_suspend(PKG, {"a"}, "package") == PKG.members
    assert who_to_suspend(PKG, set(), "identities") == PKG.members  # nobody named: everyone
    assert who_to_suspend(PKG, {"x"}, "identities") == PKG.members


def test_only_the_package_grants_held_now_are_suspended() -> None:
    live = grant_set([("a", "e1"), ("a", "e2"), ("a", "priv"), ("b", "e1"), ("x", "e1")])
    assert plan_suspension(PKG, live, {"a"}) == grant_set([("a", "e1"), ("a", "e2")])
    assert plan_suspension(PKG, live, {"a"}, grant_set([("a", "e1")])) == \
        grant_set([("a", "e2")])  # already suspended
    assert plan_suspension(PKG, live, {"c"}) == frozenset()  # holds nothing


def test_grants_at_rebuilds_the_release_from_its_bundle() -> None:
    prior = grant_set([("a", "old"), ("b", "gone"), ("x", "e1"), ("a", "e1")])
    plan = plan_package(PKG, prior)
    deployed = grant_set([("a", "old"), ("x", "e1")] + [(m, e) for m in "abc" for e in
                                                        ("e1", "e2")])
    assert grants_at(plan, D0) == deployed  # prior + adds - removes
    assert grants_at(plan, D0 + 2 * H, retired_at=D0 + H) == deployed - {("a", "old")}
    assert grants_at(plan, D0, retired_at=D0 + H) == deployed  # not yet retired then
    s = SuspensionRecord(grant_set([("a", "e1")]), D0 + H, lifted_at=D0 + 3 * H)
    assert grants_at(plan, D0 + 2 * H, suspensions=[s]) == deployed - {("a", "e1")}
    assert grants_at(plan, D0 + 3 * H, suspensions=[s]) == deployed  # given back
    assert suspended_at([s], D0) == frozenset() and suspended_at([s], D0 + H) == s.grants


def test_the_owner_is_told_who_and_what() -> None:
    m = contained_message(package_key="pkg", package_name="Pkg", wave=1,
                          reason="bulk export spike", identities=["a"],
                          grants=[("a", "e1"), ("a", "e2")], owner_slack_id="UOWNER")
    text = str(m["blocks"])
    assert m["text"] == "Contained: Pkg (wave 1): bulk export spike"
    for part in ("<@UOWNER>", "stays deployed and watched", "*Who:* a", "2 grant(s)",
                 "a: e1", "wavekit contain restore pkg"):
        assert part in text, part
