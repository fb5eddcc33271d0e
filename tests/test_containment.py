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


def test_a_containment_is_posted_to_the_channel_and_the_owner(loaded_store: str,
                                                             slack_double) -> None:  # type: ignore[no-untyped-def]
    """The flow's contain task tells people through notices.notify_contained: the release
    channel gets who and what, and the owner a direct message."""
    from tests.support.slack_double import BOT_TOKEN, CHANNEL
    from wavekit.adapters.settings import load_settings
    from wavekit.adapters.slack.notifier import SlackNotifier, make_web_client
    from wavekit.adapters.targets.sandbox import SandboxTarget
    from wavekit.domain.grants import Grant
    from wavekit.workflow.containment import ContainOutcome
    from wavekit.workflow.notices import notify_contained
    from wavekit.workflow.runtime import Runtime

    hr = "hr-case-intake-specialist"
    rt = Runtime(load_settings(database_url=loaded_store), loaded_store,
                 SandboxTarget(loaded_store), notifier=SlackNotifier(
                     make_web_client(BOT_TOKEN, base_url=slack_double.base_url), CHANNEL))
    outcome = ContainOutcome(hr, 1, "bulk export spike", "identities",
                             identities=frozenset({"u042"}),
                             suspended=frozenset({Grant("u042", "hr-case-notes")}),
                             suspension_id=7, applied=1)
    notify_contained(rt, outcome, "http://ui/runs/flow-run/x")
    posts = slack_double.calls_to("chat.postMessage")
    (opened,) = slack_double.calls_to("conversations.open")
    assert opened.params["users"] == "UHROWNER01"  # the owner, directly
    channel, dm = (p.params["channel"] for p in posts)  # the channel, then the owner's DM
    assert channel == CHANNEL and dm != CHANNEL
    for post in posts:
        text = post.text()
        for part in ("bulk export spike", "u042", "hr-case-notes",
                     f"wavekit contain restore {hr}"):
            assert part in text, (part, text)
