"""The per-package health metrics as they were before the all-packages rewrite (issue 16, P3).

A frozen copy of wavekit.domain.metrics at commit aa371a0 (the measuring functions only):
the oracle tests/test_metrics_all_packages.py holds the vectorised implementation to, bit
for bit. Do not edit it to make a test pass; the live rules are in wavekit.domain.metrics.
"""
# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import pandas as pd

from wavekit.domain.clock import as_utc
from wavekit.domain.frames import WAVEKIT_ACTOR, TelemetryFrames
from wavekit.domain.grants import Grant, GrantSet, by_entitlement
from wavekit.domain.packages import PackageView

METRICS = ("adoption", "access_drift", "ticket_noise", "exception_growth", "export_anomaly",
           "escalation_anomaly")
MIN_BASELINE_DAYS = 14  # the feed must reach this far back before the deploy
MIN_BASELINE_EVENTS = 5  # package events in the baseline before its rate means anything
MIN_WINDOW_EVENTS = 3  # events in a window before its rate can read as above the baseline
MIN_EXPORT_BASELINE = 5  # member-days needed before a median and MAD mean anything
MAD_TO_SIGMA = 1.4826  # scales the MAD to a standard deviation for normal data
MIN_EXPORT_SCALE = 1.0  # volume units; a perfectly regular baseline would make any change infinite
DAY = timedelta(days=1)


def _ts(value: datetime) -> pd.Timestamp:
    return pd.Timestamp(as_utc(value))


