"""The portal's KPIs (Stage 7 - Deploy & Maintain), computed from the store as of a time.

Each KPI is defined once, in DEFINITIONS: `wavekit status --explain` prints them and the
dashboard shows them beside the figures, so a reader always sees what a number means.
Deploy confidence is the model in CONFIDENCE_MODEL: weighted facts, never the presence of text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
from sqlmodel import Session, col, func, or_, select

from wavekit.adapters.catalog import IDENTITY_COLUMNS
from wavekit.adapters.store.drills import drill_records
from wavekit.adapters.store.lifecycle import states_as_of
from wavekit.adapters.store.models import (
    Approval,
    HealthCheckResult,
    Identity,
    MaintenanceTask,
    PackageDependency,
    PackageEntitlement,
    PackageMember,
    Release,
    RolePackage,
)
from wavekit.domain import rules
from wavekit.domain.clock import as_utc, utcnow
from wavekit.domain.drills import DrillStanding, drill_standing
from wavekit.domain.states import RELEASABLE, PackageState

S = PackageState
ACTIONS = ("Release", "Monitor", "Tune", "Rollback")
_ACTION = {
    S.RELEASE_READY: "Release", S.AWAITING_HANDOFF: "Release", S.DEPLOYING: "Release",
    S.SCHEDULED: "Monitor", S.MONITORING: "Monitor", S.WATCHING: "Monitor", S.STABLE: "Monitor",
    S.NEEDS_TUNING: "Tune", S.HELD: "Tune", S.CONTAINED: "Tune",
    S.ROLLBACK_READY: "Rollback", S.ROLLING_BACK: "Rollback", S.ROLLED_BACK: "Rollback",
}
IN_FLIGHT = frozenset({S.AWAITING_HANDOFF, S.DEPLOYING, S.WATCHING, S.CONTAINED,
                       S.ROLLING_BACK})
DEFAULT_PERIOD_DAYS = 90  # the window of the timing and history KPIs

# Deploy confidence: (factor, weight, what earns the points). Inputs are facts from the store.
CONFIDENCE_MODEL: tuple[tuple[str, int, str], ...] = (
    ("Rollback drill recorded", 20,
     "the latest rollback drill recorded by wavekit passed within the review cadence (or the "
     "catalog marks no drill required); a drill \"signed\" only in catalog text earns nothing"),
    ("Last watch healthy", 20,
     "the latest deployed release reached Stable (full) or is being watched with no failed "
     "check (half); never released earns half; a failed check or rollback earns nothing"),
    ("Clean release history", 20,
     f"no failed health check and no rollback in the last {DEFAULT_PERIOD_DAYS} days up to "
     "as_of"),
    ("Owner reachable", 15, "the owner or a delegate has a Slack id to receive the handoff"),
    ("Dependencies stable", 15, "every package this one depends on is Stable"),
    ("Risk level", 10, "low risk earns all, medium half, high none"),
)
FACTOR_WEIGHTS = {name: weight for name, weight, _ in CONFIDENCE_MODEL}
RISK_POINTS = {"low": 1.0, "medium": 0.5, "high": 0.0}  # share of the risk factor's weight

# What each figure means: one place, shown by `wavekit status --explain` and the dashboard.
DEFINITIONS: dict[str, str] = {
    "Wave ready": "In the lowest wave that still holds unreleased packages: how many are "
                  "release ready as of as_of, of how many queued (queued = releasable state, "
                  "no live release).",
    "Roles monitored": "Packages in production under telemetry: watching, stable or contained, "
                       "or needing tuning with a deployed release not rolled back. States "
                       "(here and in every figure) are those as of as_of, rebuilt from the "
                       "audited state changes.",
    "Maintenance tasks": "Backlog items opened by as_of and not closed by then.",
    "Coverage health": "Share of live packages with a population rule whose members are at "
                       "least 90% active identities matching the rule. Which packages are "
                       "live is as of as_of, but members and identities are not versioned: "
                       "for a past as_of they are today's, not that date's.",
    "Active waves": "Waves with a package handing off, deploying, watching, contained or "
                    "rolling back as of as_of.",
    "Median deploy time": "Median of owner handoff requested -> package deployed, over "
                          f"releases deployed in the last {DEFAULT_PERIOD_DAYS} days up to "
                          "as_of (the wait for owners counts); a release with no handoff "
                          "counts from staging.",
    "Median time to stable": "The same start -> the watch declaring the package Stable, over "
                             f"releases Stable in the last {DEFAULT_PERIOD_DAYS} days.",
    "Fallback tested": "Packages with a fallback plan whose latest recorded rollback drill "
                       "passed within the review cadence, of packages with a fallback plan.",
    "Deploy confidence": "0-100, the sum of weighted facts: "
                         + "; ".join(f"{n} ({w}): {why}" for n, w, why in CONFIDENCE_MODEL)
                         + ". High from 85, Medium from 60.",
}


def action_for(state: PackageState | str) -> str:
    """The portal's action for a state: Release, Monitor, Tune or Rollback (the one rule)."""
    return _ACTION[PackageState(state)]


