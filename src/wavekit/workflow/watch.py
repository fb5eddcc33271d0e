"""The watch: health checks owed over a days-long window, one stored tick at a time.

No process stays alive for the window. Each tick measures every check whose due time has
passed and has no stored result, stores the results, and judges the whole history. The next
tick is due at `Release.next_check_at`; a scheduled deployment runs ticks, tests hand in the
time.

Each measurement judges its own window (`wavekit.domain.health.measurement_window`) as of
its due time. The grants it reads are the target's when the due time is current (at most
CATCH_UP_AFTER old); a measurement owed further in the past (catching up after downtime)
reads the grants as they were then, rebuilt from the store: the release's prior bundle plus
its adds minus its removes (the deploy), minus the retirements once retired and the grants
suspended by containment at the time, with the out-of-band changes the assignments feed
reported since the deploy replayed on top (`wavekit.domain.metrics.replay_out_of_band`).

An exception while measuring (the telemetry store or the target unreadable) stores an
`error` verdict for the checks of that window; errors have their own consecutive limit.

A contained package stays watched: its checks keep being measured, a failure past a limit
still rolls it back, a new anomaly widens the containment, and it is never promoted to
Stable while contained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from sqlmodel import col, select

from wavekit.adapters.store import audit, suspensions
from wavekit.adapters.store.bundles import load_bundle, restrict
from wavekit.adapters.store.engine import get_one, session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import HealthCheckResult, Release, RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.clock import as_utc
from wavekit.domain.cohorts import restrict_plan, soak_action
from wavekit.domain.containment import SuspensionRecord, grants_at, suspended_at
from wavekit.domain.grants import GrantSet
from wavekit.domain.health import (
    Assessment,
    HealthCheck,
    Verdict,
    assess_health,
    checks_for,
    due_times,
    is_due,
    measurement_window,
    next_due,
    watch_action,
)
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import Plan
from wavekit.domain.states import WATCHED, PackageState
from wavekit.workflow import cohorts
from wavekit.workflow.rollout import retirement_due_for
from wavekit.workflow.runtime import Runtime

S = PackageState
CATCH_UP_AFTER = timedelta(hours=1)  # the watch runs hourly: older due times are catch-up


class MetricsSource(Protocol):
    def measure(self, package: PackageView, *, deployed_at: datetime, since: datetime,
                as_of: datetime, target_grants: GrantSet, suspended: GrantSet = frozenset(),
                from_history: bool = False) -> Mapping[str, float | None]:
        """Metric values for `package` over [since, as_of) (None: not enough data)."""
        ...

    def implicated(self, package: PackageView, metric: str, *, deployed_at: datetime,
                   since: datetime, as_of: datetime, threshold: float) -> frozenset[str]:
        """The members behind an anomaly of `metric` in [since, as_of) (may be empty)."""
        ...


@dataclass
class TickOutcome:
    release_id: int
    package_key: str
    # continue | stable | widen | rollback | contain | inconclusive | error | skipped
    action: str
    reason: str
    measured: int
    next_check_at: datetime | None
    identities: frozenset[str] = frozenset()  # contain: the members the anomaly names
    checks: tuple[str, ...] = ()  # contain: the anomaly checks that failed
    as_of: datetime | None = None


def releases_due(rt: Runtime, as_of: datetime) -> list[int]:
    """Open, deployed releases of watched packages whose next check is due at `as_of`."""
    with session_scope(rt.database_url) as s:
        rows = s.exec(select(Release.id, Release.next_check_at)
                      .join(RolePackage, col(RolePackage.key) == Release.package_key)
                      .where(col(RolePackage.state).in_(WATCHED),
                             Release.closed == False,  # noqa: E712
                             col(Release.deployed_at).is_not(None))
                      .order_by(col(Release.id)))
        return [rid for rid, due in rows
                if rid is not None and (due is None or as_utc(due) <= as_of)]


@dataclass(frozen=True)
class _History:
    """What the store knows about a release's grants over time."""

    plan: Plan | None
    retired_at: datetime | None
    suspensions: tuple[SuspensionRecord, ...] = field(default=())

    def grants_at(self, at: datetime) -> GrantSet | None:
        if self.plan is None:
            return None
        return grants_at(self.plan, at, retired_at=self.retired_at,
                         suspensions=self.suspensions)

    def suspended_at(self, at: datetime) -> GrantSet:
        return suspended_at(self.suspensions, at)


def _grants(rt: Runtime, view: PackageView, history: _History, due: datetime, as_of: datetime
            ) -> tuple[GrantSet, bool]:
    """(grants, from_history) for a measurement owed at `due`; raises if they cannot be had."""
    if as_of - due <= CATCH_UP_AFTER:
        return restrict(rt.target.read_grants(view.scope), view.scope), False
    rebuilt = history.grants_at(due)
    if rebuilt is None:
        raise LookupError("no recorded bundle to rebuild the grants from")
    return rebuilt, True


