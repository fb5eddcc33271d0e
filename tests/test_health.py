"""Health verdicts, limits, windows and due times as tables (wavekit.domain.health)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wavekit.domain.health import (
    DEFAULT_CHECKS,
    HealthCheck,
    Verdict,
    assess_health,
    checks_for,
    due_times,
    is_due,
    longest_run,
    measurement_window,
    next_due,
)

P, F, N, E = Verdict.PASSED, Verdict.FAILED, Verdict.INCONCLUSIVE, Verdict.ERROR  # N: no data
D0 = datetime(2026, 4, 8, 9, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
DEFAULTS = {c.name: c for c in DEFAULT_CHECKS}


def check(**kw) -> HealthCheck:  # type: ignore[no-untyped-def]
    return HealthCheck(**{"name": "c", "metric": "m", "threshold": 2.0, **kw})


# ------------------------------------------------------------------ one measurement


@pytest.mark.parametrize(("bound", "value", "verdict"), [
    ("max", 1.0, P), ("max", 2.0, P),  # at the bound is within it
    ("max", 2.0001, F), ("max", -5.0, P),
    ("min", 2.0, P), ("min", 3.0, P), ("min", 1.9999, F), ("min", 0.0, F),
    ("max", None, N), ("min", None, N),  # no data is never a pass or a failure
])
def test_judge_every_bound(bound: str, value: float | None, verdict: Verdict) -> None:
    assert check(bound=bound).judge(value) == verdict


def test_describe() -> None:
    assert check(bound="max").describe() == "m ≤ 2"
    assert check(bound="min", threshold=0.5).describe() == "m ≥ 0.5"


# ------------------------------------------------------------------ the analysis


def assess(c: HealthCheck, *verdicts: Verdict):  # type: ignore[no-untyped-def]
    return assess_health([c], {c.name: list(verdicts)})


@pytest.mark.parametrize(("limit", "verdicts", "decided"), [
    (1, [], None),
    (1, [F], None),  # one failure tolerated
    (1, [F, P, P], None),
    (1, [F, F], F),  # exactly one past the limit
    (1, [F, P, F], F),  # failures count in total, not in a row (Argo's failureLimit)
    (0, [P, P], None),
    (0, [F], F),
    (2, [F, F], None),
    (2, [F, F, F], F),
    (2, [F, N, F, E, F], F),
])
def test_failure_limit_is_exact_at_the_boundary(limit: int, verdicts: list[Verdict],
                                                decided: Verdict | None) -> None:
    got = assess(check(failure_limit=limit, inconclusive_limit=99, error_limit=99), *verdicts)
    assert got.verdict == decided
    if decided:
        assert got.reason == (f"health check c failed {verdicts.count(F)} time(s) "
                              f"(limit {limit}; requires m ≤ 2)")
        assert got.check == "c" and not got.anomaly


@pytest.mark.parametrize(("limit", "verdicts", "decided"), [
    (3, [N, N, N], None),  # three in a row tolerated
    (3, [N, N, N, N], N),  # the fourth in a row is one too many
    (3, [N, N, P, N, N, N], None),  # a pass ends the run: never more than 3 in a row
    (3, [N, N, F, N, N], None),  # so does a failure
    (3, [N, N, E, N, N], N),  # an error neither ends nor extends the run: 4 in a row
    (3, [N, N, E, E, N], None),  # 3 inconclusive around the errors
    (0, [N], N),
    (0, [P, P], None),
    (8, [N] * 8, None),
    (8, [N] * 9, N),
])
def test_inconclusive_limit_is_consecutive(limit: int, verdicts: list[Verdict],
                                           decided: Verdict | None) -> None:
    got = assess(check(inconclusive_limit=limit, failure_limit=99, error_limit=99), *verdicts)
    assert got.verdict == decided
    if decided:
        assert "in a row" in got.reason and f"(limit {limit})" in got.reason


@pytest.mark.parametrize(("limit", "verdicts", "decided"), [
    (2, [E, E], None),
    (2, [E, E, E], E),  # one past the consecutive limit
    (2, [E, E, P, E, E], None),  # a measurement that did not raise ends the run
    (2, [E, E, N, E, E], None),  # an inconclusive one too (the measuring worked)
    (2, [E, F, E, E, F], None),
    (0, [E], E),
    (4, [E] * 4, None),
    (4, [E] * 5, E),
])
def test_error_limit_is_consecutive(limit: int, verdicts: list[Verdict],
                                    decided: Verdict | None) -> None:
    got = assess(check(error_limit=limit, failure_limit=99, inconclusive_limit=99), *verdicts)
    assert got.verdict == decided
    if decided:
        assert got.reason.startswith("c could not be measured") and f"(limit {limit})" in \
            got.reason


def test_failure_wins_over_errors_and_inconclusive_and_checks_are_separate() -> None:
    a = check(name="a", failure_limit=0, inconclusive_limit=0, error_limit=0)
    b = check(name="b", failure_limit=0, inconclusive_limit=0, error_limit=0)
    # b's failure decides even though a is past its error and inconclusive limits.
    got = assess_health([a, b], {"a": [E, N], "b": [F]})
    assert (got.verdict, got.check) == (F, "b")
    assert assess_health([a, b], {"a": [N], "b": [E]}).verdict == E  # errors before no-data
    assert assess_health([a, b], {"a": [N], "b": [P]}).verdict == N
    # Verdicts of one check never count for another.
    assert assess_health([a, b], {"a": [P], "b": [P]}).verdict is None
    assert assess_health([a], {"b": [F, F, F]}).verdict is None


def test_anomaly_failures_are_marked() -> None:
    got = assess(DEFAULTS["export_anomaly"], P, F)
    assert got.verdict == F and got.anomaly
    assert got.reason.startswith("anomaly export_anomaly failed 1 time(s) (limit 0")


# ------------------------------------------------------------------ the default limits


@pytest.mark.parametrize(("name", "failure", "inconclusive", "error", "interval"), [
    ("adoption", 2, 3, 2, DAY),
    ("access_drift", 1, 3, 2, DAY),
    ("ticket_noise", 1, 3, 2, DAY),
    ("exception_growth", 2, 3, 2, DAY),
    ("export_anomaly", 0, 8, 4, DAY / 4),
    ("escalation_anomaly", 0, 8, 4, DAY / 4),
])
def test_default_limits(name: str, failure: int, inconclusive: int, error: int,
                        interval: timedelta) -> None:
    c = DEFAULTS[name]
    assert (c.failure_limit, c.inconclusive_limit, c.error_limit, c.interval) == (
        failure, inconclusive, error, interval)
    # Every default limit bites: one more than the limit decides the analysis.
    assert assess(c, *[F] * failure).verdict is None
    assert assess(c, *[F] * (failure + 1)).verdict == F
    assert assess(c, *[N] * inconclusive).verdict is None
    assert assess(c, *[N] * (inconclusive + 1)).verdict == N
    assert assess(c, *[E] * error).verdict is None
    assert assess(c, *[E] * (error + 1)).verdict == E


def test_anomaly_checks_get_a_human_after_two_days_without_data() -> None:
    for name in ("export_anomaly", "escalation_anomaly"):
        c = DEFAULTS[name]
        assert c.anomaly and c.inconclusive_limit * c.interval <= 2 * DAY


def test_checks_for_applies_catalog_overrides() -> None:
    got = {c.name: c for c in checks_for({
        "ticket_noise": {"threshold": 3, "failure_limit": 2, "interval_hours": 12,
                         "inconclusive_limit": 5, "error_limit": 1, "window_hours": 48},
        "adoption": False,
        "export_anomaly": {"start_after_hours": 1},
        "rollback_on_anomaly": True,  # a package setting, not a check
    })}
    assert "adoption" not in got and len(got) == len(DEFAULT_CHECKS) - 1
    t = got["ticket_noise"]
    assert (t.threshold, t.failure_limit, t.interval, t.inconclusive_limit, t.error_limit,
            t.window) == (3, 2, 12 * HOUR, 5, 1, 48 * HOUR)
    assert got["export_anomaly"].start_after == HOUR
    assert got["access_drift"] == DEFAULTS["access_drift"]
    assert checks_for(None) == list(DEFAULT_CHECKS)


# ------------------------------------------------------------------ due times and windows


def test_due_times_and_next_due() -> None:
    daily = check(interval=DAY, start_after=DAY)
    end = D0 + 3 * DAY
    assert due_times(daily, D0, end, D0 + 10 * DAY) == [D0 + DAY, D0 + 2 * DAY, D0 + 3 * DAY]
    assert due_times(daily, D0, end, D0 + DAY - HOUR) == []
    assert due_times(daily, D0, end, D0 + 2 * DAY) == [D0 + DAY, D0 + 2 * DAY]
    six = check(interval=6 * HOUR, start_after=6 * HOUR)
    assert next_due([daily, six], D0, end, D0) == D0 + 6 * HOUR
    assert next_due([daily, six], D0, end, D0 + 20 * HOUR) == D0 + DAY
    assert next_due([daily, six], D0, end, D0 + DAY) == D0 + 30 * HOUR
    assert next_due([daily, six], D0, end, end) is None
    for t in (D0 + DAY, D0 + 3 * DAY):
        assert is_due(daily, D0, end, t)
    for t in (D0, D0 + DAY + HOUR, D0 + 4 * DAY):
        assert not is_due(daily, D0, end, t)


def test_windows_follow_each_other_without_overlap() -> None:
    daily = check(interval=DAY, start_after=3 * DAY)
    # The first window covers the start delay; later ones the interval since the last due.
    assert measurement_window(daily, D0, D0 + 3 * DAY) == (D0, D0 + 3 * DAY)
    assert measurement_window(daily, D0, D0 + 4 * DAY) == (D0 + 3 * DAY, D0 + 4 * DAY)
    rolling = check(interval=DAY, window=7 * DAY)
    assert measurement_window(rolling, D0, D0 + 2 * DAY) == (D0, D0 + 2 * DAY)
    assert measurement_window(rolling, D0, D0 + 9 * DAY) == (D0 + 2 * DAY, D0 + 9 * DAY)


@given(st.integers(0, 48), st.integers(1, 48), st.integers(1, 30 * 24))
def test_interval_windows_tile_the_watch(start_h: int, interval_h: int, end_h: int) -> None:
    c = check(interval=interval_h * HOUR, start_after=start_h * HOUR)
    dues = due_times(c, D0, D0 + end_h * HOUR, D0 + end_h * HOUR)
    windows = [measurement_window(c, D0, t) for t in dues]
    # Consecutive windows meet exactly: no event is judged twice, none after deploy skipped.
    for (_, end), (start, _) in pairwise(windows):
        assert end == start
    if windows:
        assert windows[0] == (D0, dues[0])


def test_longest_run() -> None:
    assert longest_run([], N) == 0
    assert longest_run([N, N, P, N], N) == 2
    assert longest_run([N, E, N], N, skip=frozenset({E})) == 2
    assert longest_run([N, E, N], N) == 1