@dataclass(frozen=True)
class Factor:
    """One readiness factor: its weight, the points earned and why."""

    name: str
    weight: int
    points: int
    detail: str

    @property
    def met(self) -> bool:
        return self.points == self.weight


@dataclass(frozen=True)
class DeployConfidence:
    score: int  # 0..100, the sum of the factors' points
    factors: tuple[Factor, ...]

    @property
    def level(self) -> str:
        """Operations readiness as the portal words it."""
        return "High" if self.score >= 85 else "Medium" if self.score >= 60 else "Low"


@dataclass(frozen=True)
class WaveReady:
    wave: int
    packages: tuple[str, ...]  # unreleased packages in the wave
    release_ready: int  # of which in state release_ready

    @property
    def count(self) -> int:
        return len(self.packages)


@dataclass(frozen=True)
class Coverage:
    """How one live package's members compare with its population rule."""

    key: str
    members: int
    matching: int  # members who are active identities matching the rule
    population: int  # active identities matching the rule
    aligned: bool

    @property
    def member_share(self) -> float:
        return self.matching / self.members if self.members else 0.0

    @property
    def population_share(self) -> float:
        return self.matching / self.population if self.population else 0.0


@dataclass(frozen=True)
class PackageRow:
    """One row of the dashboard's package table."""

    key: str
    name: str
    wave: int | None
    risk: str
    state: str
    state_label: str
    action: str
    members: int
    entitlements: int
    watch_days: int
    telemetry_focus: str
    maintenance_note: str
    confidence: DeployConfidence


@dataclass(frozen=True)
class PortalKpis:
    as_of: datetime
    wave_ready: WaveReady | None
    roles_monitored: int
    maintenance_tasks_open: int
    coverage_health: float | None
    coverage: tuple[Coverage, ...]
    deploy_confidence: dict[str, DeployConfidence]
    median_deploy_time: timedelta | None
    median_time_to_stable: timedelta | None
    fallback_tested: tuple[int, int]
    review_cadence_days: int
    action_counts: dict[str, int]
    active_waves: tuple[int, ...]
    packages: tuple[PackageRow, ...]
    # Rollback drills: every package's fallback standing; legacy catalog signatures.
    drills: dict[str, DrillStanding] = field(default_factory=dict)
    fallback_signed_catalog: int = 0
    period_days: int = DEFAULT_PERIOD_DAYS


# ------------------------------------------------------------------ pure parts


@dataclass(frozen=True)
class History:
    """A package's release facts in the period up to as_of (the confidence model's inputs)."""

    failed_checks: int = 0
    rollbacks: int = 0
    last_release: str = "never"  # never | watching | stable | failed | rolled_back


def deploy_confidence(pkg: RolePackage, dependency_states: dict[str, PackageState],
                      history: History = History(), drill: DrillStanding | None = None
                      ) -> DeployConfidence:
    """Score a package's readiness by CONFIDENCE_MODEL; `dependency_states` maps each
    depends_on key to its state, `drill` is its fallback standing (default: the catalog's)."""
    w = FACTOR_WEIGHTS

    def factor(name: str, share: float, detail: str) -> Factor:
        return Factor(name, w[name], round(w[name] * share), detail)

    drilled = drill or drill_standing(pkg.fallback_drill, (), utcnow(), 0)
    # A recorded drill is the fact; catalog text that says "signed" earns nothing.
    drill_share = 1.0 if drilled.recorded or drilled.status == "not_required" else 0.0
    reachable = bool(pkg.owner_slack_id) or any(d.get("slack_id") for d in pkg.delegates or ())
    unstable = sorted(k for k, st in dependency_states.items() if st != S.STABLE)
    last = history.last_release
    watch_share = {"stable": 1.0, "watching": 0.5, "never": 0.5}.get(last, 0.0)
    clean = history.failed_checks == 0 and history.rollbacks == 0
    factors = (
        factor("Rollback drill recorded", drill_share, drilled.label),
        factor("Last watch healthy", watch_share,
               {"never": "never released", "watching": "watching, no failed check",
                "stable": "last release stable", "failed": "last release failed a check",
                "rolled_back": "last release rolled back"}[last]),
        factor("Clean release history", 1.0 if clean else 0.0,
               f"{history.failed_checks} failed check(s), {history.rollbacks} rollback(s)"),
        factor("Owner reachable", 1.0 if reachable else 0.0,
               "owner or a delegate has a Slack id" if reachable else "no Slack id"),
        factor("Dependencies stable", 0.0 if unstable else 1.0,
               "not stable: " + ", ".join(unstable) if unstable
               else ("all stable" if dependency_states else "no dependencies")),
        factor("Risk level", RISK_POINTS.get(pkg.risk, 0.0), f"{pkg.risk} risk"),
    )
    return DeployConfidence(score=sum(f.points for f in factors), factors=factors)