def _measure(rt: Runtime, metrics: MetricsSource, view: PackageView, history: _History,
             deployed_at: datetime, todo: list[HealthCheck], due: datetime, as_of: datetime
             ) -> dict[str, tuple[float | None, str | None, datetime]]:
    """check name -> (value, error, window start) for the checks owed at `due`."""
    out: dict[str, tuple[float | None, str | None, datetime]] = {}
    try:
        grants, from_history = _grants(rt, view, history, due, as_of)
    except Exception as exc:  # the target or the store could not be read
        why = f"{type(exc).__name__}: {exc}"
        return {c.name: (None, why, measurement_window(c, deployed_at, due)[0]) for c in todo}
    by_window: dict[datetime, list[HealthCheck]] = {}
    for check in todo:
        by_window.setdefault(measurement_window(check, deployed_at, due)[0], []).append(check)
    for since, group in sorted(by_window.items()):
        try:
            values = metrics.measure(view, deployed_at=deployed_at, since=since, as_of=due,
                                     target_grants=grants,
                                     suspended=history.suspended_at(due),
                                     from_history=from_history)
        except Exception as exc:  # a broken feed or metric: an error, not a verdict
            why = f"{type(exc).__name__}: {exc}"
            out.update({c.name: (None, why, since) for c in group})
            continue
        out.update({c.name: (values.get(c.metric), None, since) for c in group})
    return out


def _implicated(metrics: MetricsSource, view: PackageView, deployed_at: datetime,
                check: HealthCheck, since: datetime, due: datetime) -> frozenset[str]:
    find = getattr(metrics, "implicated", None)
    if find is None:
        return frozenset()
    try:
        found = find(view, check.metric, deployed_at=deployed_at, since=since, as_of=due,
                     threshold=check.threshold)
    except Exception:  # naming nobody contains the whole package, which is the safe side
        return frozenset()
    return frozenset(found) & view.members


def watch_tick(rt: Runtime, release_id: int, as_of: datetime, metrics: MetricsSource
               ) -> TickOutcome:
    """Measure what is owed, store it, and say what the package needs next."""
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, release.package_key)
        view = load_package_view(s, pkg.key)
        state = S(pkg.state)
        if state not in WATCHED:
            return TickOutcome(release_id, pkg.key, "skipped", f"package is {pkg.state}", 0,
                               None, as_of=as_of)
        assert release.deployed_at is not None and release.watch_ends_at is not None, (
            f"release {release_id} of a watched package has no deploy time or watch window")
        start, end = as_utc(release.deployed_at), as_utc(release.watch_ends_at)
        checks = checks_for(view.health)
        done = {(r.check_name, as_utc(r.due_at)) for r in s.exec(
            select(HealthCheckResult).where(HealthCheckResult.release_id == release_id))}
        steps = cohorts.step_facts(s, release_id)
        plan = load_bundle(s, release_id, pkg.key)
        if steps is not None:  # a stepped release is judged on the members it took up
            view = replace(view, members=view.members & steps.granted)
            plan = restrict_plan(plan, steps.granted) if plan is not None else None
        history = _History(plan, release.legacy_retired_at,
                           tuple(suspensions.suspension_records(s, release_id)))
    if steps is not None and steps.status == "deploying" and steps.step > 0:
        # A widening a crash left half written: finish it before judging anything more.
        return TickOutcome(release_id, view.key, "widen", f"finishing step {steps.step + 1}/"
                           f"{steps.steps}", 0, None, as_of=as_of)
    rollback_on_anomaly = bool(view.health.get("rollback_on_anomaly", False))
    owed = sorted({t for c in checks for t in due_times(c, start, end, as_of)})
    measured = 0
    for due in owed:
        todo = [c for c in checks if is_due(c, start, end, due) and (c.name, due) not in done]
        if not todo:
            continue
        got = _measure(rt, metrics, view, history, start, todo, due, as_of)
        anomalies: list[tuple[HealthCheck, datetime]] = []
        with session_scope(rt.database_url) as s:
            for check in todo:
                value, error, since = got[check.name]
                verdict = Verdict.ERROR if error else check.judge(value)
                if check.anomaly and verdict == Verdict.FAILED:
                    anomalies.append((check, since))
                detail = f"error: {error}" if error else check.describe()
                s.add(HealthCheckResult(release_id=release_id, package_key=view.key,
                                        check_name=check.name, due_at=due, measured_at=as_of,
                                        value=value, threshold=check.threshold,
                                        verdict=verdict.value, detail=detail))
                audit.record(s, "health_checked", package_key=view.key, release_id=release_id,
                             at=as_of, check=check.name, due_at=due.isoformat(),
                             since=since.isoformat(), value=value, threshold=check.threshold,
                             verdict=verdict.value, error=error)
                measured += 1
        assessment = _assess(rt, release_id, checks)
        action = watch_action(assessment, state, rollback_on_anomaly=rollback_on_anomaly,
                              new_anomaly=bool(anomalies), watch_over=False)
        if action != "continue":
            # Decide at the first due time that settles it; later owed checks are moot.
            who = frozenset().union(*(_implicated(metrics, view, start, c, since, due)
                                      for c, since in anomalies))
            return _conclude(rt, release_id, action, assessment, measured, as_of, who,
                             tuple(c.name for c, _ in anomalies))
    assessment = _assess(rt, release_id, checks)
    action = watch_action(assessment, state, rollback_on_anomaly=rollback_on_anomaly,
                          new_anomaly=False, watch_over=as_of >= end)
    if steps is not None:
        soaked = soak_action(action, steps_left=steps.steps_left, paused=steps.paused,
                             soak=_soak_verdicts(rt, release_id, checks, start, end, as_of,
                                                 steps.started_at or start))
        action = soaked.action
        if soaked.reason:
            assessment = Assessment(Verdict.INCONCLUSIVE, soaked.reason)
    if action == "widen":
        assert steps is not None, "only a stepped release widens"
        assessment = Assessment(Verdict.PASSED, f"soak of step {steps.step + 1}/{steps.steps} "
                                "passed")
    if action == "stable":
        assessment = Assessment(Verdict.PASSED, f"watch of {view.watch_days} days passed")
    if action != "continue":
        return _conclude(rt, release_id, action, assessment, measured, as_of)
    nxt = next_due(checks, start, end, as_of)
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        release.next_check_at = nxt or end
        reason = assessment.reason if state != S.CONTAINED else (
            f"contained ({pkg.state_reason}); {assessment.reason}")
        if steps is not None and steps.paused and as_of >= end:
            reason = f"soak passed; paused by {steps.paused_by}: promote or resume to widen"
        return TickOutcome(release_id, view.key, "continue", reason, measured,
                           release.next_check_at, as_of=as_of)


