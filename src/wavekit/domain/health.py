"""Health checks over a watch window, in the spirit of Argo Rollouts' AnalysisTemplate.

Each check has a metric, a bound (min or max), an interval, a start delay and a failure
limit. Verdicts are pure: a measurement is Passed, Failed or Inconclusive (no data); the
analysis fails once a check has more failed measurements than its limit, and turns
Inconclusive (a human decides) once it has more inconclusive ones than its limit. Nothing
here sleeps: `due_times` says when each measurement is owed, and the watch stores them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class HealthCheck:
    name: str
    metric: str
    threshold: float
    bound: str = "max"  # "max": value must be <= threshold; "min": >= threshold
    interval: timedelta = timedelta(days=1)
    start_after: timedelta = timedelta(0)
    failure_limit: int = 1
    inconclusive_limit: int = 3
    anomaly: bool = False  # a failure contains the package at once instead of waiting

    def judge(self, value: float | None) -> Verdict:
        """The verdict for one measurement."""
        if value is None:
            return Verdict.INCONCLUSIVE
        ok = value <= self.threshold if self.bound == "max" else value >= self.threshold
        return Verdict.PASSED if ok else Verdict.FAILED

    def describe(self) -> str:
        sign = "≤" if self.bound == "max" else "≥"
        return f"{self.metric} {sign} {self.threshold:g}"


DAY = timedelta(days=1)

DEFAULT_CHECKS: tuple[HealthCheck, ...] = (
    HealthCheck("adoption", "adoption", 0.5, "min", DAY, start_after=3 * DAY, failure_limit=2),
    HealthCheck("access_drift", "access_drift", 0.05, "max", DAY, failure_limit=1),
    HealthCheck("ticket_noise", "ticket_noise", 2.0, "max", DAY, start_after=DAY,
                failure_limit=1),
    HealthCheck("exception_growth", "exception_growth", 1.0, "max", DAY, start_after=DAY,
                failure_limit=2),
    HealthCheck("export_anomaly", "export_anomaly", 6.0, "max", DAY / 4, failure_limit=0,
                anomaly=True, inconclusive_limit=10_000),
    HealthCheck("escalation_anomaly", "escalation_anomaly", 0.0, "max", DAY / 4,
                failure_limit=0, anomaly=True, inconclusive_limit=10_000),
)


def checks_for(overrides: Mapping[str, Any] | None) -> list[HealthCheck]:
    """Default checks with a package's catalog overrides applied.

    `health: {ticket_noise: {threshold: 3, failure_limit: 2, interval_hours: 12}}`;
    `{check: false}` drops a check.
    """
    overrides = overrides or {}
    out = []
    for check in DEFAULT_CHECKS:
        o = overrides.get(check.name, {})
        if o is False:
            continue
        if isinstance(o, dict):
            changes: dict[str, Any] = {k: o[k] for k in ("threshold", "failure_limit",
                                                          "inconclusive_limit", "bound") if k in o}
            if "interval_hours" in o:
                changes["interval"] = timedelta(hours=float(o["interval_hours"]))
            if "start_after_hours" in o:
                changes["start_after"] = timedelta(hours=float(o["start_after_hours"]))
            check = replace(check, **changes)
        out.append(check)
    return out


def due_times(check: HealthCheck, start: datetime, end: datetime, until: datetime
              ) -> list[datetime]:
    """When `check` is owed a measurement between `start` and min(`until`, `end`)."""
    t, out = start + check.start_after, []
    limit = min(until, end)
    while t <= limit:
        out.append(t)
        t += check.interval
    return out


def next_due(checks: Iterable[HealthCheck], start: datetime, end: datetime, after: datetime
             ) -> datetime | None:
    """The earliest measurement owed after `after` (None once the window is done)."""
    best: datetime | None = None
    for check in checks:
        first = start + check.start_after
        if first > after:
            cand = first
        else:
            steps = int((after - first) / check.interval) + 1
            cand = first + steps * check.interval
        if cand <= end and (best is None or cand < best):
            best = cand
    return best


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict | None  # None: still running, nothing decided yet
    reason: str
    anomaly: bool = False


def assess_health(checks: Iterable[HealthCheck],
                  verdicts: Mapping[str, list[Verdict]]) -> Assessment:
    """The analysis verdict so far from each check's measurement verdicts (in time order)."""
    checks = list(checks)
    for check in checks:
        got = verdicts.get(check.name, [])
        fails = got.count(Verdict.FAILED)
        if fails > check.failure_limit:
            kind = "anomaly" if check.anomaly else "health check"
            return Assessment(Verdict.FAILED, f"{kind} {check.name} failed {fails} time(s) "
                              f"(limit {check.failure_limit}; requires {check.describe()})",
                              anomaly=check.anomaly)
    for check in checks:
        inconclusive = verdicts.get(check.name, []).count(Verdict.INCONCLUSIVE)
        if inconclusive > check.inconclusive_limit:
            return Assessment(Verdict.INCONCLUSIVE,
                              f"{check.name} had no data {inconclusive} time(s) "
                              f"(limit {check.inconclusive_limit}): a human must decide")
    return Assessment(None, "no check past its limits")