def coverage_of(key: str, members: set[str], rule: str, identities: pd.DataFrame,
                min_member_share: float = 0.9, min_population_share: float = 0.0) -> Coverage:
    """Compare members with the active identities matching `rule` (see wavekit.domain.rules)."""
    active = identities[identities["active"].astype(bool)]
    population = (set(active.loc[rules.matching(active, rule, IDENTITY_COLUMNS), "id"])
                  if len(active) else set())
    matching = len(members & population)
    member_share = matching / len(members) if members else 0.0
    population_share = matching / len(population) if population else 0.0
    aligned = (bool(members) and member_share >= min_member_share
               and population_share >= min_population_share)
    return Coverage(key, len(members), matching, len(population), aligned)


def _history(deployed: list[Release], failed_checks: int, failed_releases: set[int],
             since: datetime, as_of: datetime) -> History:
    """A package's release facts as of `as_of`, from its releases deployed by then."""
    def deployed_at(r: Release) -> datetime:
        assert r.deployed_at is not None, "only deployed releases are passed in"
        return as_utc(r.deployed_at)

    mine = sorted(deployed, key=deployed_at)
    rollbacks = sum(1 for r in mine if r.rolled_back_at is not None
                    and since < as_utc(r.rolled_back_at) <= as_of)
    if not mine:
        return History(failed_checks, rollbacks, "never")
    last = mine[-1]
    if last.rolled_back_at is not None and as_utc(last.rolled_back_at) <= as_of:
        verdict = "rolled_back"
    elif last.id in failed_releases:
        verdict = "failed"
    elif last.stable_at is not None and as_utc(last.stable_at) <= as_of:
        verdict = "stable"
    else:
        verdict = "watching"
    return History(failed_checks, rollbacks, verdict)


def _median(values: list[timedelta]) -> timedelta | None:
    return pd.Series(values).median().to_pytimedelta() if values else None


# ------------------------------------------------------------------ reading the store


