"""The watch: health checks owed over a days-long window, one stored tick at a time.

No process stays alive for the window. Each tick measures every check whose due time has
passed and has no stored result (catching up after downtime, each measured as of its due
time), stores the results, and judges the whole history. The next tick is due at
`Release.next_check_at`; a scheduled deployment runs ticks, tests hand in the time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlmodel import select

from wavekit.adapters.store import audit
from wavekit.adapters.store.bundles import restrict
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import HealthCheckResult, Release, RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.clock import as_utc
from wavekit.domain.grants import GrantSet
from wavekit.domain.health import (
    Assessment,
    Verdict,
    assess_health,
    checks_for,
    due_times,
    next_due,
)
from wavekit.domain.packages import PackageView
from wavekit.domain.states import PackageState
from wavekit.workflow.rollout import launch_retirement_due
from wavekit.workflow.runtime import Runtime

S = PackageState


class MetricsSource(Protocol):
    def measure(self, package: PackageView, deployed_at: datetime, as_of: datetime,
                target_grants: GrantSet) -> Mapping[str, float | None]:
        """Metric values for `package` as of `as_of` (None: not enough data)."""
        ...


@dataclass
class TickOutcome:
    release_id: int
    package_key: str
    action: str  # continue | stable | rollback | contain | inconclusive | skipped
    reason: str
    measured: int
    next_check_at: datetime | None


def releases_due(rt: Runtime, as_of: datetime) -> list[int]:
    """Open releases in Watching whose next check is due at `as_of`."""
    with session_scope(rt.database_url) as s:
        rows = s.exec(select(Release.id, Release.next_check_at)
                      .join(RolePackage, RolePackage.key == Release.package_key)
                      .where(RolePackage.state == S.WATCHING, Release.closed == False,  # noqa: E712
                             Release.deployed_at.is_not(None))  # type: ignore[union-attr]
                      .order_by(Release.id))
        return [rid for rid, due in rows if due is None or as_utc(due) <= as_of]


def watch_tick(rt: Runtime, release_id: int, as_of: datetime, metrics: MetricsSource
               ) -> TickOutcome:
    """Measure what is owed, store it, and say what the package needs next."""
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        pkg = s.get(RolePackage, release.package_key)
        view = load_package_view(s, pkg.key)
        if S(pkg.state) != S.WATCHING:
            return TickOutcome(release_id, pkg.key, "skipped", f"package is {pkg.state}", 0,
                               None)
        start, end = as_utc(release.deployed_at), as_utc(release.watch_ends_at)
        checks = checks_for(view.health)
        done = {(r.check_name, as_utc(r.due_at)) for r in s.exec(
            select(HealthCheckResult).where(HealthCheckResult.release_id == release_id))}
    owed = sorted({t for c in checks for t in due_times(c, start, end, as_of)})
    grants = restrict(rt.target.read_grants(view.scope), view.scope) if owed else frozenset()
    measured = 0
    for due in owed:
        todo = [c for c in checks if due in due_times(c, start, end, due)[-1:]
                and (c.name, due) not in done]
        if not todo:
            continue
        values = metrics.measure(view, start, due, grants)
        with session_scope(rt.database_url) as s:
            for check in todo:
                value = values.get(check.metric)
                verdict = check.judge(value)
                s.add(HealthCheckResult(release_id=release_id, package_key=view.key,
                                        check_name=check.name, due_at=due, measured_at=as_of,
                                        value=value, threshold=check.threshold,
                                        verdict=verdict.value, detail=check.describe()))
                audit.record(s, "health_checked", package_key=view.key, release_id=release_id,
                             at=as_of, check=check.name, due_at=due.isoformat(), value=value,
                             threshold=check.threshold, verdict=verdict.value)
                measured += 1
        assessment = _assess(rt, release_id, checks)
        if assessment.verdict is not None:
            # Decide at the first due time that settles it; later owed checks are moot.
            return _conclude(rt, release_id, assessment, measured, as_of)
    assessment = _assess(rt, release_id, checks)
    if assessment.verdict is None and as_of >= end:
        assessment = Assessment(Verdict.PASSED, f"watch of {view.watch_days} days passed")
    if assessment.verdict is not None:
        return _conclude(rt, release_id, assessment, measured, as_of)
    nxt = next_due(checks, start, end, as_of)
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        release.next_check_at = nxt or end
        return TickOutcome(release_id, view.key, "continue", assessment.reason, measured,
                           release.next_check_at)


def _assess(rt: Runtime, release_id: int, checks) -> Assessment:  # type: ignore[no-untyped-def]
    with session_scope(rt.database_url) as s:
        rows = s.exec(select(HealthCheckResult.check_name, HealthCheckResult.verdict)
                      .where(HealthCheckResult.release_id == release_id)
                      .order_by(HealthCheckResult.due_at))
        verdicts: dict[str, list[Verdict]] = {}
        for name, verdict in rows:
            verdicts.setdefault(name, []).append(Verdict(verdict))
    return assess_health(checks, verdicts)


def _conclude(rt: Runtime, release_id: int, assessment: Assessment, measured: int,
              as_of: datetime) -> TickOutcome:
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        pkg = s.get(RolePackage, release.package_key)
        release.next_check_at = None
        if assessment.verdict == Verdict.PASSED:
            release.stable_at = as_of
            release.closed = True
            transition(s, pkg, S.STABLE, assessment.reason, release_id=release_id, at=as_of)
            action = "stable"
        elif assessment.verdict == Verdict.INCONCLUSIVE:
            transition(s, pkg, S.NEEDS_TUNING, assessment.reason, release_id=release_id,
                       at=as_of)
            action = "inconclusive"
        elif assessment.anomaly and not pkg.health.get("rollback_on_anomaly", False):
            # Containment: stop the package where it is and get a human; no silent rollback.
            transition(s, pkg, S.HELD, f"contained: {assessment.reason}",
                       release_id=release_id, at=as_of)
            audit.record(s, "package_contained", package_key=pkg.key, release_id=release_id,
                         at=as_of, reason=assessment.reason)
            action = "contain"
        else:
            action = "rollback"
        return TickOutcome(release_id, pkg.key, action, assessment.reason, measured, None)


@dataclass(frozen=True)
class NextActions:
    """What the flows do after a watch tick: decided here, once, for the wave and the watch."""

    rollback: bool = False
    notify_hold: str | None = None  # the reason to tell the owner, when the package stopped
    retire_legacy: bool = False
    release_dependents: bool = False


def next_actions(rt: Runtime, tick: TickOutcome) -> NextActions:
    """Turn a tick's outcome into the next steps (one rule for every flow that ticks)."""
    if tick.action == "rollback":
        return NextActions(rollback=True)
    if tick.action in ("contain", "inconclusive"):
        return NextActions(notify_hold=tick.reason)
    if tick.action == "stable":
        return NextActions(retire_legacy=True, release_dependents=True)
    # Still watching: a package that retires in its launch window retires now.
    return NextActions(retire_legacy=launch_retirement_due(rt, tick.release_id))

