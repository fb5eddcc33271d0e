"""Policy gates as pure functions: each returns pass/fail with a reason a release manager reads.

A failed gate holds its package; the rest of the wave goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from wavekit.domain.clock import utcnow
from wavekit.domain.drills import DrillRecord, drill_standing
from wavekit.domain.grants import GrantSet
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import Plan
from wavekit.domain.states import PackageState


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class SodRuleView:
    key: str
    entitlement_a: str
    entitlement_b: str
    description: str = ""


@dataclass(frozen=True)
class GateContext:
    """What the gates look at besides the package: the plan, neighbours, rules, holdings."""

    plan: Plan
    dependency_states: Mapping[str, PackageState] = field(default_factory=dict)
    sod_rules: Collection[SodRuleView] = ()
    sod_holdings: GrantSet = frozenset()  # current grants of every SoD rule's entitlements
    enforced_guards: frozenset[str] = frozenset()
    # Rollback drills: the package's recorded drills, judged as of `as_of` (default: now).
    drills: tuple[DrillRecord, ...] = ()
    as_of: datetime | None = None
    review_cadence_days: int = 30


def owner_named(pkg: PackageView, _: GateContext) -> GateResult:
    ok = bool(pkg.owner_name.strip()) and bool(pkg.approvers)
    why = (f"owner {pkg.owner_name} can approve in Slack or the Prefect UI" if ok else
           "no named owner with a Slack id or delegate to approve the handoff")
    return GateResult("owner_named", ok, why)


def fallback_defined(pkg: PackageView, _: GateContext) -> GateResult:
    ok = bool(pkg.fallback_plan.strip())
    return GateResult("fallback_defined", ok,
                      f"fallback: {pkg.fallback_plan}" if ok else "no fallback plan defined")


def rollback_drill(pkg: PackageView, ctx: GateContext) -> GateResult:
    """A recorded passing drill within the review cadence, a signed manual drill, or (legacy,
    no drill recorded yet) the catalog's `drill: signed`; see wavekit.domain.drills."""
    if pkg.risk == "low":
        return GateResult("rollback_drill", True, "low risk: drill not required")
    standing = drill_standing(pkg.fallback_drill, ctx.drills, ctx.as_of or utcnow(),
                              ctx.review_cadence_days)
    if standing.tested:
        return GateResult("rollback_drill", True, f"{pkg.risk} risk: {standing.detail}")
    return GateResult("rollback_drill", False,
                      f"{pkg.risk} risk: {standing.detail}; a passing drill (`wavekit drill "
                      f"{pkg.key}`) or a signed manual drill is needed before release")


def dependencies_stable(pkg: PackageView, ctx: GateContext) -> GateResult:
    waiting = {d: ctx.dependency_states.get(d) for d in pkg.depends_on
               if ctx.dependency_states.get(d) != PackageState.STABLE}
    if not waiting:
        deps = ", ".join(pkg.depends_on)
        return GateResult("dependencies_stable", True, f"stable: {deps}" if deps else
                          "no dependencies")
    detail = ", ".join(f"{d} is {s.label if s else 'unknown'}" for d, s in sorted(waiting.items()))
    return GateResult("dependencies_stable", False, f"waiting for dependencies: {detail}")


def separation_of_duties(pkg: PackageView, ctx: GateContext) -> GateResult:
    after = (ctx.sod_holdings | ctx.plan.adds) - ctx.plan.removes - ctx.plan.retirements
    added = ctx.plan.adds
    violations: list[str] = []
    for rule in ctx.sod_rules:
        a = {g.identity for g in after if g.entitlement == rule.entitlement_a}
        b = {g.identity for g in after if g.entitlement == rule.entitlement_b}
        # Only conflicts this release creates block it; older ones are drift for maintenance.
        caused = sorted(i for i in a & b if any(
            (i, e) in added for e in (rule.entitlement_a, rule.entitlement_b)))
        if caused:
            violations.append(f"{rule.key} ({rule.entitlement_a} + {rule.entitlement_b}): "
                              + ", ".join(caused))
    if violations:
        return GateResult("separation_of_duties", False,
                          "would violate separation of duties: " + "; ".join(violations))
    return GateResult("separation_of_duties", True, "no separation-of-duties conflict")


def operational_guards(pkg: PackageView, ctx: GateContext) -> GateResult:
    missing = sorted(set(pkg.guards) - ctx.enforced_guards)
    if missing:
        return GateResult("operational_guards", False,
                          "guards not enforced on the target: " + ", ".join(missing))
    return GateResult("operational_guards", True,
                      "guards enforced: " + (", ".join(pkg.guards) or "none required"))


def risk_rules(pkg: PackageView, _: GateContext) -> GateResult:
    if pkg.rollback_only:
        return GateResult("risk_rules", False, "rollback-only package: never deploys")
    if pkg.risk == "high":
        problems = []
        if pkg.watch_days < 14:
            problems.append(f"watch of {pkg.watch_days} days (high risk needs 14 or more)")
        if not pkg.delegates:
            problems.append("no delegate named (high risk needs a second approver)")
        if problems:
            return GateResult("risk_rules", False, "high risk: " + "; ".join(problems))
    return GateResult("risk_rules", True, f"{pkg.risk} risk rules met")


GATES: tuple[Callable[[PackageView, GateContext], GateResult], ...] = (
    owner_named, fallback_defined, rollback_drill, dependencies_stable, separation_of_duties,
    operational_guards, risk_rules,
)


def check_gates(pkg: PackageView, ctx: GateContext) -> list[GateResult]:
    """Every gate's result for `pkg`, in a fixed order."""
    return [gate(pkg, ctx) for gate in GATES]


def failed(results: list[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]