def compute_kpis(session: Session, as_of: datetime, *, review_cadence_days: int = 30,
                 min_member_share: float = 0.9, min_population_share: float = 0.0,
                 period_days: int = DEFAULT_PERIOD_DAYS) -> PortalKpis:
    """Every KPI on the portal page, from the store, as of `as_of` (see DEFINITIONS)."""
    as_of = as_utc(as_of)
    since = as_of - timedelta(days=period_days)
    # Every state-based figure uses the states as of `as_of`, rebuilt from the audit log.
    states = states_as_of(session, as_of)
    pkgs = sorted((p for p in session.exec(select(RolePackage)) if p.key in states),
                  key=lambda p: (p.wave is None, p.wave or 0, p.key))
    releases = [r for r in session.exec(select(Release)) if as_utc(r.started_at) <= as_of
                and (r.deployed_at is None or as_utc(r.deployed_at) <= as_of)]
    live_release = {r.package_key for r in releases
                    if r.deployed_at is not None and r.rolled_back_at is None}
    live = {k for k, st in states.items()
            if st in (S.WATCHING, S.STABLE, S.CONTAINED)
            or (st == S.NEEDS_TUNING and k in live_release)}

    # wave ready
    unreleased = [p for p in pkgs
                  if p.wave is not None and states[p.key] in RELEASABLE and p.key not in live]
    wave_ready = None
    if unreleased:
        first = min(p.wave for p in unreleased if p.wave is not None)
        in_wave = [p for p in unreleased if p.wave == first]
        wave_ready = WaveReady(first, tuple(p.key for p in in_wave),
                               sum(states[p.key] == S.RELEASE_READY for p in in_wave))

    # open maintenance tasks as of as_of
    open_tasks = session.exec(
        select(func.count()).select_from(MaintenanceTask).where(
            MaintenanceTask.opened_at <= as_of,
            or_(col(MaintenanceTask.closed_at).is_(None),
                col(MaintenanceTask.closed_at) > as_of))
    ).one()

    # coverage health
    members = pd.DataFrame(session.exec(select(PackageMember.package_key,
                                               PackageMember.identity_id)).all(),
                           columns=["package", "identity"])
    by_pkg = members.groupby("package")["identity"].agg(set).to_dict()
    identities = pd.read_sql_query(select(Identity), session.connection())
    coverage = tuple(
        coverage_of(p.key, by_pkg.get(p.key, set()), p.population_rule, identities,
                    min_member_share, min_population_share)
        for p in pkgs if p.key in live and p.population_rule and not identities.empty)
    coverage_health = (sum(c.aligned for c in coverage) / len(coverage)) if coverage else None

    # deploy confidence
    deps: dict[str, list[str]] = {}
    for k, d in session.exec(select(PackageDependency.package_key, PackageDependency.depends_on)):
        deps.setdefault(k, []).append(d)
    # One read of the failures due by as_of: per package in the period, and which releases.
    failures = session.exec(select(HealthCheckResult.package_key, HealthCheckResult.release_id,
                                   HealthCheckResult.due_at)
                            .where(HealthCheckResult.verdict == "failed",
                                   HealthCheckResult.due_at <= as_of)).all()
    failed: dict[str, int] = {}
    for key, _, due in failures:
        if as_utc(due) > since:
            failed[key] = failed.get(key, 0) + 1
    failed_by_release = {rid for _, rid, _ in failures}
    deployed_by_pkg: dict[str, list[Release]] = {}
    for r in releases:
        if r.deployed_at is not None:
            deployed_by_pkg.setdefault(r.package_key, []).append(r)
    history = {p.key: _history(deployed_by_pkg.get(p.key, []), failed.get(p.key, 0),
                               failed_by_release, since, as_of) for p in pkgs}
    drills = drill_records(session)
    standing = {p.key: drill_standing(p.fallback_drill, drills.get(p.key, ()), as_of,
                                      review_cadence_days) for p in pkgs}
    confidence = {p.key: deploy_confidence(p, {d: states[d] for d in deps.get(p.key, [])
                                               if d in states},
                                           history[p.key], standing[p.key])
                  for p in pkgs}

    # timings: from the owner handoff request (or staging) over the period
    requested = dict(session.exec(select(Approval.release_id, func.min(Approval.requested_at))
                                  .group_by(col(Approval.release_id))).all())
    start = {r.id: as_utc(requested.get(r.id or 0) or r.started_at) for r in releases}
    deploy_times = [as_utc(r.deployed_at) - start[r.id] for r in releases
                    if r.deployed_at is not None and as_utc(r.deployed_at) > since]
    stable_times = [as_utc(r.stable_at) - start[r.id] for r in releases
                    if r.stable_at is not None and since < as_utc(r.stable_at) <= as_of]

    with_plan = [p for p in pkgs if p.fallback_plan.strip()]
    actions = dict.fromkeys(ACTIONS, 0)
    for st in states.values():
        actions[action_for(st)] += 1
    active = tuple(sorted({p.wave for p in pkgs if p.wave is not None
                           and states[p.key] in IN_FLIGHT}))

    ents = dict(session.exec(select(PackageEntitlement.package_key, func.count())
                             .where(PackageEntitlement.usage == "grant")
                             .group_by(PackageEntitlement.package_key)).all())
    rows = tuple(PackageRow(
        key=p.key, name=p.name, wave=p.wave, risk=p.risk, state=states[p.key].value,
        state_label=states[p.key].label, action=action_for(states[p.key]),
        members=len(by_pkg.get(p.key, ())), entitlements=ents.get(p.key, 0),
        watch_days=p.watch_days, telemetry_focus=p.telemetry_focus,
        maintenance_note=p.maintenance_note, confidence=confidence[p.key]) for p in pkgs)

    return PortalKpis(
        as_of=as_of, wave_ready=wave_ready, roles_monitored=len(live),
        maintenance_tasks_open=open_tasks, coverage_health=coverage_health, coverage=coverage,
        deploy_confidence=confidence, median_deploy_time=_median(deploy_times),
        median_time_to_stable=_median(stable_times),
        fallback_tested=(sum(standing[p.key].recorded for p in with_plan), len(with_plan)),
        review_cadence_days=review_cadence_days, action_counts=actions, active_waves=active,
        packages=rows, drills=standing,
        fallback_signed_catalog=sum(standing[p.key].status == "signed_catalog"
                                    for p in with_plan),
        period_days=period_days,
    )
