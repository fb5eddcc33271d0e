"""Health checks over a watch window, in the spirit of Argo Rollouts' AnalysisTemplate.

Each check has a metric, a bound (min or max), an interval, a start delay and three limits.
Nothing here sleeps: `due_times` says when each measurement is owed, `measurement_window`
which interval of telemetry it judges, and the watch stores the verdicts.

A measurement has one of four verdicts:

    passed        the value is within the bound
    failed        the value breaks the bound
    inconclusive  the metric had no data, or too little to judge (the metric returned None)
    error         measuring raised (the telemetry store or the target could not be read)

The analysis so far (`assess_health`), per check, in this order:

    failed        more failed measurements in total than `failure_limit` (Argo's
                  failureLimit: the limit counts the failures tolerated)
    error         more *consecutive* errors than `error_limit` (Argo's consecutiveErrorLimit);
                  a human decides: wavekit does not roll back a package because its own
                  telemetry is broken
    inconclusive  more *consecutive* inconclusive measurements than `inconclusive_limit`;
                  a human decides

Consecutive means in due-time order: a passed or failed measurement ends an inconclusive run,
any measurement that did not raise ends an error run, and an error neither ends nor extends
an inconclusive run (it says nothing about the data).

Windows: a measurement judges the interval since the previous due time of its check,
[due - interval, due), clamped to start at the deploy, so consecutive measurements never
share an event and one bad hour fails at most one of them. A check may instead state a
rolling `window` ([due - window, due), clamped the same way). The first measurement of a
check judges [deploy, first due), so a start delay is covered, not skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from wavekit.domain.states import PackageState


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


@dataclass(frozen=True)
class HealthCheck:
    name: str
    metric: str
    threshold: float
    bound: str = "max"  # "max": value must be <= threshold; "min": >= threshold
    interval: timedelta = timedelta(days=1)
    start_after: timedelta = timedelta(0)
    failure_limit: int = 1  # failed measurements tolerated, in total
    inconclusive_limit: int = 3  # consecutive inconclusive measurements tolerated
    error_limit: int = 2  # consecutive measurement errors tolerated
    anomaly: bool = False  # a failure contains the package at once instead of waiting
    window: timedelta | None = None  # None: since the previous due time; else rolling

    def judge(self, value: float | None) -> Verdict:
        """The verdict for one measurement (None: no data, so inconclusive)."""
        if value is None:
            return Verdict.INCONCLUSIVE
        ok = value <= self.threshold if self.bound == "max" else value >= self.threshold
        return Verdict.PASSED if ok else Verdict.FAILED

    def describe(self) -> str:
        sign = "≤" if self.bound == "max" else "≥"
        return f"{self.metric} {sign} {self.threshold:g}"


DAY = timedelta(days=1)
ANOMALY_INTERVAL = DAY / 4

# Anomaly checks run every 6 hours: 8 consecutive inconclusive measurements are two days
# without export or assignment data, 4 consecutive errors a day of a broken detector.
DEFAULT_CHECKS: tuple[HealthCheck, ...] = (
    HealthCheck("adoption", "adoption", 0.5, "min", DAY, start_after=3 * DAY, failure_limit=2),
    HealthCheck("access_drift", "access_drift", 0.05, "max", DAY, failure_limit=1),
    HealthCheck("ticket_noise", "ticket_noise", 2.0, "max", DAY, start_after=DAY,
                failure_limit=1),
    HealthCheck("exception_growth", "exception_growth", 1.0, "max", DAY, start_after=DAY,
                failure_limit=2),
    HealthCheck("export_anomaly", "export_anomaly", 6.0, "max", ANOMALY_INTERVAL,
                start_after=ANOMALY_INTERVAL, failure_limit=0, anomaly=True,
                inconclusive_limit=8, error_limit=4),
    HealthCheck("escalation_anomaly", "escalation_anomaly", 0.0, "max", ANOMALY_INTERVAL,
                start_after=ANOMALY_INTERVAL, failure_limit=0, anomaly=True,
                inconclusive_limit=8, error_limit=4),
)
_LIMITS = ("threshold", "failure_limit", "inconclusive_limit", "error_limit", "bound")


def checks_for(overrides: Mapping[str, Any] | None) -> list[HealthCheck]:
    """Default checks with a package's catalog overrides applied.

    `health: {ticket_noise: {threshold: 3, failure_limit: 2, interval_hours: 12}}`; also
    `inconclusive_limit`, `error_limit`, `start_after_hours` and `window_hours` (a rolling
    window instead of the interval since the previous due time); `{check: false}` drops a
    check.
    """
    overrides = overrides or {}
    out = []
    for check in DEFAULT_CHECKS:
        o = overrides.get(check.name, {})
        if o is False:
            continue
        if isinstance(o, dict):
            changes: dict[str, Any] = {k: o[k] for k in _LIMITS if k in o}
            if "interval_hours" in o:
                changes["interval"] = timedelta(hours=float(o["interval_hours"]))
            if "start_after_hours" in o:
                changes["start_after"] = timedelta(hours=float(o["start_after_hours"]))
            if "window_hours" in o:
                changes["window"] = timedelta(hours=float(o["window_hours"]))
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


def is_due(check: HealthCheck, start: datetime, end: datetime, at: datetime) -> bool:
    """Whether `at` is one of `check`'s due times in the window [start, end]."""
    first = start + check.start_after
    if at < first or at > end:
        return False
    return (at - first) % check.interval == timedelta(0)