def _soak_verdicts(rt: Runtime, release_id: int, checks: list[HealthCheck], start: datetime,
                   end: datetime, as_of: datetime, soak_from: datetime
                   ) -> dict[str, list[str]]:
    """Each check owed a measurement in the current step's soak -> its verdicts there."""
    could = {c.name for c in checks
             if any(t >= soak_from for t in due_times(c, start, end, as_of))}
    out: dict[str, list[str]] = {name: [] for name in could}
    with session_scope(rt.database_url) as s:
        rows = s.exec(select(HealthCheckResult.check_name, HealthCheckResult.due_at,
                             HealthCheckResult.verdict)
                      .where(HealthCheckResult.release_id == release_id)
                      .order_by(col(HealthCheckResult.due_at)))
        for name, due, verdict in rows:
            if name in out and as_utc(due) >= soak_from:
                out[name].append(verdict)
    return out


def _assess(rt: Runtime, release_id: int, checks: list[HealthCheck]) -> Assessment:
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        q = (select(HealthCheckResult.check_name, HealthCheckResult.verdict)
             .where(HealthCheckResult.release_id == release_id))
        if release.analysis_from is not None:  # a restore started the analysis afresh
            q = q.where(HealthCheckResult.due_at >= release.analysis_from)
        verdicts: dict[str, list[Verdict]] = {}
        for name, verdict in s.exec(q.order_by(col(HealthCheckResult.due_at))):
            verdicts.setdefault(name, []).append(Verdict(verdict))
    return assess_health(checks, verdicts)


def _conclude(rt: Runtime, release_id: int, action: str, assessment: Assessment,
              measured: int, as_of: datetime, identities: frozenset[str] = frozenset(),
              checks: tuple[str, ...] = ()) -> TickOutcome:
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, release.package_key)
        release.next_check_at = None
        if action == "stable":
            release.stable_at = as_of
            release.closed = True
            transition(s, pkg, S.STABLE, assessment.reason, release_id=release_id, at=as_of)
        elif action in ("inconclusive", "error"):
            transition(s, pkg, S.NEEDS_TUNING, assessment.reason, release_id=release_id,
                       at=as_of)
        # contain and rollback are carried out by the flow (containment.contain, the
        # rollback-package flow); the store changes with them.
        return TickOutcome(release_id, pkg.key, action, assessment.reason, measured, None,
                           identities=identities, checks=checks, as_of=as_of)


@dataclass(frozen=True)
class NextActions:
    """What the flows do after a watch tick: decided here, once, for the wave and the watch."""

    rollback: bool = False
    widen: bool = False  # deploy a stepped release's next cohort (cohorts.widen)
    contain: bool = False  # suspend the grants at risk (containment.contain) and tell the owner
    notify_hold: str | None = None  # the reason to tell the owner, when the package stopped
    retire_legacy: bool = False
    release_dependents: bool = False


def next_actions(rt: Runtime, tick: TickOutcome) -> NextActions:
    """Turn a tick's outcome into the next steps (one rule for every flow that ticks)."""
    if tick.action == "rollback":
        return NextActions(rollback=True)
    if tick.action == "contain":
        return NextActions(contain=True)
    if tick.action == "widen":
        return NextActions(widen=True)
    if tick.action in ("inconclusive", "error"):
        return NextActions(notify_hold=tick.reason)
    if tick.action == "skipped":
        return NextActions()
    as_of = tick.as_of or rt.clock.now()
    return NextActions(retire_legacy=retirement_due_for(rt, tick.release_id, as_of),
                       release_dependents=tick.action == "stable")
