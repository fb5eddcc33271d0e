"""Replay: what a package's health checks would have said over recorded telemetry.

As if the package had been deployed at `deployed_at`, every check is measured at each of
its due times over the telemetry given, with the same metrics, windows, limits and
decision rule as the live watch (metrics.measure_package, health.assess_health,
health.watch_action), and nothing is written anywhere. The result says, day by day, what
each check would have judged, and whether and when the watch would have rolled the package
back, contained it or stopped for a human: a threshold can be tuned before launch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from wavekit.domain.clock import as_utc
from wavekit.domain.frames import TelemetryFrames
from wavekit.domain.grants import GrantSet, grant_set
from wavekit.domain.health import (
    Assessment,
    HealthCheck,
    Verdict,
    assess_health,
    due_times,
    is_due,
    measurement_window,
    watch_action,
)
from wavekit.domain.metrics import measure_package
from wavekit.domain.packages import PackageView
from wavekit.domain.states import PackageState

# What the watch would have done, in the words a release manager reads.
OUTCOME_WORDS = {
    "rollback": "rolled back", "contain": "contained", "inconclusive": "stopped for a human",
    "error": "stopped for a human", "stable": "stable", "continue": "still watching",
}
# The worst verdict of a day stands for the day (a failure outweighs a pass that day).
_SEVERITY = {Verdict.PASSED: 0, Verdict.INCONCLUSIVE: 1, Verdict.ERROR: 2, Verdict.FAILED: 3}


@dataclass(frozen=True)
class Measurement:
    """One check measured at one due time."""

    due: datetime
    check: str
    value: float | None
    verdict: Verdict
    rule: str  # e.g. "ticket_noise ≤ 2"
    error: str | None = None


@dataclass(frozen=True)
class ReplayResult:
    package: str
    deployed_at: datetime
    until: datetime
    checks: tuple[HealthCheck, ...]
    measurements: tuple[Measurement, ...]
    action: str  # watch_action's word at the decision, or continue / stable at the end
    decided_at: datetime | None
    reason: str

    @property
    def outcome(self) -> str:
        return OUTCOME_WORDS[self.action]

    @property
    def failing_checks(self) -> tuple[str, ...]:
        """Checks with at least one failed measurement: the ones to look at before launch."""
        return tuple(c.name for c in self.checks
                     if any(m.check == c.name and m.verdict == Verdict.FAILED
                            for m in self.measurements))

    def days(self) -> list[tuple[date, dict[str, Verdict]]]:
        """Per day since the deploy: each check's worst verdict that day."""
        by_day: dict[date, dict[str, Verdict]] = {}
        for m in self.measurements:
            day = by_day.setdefault(m.due.date(), {})
            if m.check not in day or _SEVERITY[m.verdict] > _SEVERITY[day[m.check]]:
                day[m.check] = m.verdict
        return sorted(by_day.items())


def planned_grants(view: PackageView) -> GrantSet:
    """The package's grants once deployed: every member holds every granted entitlement."""
    return grant_set((m, e) for m in sorted(view.members) for e in sorted(view.entitlements))


def replay_package(view: PackageView, frames: TelemetryFrames, checks: Iterable[HealthCheck],
                   *, deployed_at: datetime, until: datetime | None = None,
                   baseline_days: int = 28) -> ReplayResult:
    """Judge `checks` over `frames` as if `view` was deployed at `deployed_at`.

    Runs until the watch would have decided, or to `until` (default: the end of the watch
    window). Like the live watch, the first due time at which a limit is passed decides.
    """
    checks = tuple(checks)
    start = as_utc(deployed_at)
    end = start + timedelta(days=view.watch_days)
    stop = min(as_utc(until), end) if until is not None else end
    grants = planned_grants(view)
    rollback_on_anomaly = bool(view.health.get("rollback_on_anomaly", False))
    owed = sorted({t for c in checks for t in due_times(c, start, end, stop)})
    measured: list[Measurement] = []
    verdicts: dict[str, list[Verdict]] = {}
    for due in owed:
        todo = [c for c in checks if is_due(c, start, end, due)]
        values: dict[datetime, dict[str, float | None] | str] = {}
        anomaly = False
        for check in todo:
            since = measurement_window(check, start, due)[0]
            if since not in values:
                try:
                    values[since] = measure_package(
                        frames, view, deployed_at=start, since=since, as_of=due,
                        target_grants=grants, baseline_days=baseline_days, from_history=True)
                except Exception as exc:  # a metric that raises is an error, as in the watch
                    values[since] = f"{type(exc).__name__}: {exc}"
            got = values[since]
            error = got if isinstance(got, str) else None
            value = None if isinstance(got, str) else got.get(check.metric)
            verdict = Verdict.ERROR if error else check.judge(value)
            anomaly |= check.anomaly and verdict == Verdict.FAILED
            measured.append(Measurement(due, check.name, value, verdict, check.describe(),
                                        error))
            verdicts.setdefault(check.name, []).append(verdict)
        assessment = assess_health(checks, verdicts)
        action = watch_action(assessment, PackageState.WATCHING,
                              rollback_on_anomaly=rollback_on_anomaly, new_anomaly=anomaly,
                              watch_over=False)
        if action != "continue":
            return ReplayResult(view.key, start, stop, checks, tuple(measured), action, due,
                                assessment.reason)
    final: Assessment = assess_health(checks, verdicts)
    over = stop >= end
    action = "stable" if over else "continue"
    reason = (f"watch of {view.watch_days} days passed" if over
              else f"no check past its limits by {stop:%Y-%m-%d %H:%M} UTC")
    return ReplayResult(view.key, start, stop, checks, tuple(measured), action,
                        stop if over else None, reason if final.verdict is None else final.reason)