def measurement_window(check: HealthCheck, deployed_at: datetime, due: datetime
                       ) -> tuple[datetime, datetime]:
    """The half-open interval [since, due) the measurement owed at `due` judges."""
    if check.window is not None:
        return max(due - check.window, deployed_at), due
    previous = due - check.interval
    return (previous if previous >= deployed_at + check.start_after else deployed_at), due


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
    check: str | None = None  # the check that decided it


def longest_run(verdicts: Sequence[Verdict], kind: Verdict,
                skip: frozenset[Verdict] = frozenset()) -> int:
    """The longest run of `kind` in `verdicts`, stepping over verdicts in `skip`."""
    best = run = 0
    for v in verdicts:
        if v == kind:
            run += 1
            best = max(best, run)
        elif v not in skip:
            run = 0
    return best


def assess_health(checks: Iterable[HealthCheck],
                  verdicts: Mapping[str, Sequence[Verdict]]) -> Assessment:
    """The analysis verdict so far from each check's measurement verdicts (in due order).

    Runs are judged over the whole history: once a limit was passed the analysis was
    decided, whatever came after.
    """
    checks = list(checks)
    for check in checks:
        got = verdicts.get(check.name, ())
        fails = sum(v == Verdict.FAILED for v in got)
        if fails > check.failure_limit:
            kind = "anomaly" if check.anomaly else "health check"
            return Assessment(Verdict.FAILED, f"{kind} {check.name} failed {fails} time(s) "
                              f"(limit {check.failure_limit}; requires {check.describe()})",
                              anomaly=check.anomaly, check=check.name)
    for check in checks:
        errors = longest_run(verdicts.get(check.name, ()), Verdict.ERROR)
        if errors > check.error_limit:
            return Assessment(Verdict.ERROR,
                              f"{check.name} could not be measured {errors} time(s) in a row "
                              f"(limit {check.error_limit}): a human must decide",
                              check=check.name)
    for check in checks:
        run = longest_run(verdicts.get(check.name, ()), Verdict.INCONCLUSIVE,
                          skip=frozenset({Verdict.ERROR}))
        if run > check.inconclusive_limit:
            return Assessment(Verdict.INCONCLUSIVE,
                              f"{check.name} had too little data {run} time(s) in a row "
                              f"(limit {check.inconclusive_limit}): a human must decide",
                              check=check.name)
    return Assessment(None, "no check past its limits")


def watch_action(assessment: Assessment, state: PackageState, *, rollback_on_anomaly: bool,
                 new_anomaly: bool, watch_over: bool) -> str:
    """What a tick's assessment means for the package (pure; one rule for every tick).

    A failure past its limit rolls back, unless it is an anomaly, which contains (or rolls
    back with `rollback_on_anomaly`); a contained package is only contained again for a new
    anomaly. Errors and inconclusive results past their limits stop the package for a human
    (Needs tuning), and the watch passes at its end; neither happens while contained, where
    a human has it already.
    """
    v = assessment.verdict
    if v == Verdict.FAILED:
        if assessment.anomaly and not rollback_on_anomaly:
            if state == PackageState.CONTAINED and not new_anomaly:
                return "continue"
            return "contain"
        return "rollback"
    if state == PackageState.CONTAINED:
        return "continue"
    if v == Verdict.INCONCLUSIVE:
        return "inconclusive"
    if v == Verdict.ERROR:
        return "error"
    return "stable" if watch_over else "continue"
