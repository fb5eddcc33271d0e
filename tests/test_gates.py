"""Every policy gate's pass and fail, on hand-built packages (wavekit.domain.gates)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from wavekit.domain.drills import DrillRecord
from wavekit.domain.gates import (
    GATES,
    GateContext,
    SodRuleView,
    check_gates,
    dependencies_stable,
    failed,
    fallback_defined,
    operational_guards,
    owner_named,
    risk_rules,
    rollback_drill,
    separation_of_duties,
)
from wavekit.domain.grants import grant_set
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import Plan, plan_package
from wavekit.domain.states import PackageState

S = PackageState
GOOD = PackageView(
    key="pkg", name="Pkg", state=S.RELEASE_READY, risk="low", owner_name="Owner",
    owner_slack_id="UOWNER", members=frozenset({"a", "b"}), entitlements=frozenset({"post"}),
    fallback_plan="revert", fallback_drill="signed", watch_days=14,
)
EMPTY_PLAN = Plan("pkg", frozenset({"post"}), frozenset(), frozenset(), frozenset(),
                  frozenset())


def ctx(**kw) -> GateContext:  # type: ignore[no-untyped-def]
    return GateContext(plan=kw.pop("plan", EMPTY_PLAN), **kw)


def test_a_good_package_passes_every_gate() -> None:
    results = check_gates(GOOD, ctx())
    assert [r.name for r in results] == [g.__name__ for g in GATES]
    assert failed(results) == []
    assert len(GATES) == 7


@pytest.mark.parametrize(("pkg", "passed", "reason"), [
    (GOOD, True, "owner Owner can approve in Slack or the Prefect UI"),
    (replace(GOOD, owner_slack_id=None, delegates=({"name": "D", "slack_id": "UD"},)), True,
     "owner Owner can approve in Slack or the Prefect UI"),
    (replace(GOOD, owner_name="  "), False,
     "no named owner with a Slack id or delegate to approve the handoff"),
    (replace(GOOD, owner_slack_id=None), False,
     "no named owner with a Slack id or delegate to approve the handoff"),
    (replace(GOOD, owner_slack_id=None, delegates=({"name": "D"},)), False,
     "no named owner with a Slack id or delegate to approve the handoff"),
])
def test_owner_named(pkg: PackageView, passed: bool, reason: str) -> None:
    r = owner_named(pkg, ctx())
    assert (r.name, r.passed, r.reason) == ("owner_named", passed, reason)


@pytest.mark.parametrize(("plan", "passed", "reason"), [
    ("revert", True, "fallback: revert"),
    ("", False, "no fallback plan defined"),
    ("   ", False, "no fallback plan defined"),
])
def test_fallback_defined(plan: str, passed: bool, reason: str) -> None:
    r = fallback_defined(replace(GOOD, fallback_plan=plan), ctx())
    assert (r.name, r.passed, r.reason) == ("fallback_defined", passed, reason)


AT = datetime(2026, 4, 20, 12, tzinfo=UTC)
NEEDED = "a passing drill (`wavekit drill pkg`) or a signed manual drill is needed before release"


def _drill(days_ago: int, kind: str = "automated", passed: bool = True, **kw: object
           ) -> DrillRecord:
    return DrillRecord("pkg", kind, passed, AT - timedelta(days=days_ago), id=1,
                       target="sandbox:drill-pkg", duration_seconds=12.0,
                       objective_minutes=30.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("risk", "drill", "drills", "passed", "reason"), [
    ("low", "pending", (), True, "low risk: drill not required"),
    # Catalog text is no proof: "signed" with no recorded drill and no signer does not pass.
    ("medium", "signed", (), False,
     "medium risk: the catalog says the rollback drill was signed, but no drill or signer is "
     f"recorded; {NEEDED}"),
    ("high", "signed", (), False,
     "high risk: the catalog says the rollback drill was signed, but no drill or signer is "
     f"recorded; {NEEDED}"),
    ("medium", "pending", (), False, f"medium risk: no rollback drill recorded; {NEEDED}"),
    ("high", "not_required", (), False,
     f"high risk: the catalog marks the rollback drill not required; {NEEDED}"),
    # What passes: a recorded successful drill within the cadence, or a recorded signed one.
    ("high", "pending", (_drill(3),), True,
     "high risk: rollback drill passed on 2026-04-17 on sandbox:drill-pkg: restored in 12 s "
     "(objective 30 min)"),
    ("medium", "signed", (_drill(2, "manual", signed_by="Owen Scott"),), True,
     "medium risk: rollback drill signed by Owen Scott on 2026-04-18"),
    ("high", "signed", (_drill(31),), False,
     "high risk: the last rollback drill passed on 2026-03-20, 31 days ago (cadence 30 days); "
     + NEEDED),
    ("high", "pending", (_drill(1, passed=False, failure="slow"),), False,
     f"high risk: the last rollback drill (2026-04-19) failed: slow; {NEEDED}"),
])
def test_rollback_drill(risk: str, drill: str, drills: tuple[DrillRecord, ...], passed: bool,
                        reason: str) -> None:
    r = rollback_drill(replace(GOOD, risk=risk, fallback_drill=drill),
                       ctx(drills=drills, as_of=AT))
    assert (r.name, r.passed, r.reason) == ("rollback_drill", passed, reason)


@pytest.mark.parametrize(("deps", "states", "passed", "reason"), [
    ((), {}, True, "no dependencies"),
    (("x", "y"), {"x": S.STABLE, "y": S.STABLE}, True, "stable: x, y"),
    (("x",), {"x": S.WATCHING}, False, "waiting for dependencies: x is Watching"),
    (("x", "y"), {"x": S.STABLE}, False, "waiting for dependencies: y is unknown"),
    (("y", "x"), {"x": S.CONTAINED, "y": S.NEEDS_TUNING}, False,
     "waiting for dependencies: x is Contained, y is Needs tuning"),
])
def test_dependencies_stable(deps: tuple[str, ...], states: dict, passed: bool,
                             reason: str) -> None:
    r = dependencies_stable(replace(GOOD, depends_on=deps), ctx(dependency_states=states))
    assert (r.name, r.passed, r.reason) == ("dependencies_stable", passed, reason)


SOD = SodRuleView("post-and-pay", "post", "pay")


@pytest.mark.parametrize(("holdings", "passed", "reason"), [
    ((), True, "no separation-of-duties conflict"),
    ((("c", "pay"),), True, "no separation-of-duties conflict"),  # c is not a member
    ((("a", "pay"),), False,
     "would violate separation of duties: post-and-pay (post + pay): a"),
    ((("b", "pay"), ("a", "pay")), False,
     "would violate separation of duties: post-and-pay (post + pay): a, b"),
    # An older conflict the release does not create is maintenance's drift, not a block.
    ((("z", "post"), ("z", "pay")), True, "no separation-of-duties conflict"),
])
def test_separation_of_duties(holdings: tuple, passed: bool, reason: str) -> None:
    held = grant_set(holdings)
    plan = plan_package(GOOD, held)
    r = separation_of_duties(GOOD, ctx(plan=plan, sod_rules=[SOD], sod_holdings=held))
    assert (r.name, r.passed, r.reason) == ("separation_of_duties", passed, reason)


def test_separation_of_duties_counts_what_the_release_removes() -> None:
    # The package removes "pay" from its members at launch: no conflict remains.
    pkg = replace(GOOD, removes=frozenset({"pay"}))
    held = grant_set([("a", "pay")])
    plan = plan_package(pkg, held)
    r = separation_of_duties(pkg, ctx(plan=plan, sod_rules=[SOD], sod_holdings=held))
    assert r.passed


@pytest.mark.parametrize(("guards", "enforced", "passed", "reason"), [
    ((), frozenset(), True, "guards enforced: none required"),
    (("mfa",), frozenset({"mfa", "x"}), True, "guards enforced: mfa"),
    (("mfa", "session_timeout"), frozenset({"mfa"}), False,
     "guards not enforced on the target: session_timeout"),
    (("b", "a"), frozenset(), False, "guards not enforced on the target: a, b"),
])
def test_operational_guards(guards: tuple[str, ...], enforced: frozenset[str], passed: bool,
                            reason: str) -> None:
    r = operational_guards(replace(GOOD, guards=guards), ctx(enforced_guards=enforced))
    assert (r.name, r.passed, r.reason) == ("operational_guards", passed, reason)


@pytest.mark.parametrize(("changes", "passed", "reason"), [
    ({}, True, "low risk rules met"),
    ({"risk": "medium", "watch_days": 1}, True, "medium risk rules met"),
    ({"risk": "high", "delegates": ({"name": "D", "slack_id": "UD"},)}, True,
     "high risk rules met"),
    ({"rollback_only": True}, False, "rollback-only package: never deploys"),
    ({"risk": "high", "watch_days": 13, "delegates": ({"name": "D"},)}, False,
     "high risk: watch of 13 days (high risk needs 14 or more)"),
    ({"risk": "high"}, False, "high risk: no delegate named (high risk needs a second "
                              "approver)"),
    ({"risk": "high", "watch_days": 7}, False,
     "high risk: watch of 7 days (high risk needs 14 or more); no delegate named (high risk "
     "needs a second approver)"),
])
def test_risk_rules(changes: dict, passed: bool, reason: str) -> None:
    r = risk_rules(replace(GOOD, **changes), ctx())
    assert (r.name, r.passed, r.reason) == ("risk_rules", passed, reason)


def test_check_gates_reports_every_failure_in_order() -> None:
    bad = replace(GOOD, owner_name="", fallback_plan="", risk="high", fallback_drill="pending",
                  depends_on=("x",), guards=("mfa",), watch_days=3)
    assert [r.name for r in failed(check_gates(bad, ctx()))] == [
        "owner_named", "fallback_defined", "rollback_drill", "dependencies_stable",
        "operational_guards", "risk_rules"]