def _between(df: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    return df[(df["at"] >= start) & (df["at"] < end)]


def _out_of_band(assignments: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
                 ) -> pd.DataFrame:
    a = _between(assignments, start, end)
    actor = a["actor"].astype(str).str.strip().str.lower()
    return a[actor != WAVEKIT_ACTOR]


def _out_of_band_adds(assignments: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
                      ) -> pd.DataFrame:
    a = _out_of_band(assignments, start, end)
    return a[a["action"] == "add"]


def feed_alive(frames: TelemetryFrames, kind: str, since: pd.Timestamp) -> bool:
    """Whether the `kind` feed (any package) delivered something at or after `since`."""
    last = frames.latest.get(kind)
    return last is not None and last >= since


def baseline_days_covered(frames: TelemetryFrames, kind: str, deployed_at: pd.Timestamp,
                          baseline_days: int) -> float:
    """Days of the baseline window the `kind` feed covers (0 when it never delivered)."""
    first = frames.earliest.get(kind)
    if first is None or first >= deployed_at:
        return 0.0
    start = max(first, deployed_at - pd.Timedelta(days=baseline_days))
    return float((deployed_at - start) / DAY)


def rate_ratio(window_events: int, window_days: float, baseline_events: int,
               baseline_days: float) -> float | None:
    """Window rate / baseline rate, None below the minimum baseline or sample (see above)."""
    if window_days <= 0:
        return None
    if window_events == 0:
        return 0.0
    if baseline_days < MIN_BASELINE_DAYS or baseline_events < MIN_BASELINE_EVENTS:
        return None
    ratio = (window_events / window_days) / (baseline_events / baseline_days)
    if ratio > 1 and window_events < MIN_WINDOW_EVENTS:
        return None
    return ratio


def adoption(frames: TelemetryFrames, package: PackageView, start: pd.Timestamp,
             end: pd.Timestamp) -> float | None:
    """Share of members who used any granted entitlement in [start, end).

    None without members, for an empty window, or when the usage feed delivered nothing
    since `start` (a silent feed must not read as nobody using the role).
    """
    if not package.members or start >= end or not feed_alive(frames, "usage", start):
        return None
    u = _between(frames.usage, start, end)
    used = u.loc[u["identity"].isin(package.members)
                 & u["entitlement"].isin(package.entitlements), "identity"].nunique()
    return float(used) / len(package.members)


def replay_out_of_band(grants: GrantSet, assignments: pd.DataFrame, scope: Collection[str],
                       start: pd.Timestamp, end: pd.Timestamp) -> GrantSet:
    """`grants` with the out-of-band changes of `scope` in [start, end) applied, in order.

    Turns wavekit's own record of a target (its bundles and writes) into the target as it
    was at `end`, for measurements owed in the past.
    """
    a = _out_of_band(assignments, start, end)
    a = a[a["entitlement"].isin(set(scope))].sort_values("at", kind="stable")
    out = set(grants)
    for identity, entitlement, action in zip(a["identity"], a["entitlement"], a["action"],
                                             strict=True):
        g = Grant(identity, entitlement)
        if action == "add":
            out.add(g)
        else:
            out.discard(g)
    return frozenset(out)


def access_drift(frames: TelemetryFrames, package: PackageView, target_grants: GrantSet,
                 deployed_at: pd.Timestamp, end: pd.Timestamp, baseline_days: int,
                 suspended: GrantSet = frozenset()) -> float | None:
    """Intended grants missing at `end` plus out-of-band grants still held, / intended.

    A state, not a rate: it reads the target's grants at the due time. Grants suspended by
    containment are meant to be missing and do not count. None without intended grants or
    when the assignments feed never delivered anything since the baseline started.
    """
    intended = len(package.members) * len(package.entitlements)
    if intended == 0:
        return None
    if not feed_alive(frames, "assignments", deployed_at - pd.Timedelta(days=baseline_days)):
        return None
    holders = by_entitlement(target_grants | suspended)
    missing = sum(len(package.members - holders.get(e, set())) for e in package.entitlements)
    oob = _out_of_band_adds(frames.assignments, deployed_at, end)
    oob = oob[oob["entitlement"].isin(package.entitlements)
              & ~oob["identity"].isin(package.members)]
    pairs = set(zip(oob["identity"], oob["entitlement"], strict=True))
    extra = len(pairs & target_grants)  # removed again since: no longer a difference
    return (missing + extra) / intended


def _package_rate(frame: pd.DataFrame, kind: str, frames: TelemetryFrames,
                  package: PackageView, deployed_at: pd.Timestamp, start: pd.Timestamp,
                  end: pd.Timestamp, baseline_days: int) -> float | None:
    if start >= end or not feed_alive(frames, kind, start):
        return None
    mine = frame[frame["package"] == package.key]
    covered = baseline_days_covered(frames, kind, deployed_at, baseline_days)
    window = len(_between(mine, start, end))
    before = len(_between(mine, deployed_at - pd.Timedelta(days=covered), deployed_at))
    return rate_ratio(window, (end - start) / DAY, before, covered)


def ticket_noise(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
                 start: pd.Timestamp, end: pd.Timestamp, baseline_days: int
                 ) -> float | None:
    """Tickets per day in [start, end) / tickets per day in the baseline (see rate_ratio)."""
    return _package_rate(frames.tickets, "tickets", frames, package, deployed_at, start, end,
                         baseline_days)


def exception_growth(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
                     start: pd.Timestamp, end: pd.Timestamp, baseline_days: int
                     ) -> float | None:
    """Exceptions per day in [start, end) / per day in the baseline, minus 1.

    0 = as before launch, 1 = doubled, -1 = none at all (0 when there were none before
    either). The same minimum baseline and sample as ticket noise.
    """
    ratio = _package_rate(frames.exceptions, "exceptions", frames, package, deployed_at,
                          start, end, baseline_days)
    if ratio is None:
        return None
    if ratio == 0.0:
        e = frames.exceptions[frames.exceptions["package"] == package.key]
        before = _between(e, deployed_at - pd.Timedelta(days=baseline_days), deployed_at)
        return -1.0 if len(before) else 0.0
    return ratio - 1.0


def _export_scores(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
                   start: pd.Timestamp, end: pd.Timestamp, baseline_days: int
                   ) -> pd.Series | None:
    """Each member's robust z-score in [start, end) (their largest day), or None."""
    if start >= end or not feed_alive(frames, "exports", start):
        return None
    covered = baseline_days_covered(frames, "exports", deployed_at, baseline_days)
    if covered < MIN_BASELINE_DAYS:
        return None
    x = frames.exports[frames.exports["identity"].isin(package.members)]
    base = _between(x, deployed_at - pd.Timedelta(days=covered), deployed_at)
    daily = base.groupby([base["identity"], base["at"].dt.floor("D")])["volume"].sum()
    if len(daily) < MIN_EXPORT_BASELINE:
        return None
    median = float(daily.median())
    scale = max(MAD_TO_SIGMA * float((daily - median).abs().median()), MIN_EXPORT_SCALE)
    recent = _between(x, start, end)
    if recent.empty:
        return pd.Series(dtype=float)
    days = recent.groupby([recent["identity"], recent["at"].dt.floor("D")])["volume"].sum()
    return ((days.groupby(level=0).max() - median) / scale).clip(lower=0.0)


def export_anomaly(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
                   start: pd.Timestamp, end: pd.Timestamp, baseline_days: int
                   ) -> float | None:
    """Robust z-score of the largest member-day volume in [start, end); 0 when none spikes.

    Baseline: each member's total volume per calendar day (UTC) on days they exported, over
    the baseline window; in the window each member's volume per calendar day too (a window
    that spans midnight never adds two days up). z = (volume - median) / max(1.4826 * MAD, 1),
    floored at 0. None with fewer than 5 baseline member-days or a silent export feed.
    """
    scores = _export_scores(frames, package, deployed_at, start, end, baseline_days)
    if scores is None:
        return None
    return float(scores.max()) if len(scores) else 0.0


def _escalations(frames: TelemetryFrames, package: PackageView, start: pd.Timestamp,
                 end: pd.Timestamp, privileged: Collection[str]) -> pd.DataFrame:
    oob = _out_of_band_adds(frames.assignments, start, end)
    oob = oob[oob["identity"].isin(package.members) & oob["entitlement"].isin(privileged)]
    return oob.drop_duplicates(["identity", "entitlement"])


def escalation_anomaly(frames: TelemetryFrames, package: PackageView,
                       deployed_at: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp,
                       privileged: Collection[str], baseline_days: int) -> float | None:
    """Distinct privileged grants added to members by anyone but wavekit in [start, end).

    None for an empty window or when the assignments feed never delivered anything since the
    baseline started.
    """
    if start >= end or not feed_alive(frames, "assignments",
                                      deployed_at - pd.Timedelta(days=baseline_days)):
        return None
    return float(len(_escalations(frames, package, start, end, privileged)))


def measure_package(
    frames: TelemetryFrames,
    package: PackageView,
    *,
    deployed_at: datetime,
    since: datetime,
    as_of: datetime,
    target_grants: GrantSet,
    baseline_days: int = 28,
    privileged: Collection[str] | None = None,
    suspended: GrantSet = frozenset(),
    from_history: bool = False,
) -> dict[str, float | None]:
    """Every health metric of `package` over the window [since, as_of) (keys: METRICS).

    None = no data, or too little to judge. `target_grants` are the package's scope on the
    target at `as_of`; with `from_history` they are wavekit's own record of it (bundles and
    writes) and the out-of-band changes since the deploy are replayed onto them first.
    `suspended`: grants containment took away on purpose. `privileged` defaults to the
    frames' privileged entitlements.
    """
    deployed, start, end = _ts(deployed_at), _ts(max(since, deployed_at)), _ts(as_of)
    priv = frames.privileged if privileged is None else privileged
    grants = (replay_out_of_band(target_grants, frames.assignments, package.scope, deployed,
                                 end) if from_history else target_grants)
    return {
        "adoption": adoption(frames, package, start, end),
        "access_drift": access_drift(frames, package, grants, deployed, end, baseline_days,
                                     suspended),
        "ticket_noise": ticket_noise(frames, package, deployed, start, end, baseline_days),
        "exception_growth": exception_growth(frames, package, deployed, start, end,
                                             baseline_days),
        "export_anomaly": export_anomaly(frames, package, deployed, start, end, baseline_days),
        "escalation_anomaly": escalation_anomaly(frames, package, deployed, start, end, priv,
                                                 baseline_days),
    }


def implicated(
    frames: TelemetryFrames,
    package: PackageView,
    metric: str,
    *,
    deployed_at: datetime,
    since: datetime,
    as_of: datetime,
    threshold: float,
    baseline_days: int = 28,
    privileged: Collection[str] | None = None,
) -> frozenset[str]:
    """The members behind an anomaly in [since, as_of): who containment suspends.

    export_anomaly: members whose volume scores above `threshold`; escalation_anomaly:
    members granted a privileged entitlement out of band. Empty for other metrics, or when
    the telemetry names nobody.
    """
    deployed, start, end = _ts(deployed_at), _ts(max(since, deployed_at)), _ts(as_of)
    if metric == "export_anomaly":
        scores = _export_scores(frames, package, deployed, start, end, baseline_days)
        if scores is None:
            return frozenset()
        return frozenset(str(i) for i in scores[scores > threshold].index)
    if metric == "escalation_anomaly":
        priv = frames.privileged if privileged is None else privileged
        return frozenset(_escalations(frames, package, start, end, priv)["identity"])
    return frozenset()


