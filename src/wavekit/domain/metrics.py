"""Health metrics per package, as pure pandas functions of telemetry (the watch's measurements).

Windows are half-open, [start, end): "since deploy" is [deployed_at, as_of), the baseline is
[deployed_at - baseline_days, deployed_at). A metric is None when the data cannot support a
value; the watch then calls the check inconclusive instead of failing the package.

    adoption            members who used a granted entitlement since deploy / members
    access_drift        (intended grants missing on the target + out-of-band grants of the
                        package's entitlements still held) / intended grants
    ticket_noise        tickets per day since deploy / baseline tickets per day (the baseline
                        counts at least 1 ticket, so a quiet baseline never divides by zero)
    exception_growth    (exceptions in the last 7 days - the 7 days before) / max(before, 1)
    export_anomaly      robust z-score of the largest member export volume in the last 24 h
                        against the members' daily volumes in the baseline (0 = no spike)
    escalation_anomaly  privileged grants added to members out of band since deploy
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import pandas as pd

from wavekit.domain.clock import as_utc
from wavekit.domain.frames import WAVEKIT_ACTOR, TelemetryFrames
from wavekit.domain.grants import GrantSet, by_entitlement
from wavekit.domain.packages import PackageView

METRICS = ("adoption", "access_drift", "ticket_noise", "exception_growth", "export_anomaly",
           "escalation_anomaly")
EXCEPTION_WINDOW = timedelta(days=7)
EXPORT_WINDOW = timedelta(days=1)
MIN_TICKET_WINDOW = timedelta(days=1)  # a rate over a few hours swings on one ticket
MIN_EXPORT_BASELINE = 5  # member-days needed before a median and MAD mean anything
MAD_TO_SIGMA = 1.4826  # scales the MAD to a standard deviation for normal data
MIN_EXPORT_SCALE = 1.0  # volume units; a perfectly regular baseline would make any change infinite
DAY = timedelta(days=1)


def _ts(value: datetime) -> pd.Timestamp:
    return pd.Timestamp(as_utc(value))


def _between(df: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    return df[(df["at"] >= start) & (df["at"] < end)]


def _out_of_band_adds(assignments: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
                      ) -> pd.DataFrame:
    a = _between(assignments, start, end)
    actor = a["actor"].astype(str).str.strip().str.lower()
    return a[(a["action"] == "add") & (actor != WAVEKIT_ACTOR)]


def adoption(frames: TelemetryFrames, package: PackageView, start: pd.Timestamp,
             end: pd.Timestamp) -> float | None:
    """Share of members who used any granted entitlement in [start, end).

    None without members, or when the usage feed has delivered nothing since `start` (a
    silent feed must not read as nobody using the role).
    """
    last = frames.latest.get("usage")
    if not package.members or last is None or last < start:
        return None
    u = _between(frames.usage, start, end)
    used = u.loc[u["identity"].isin(package.members)
                 & u["entitlement"].isin(package.entitlements), "identity"].nunique()
    return float(used) / len(package.members)


def access_drift(frames: TelemetryFrames, package: PackageView, target_grants: GrantSet,
                 start: pd.Timestamp, end: pd.Timestamp) -> float | None:
    """Intended grants missing on the target plus out-of-band grants still held, / intended."""
    intended = len(package.members) * len(package.entitlements)
    if intended == 0:
        return None
    holders = by_entitlement(target_grants)
    missing = sum(len(package.members - holders.get(e, set())) for e in package.entitlements)
    oob = _out_of_band_adds(frames.assignments, start, end)
    oob = oob[oob["entitlement"].isin(package.entitlements)
              & ~oob["identity"].isin(package.members)]
    pairs = set(zip(oob["identity"], oob["entitlement"], strict=True))
    extra = len(pairs & target_grants)  # removed again since: no longer a difference
    return (missing + extra) / intended


def ticket_noise(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
                 as_of: pd.Timestamp, baseline_days: int) -> float | None:
    """Tickets per day since deploy / baseline tickets per day (floor: 1 per baseline window).

    None until a full day has passed since deploy.
    """
    elapsed = as_of - deployed_at
    if elapsed < MIN_TICKET_WINDOW or baseline_days < 1:
        return None
    t = frames.tickets[frames.tickets["package"] == package.key]
    after = len(_between(t, deployed_at, as_of))
    before = len(_between(t, deployed_at - pd.Timedelta(days=baseline_days), deployed_at))
    rate_after = after / (elapsed / DAY)
    rate_before = max(before, 1) / baseline_days
    return float(rate_after / rate_before)


def exception_growth(frames: TelemetryFrames, package: PackageView, as_of: pd.Timestamp
                     ) -> float:
    """(exceptions in [as_of-7d, as_of) - in [as_of-14d, as_of-7d)) / max(previous, 1)."""
    e = frames.exceptions[frames.exceptions["package"] == package.key]
    last = len(_between(e, as_of - EXCEPTION_WINDOW, as_of))
    previous = len(_between(e, as_of - 2 * EXCEPTION_WINDOW, as_of - EXCEPTION_WINDOW))
    return (last - previous) / max(previous, 1)


def export_anomaly(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
                   as_of: pd.Timestamp, baseline_days: int) -> float | None:
    """Robust z-score of the largest member volume in the last 24 h; 0 when nothing spikes.

    Baseline: each member's total volume per calendar day (UTC) on days they exported, over
    the baseline window; z = (latest - median) / max(1.4826 * MAD, 1). None with fewer than
    5 baseline member-days.
    """
    x = frames.exports[frames.exports["identity"].isin(package.members)]
    base = _between(x, deployed_at - pd.Timedelta(days=baseline_days), deployed_at)
    daily = base.groupby([base["identity"], base["at"].dt.floor("D")])["volume"].sum()
    if len(daily) < MIN_EXPORT_BASELINE:
        return None
    median = float(daily.median())
    scale = max(MAD_TO_SIGMA * float((daily - median).abs().median()), MIN_EXPORT_SCALE)
    recent = _between(x, max(as_of - EXPORT_WINDOW, deployed_at), as_of)
    latest = float(recent.groupby("identity")["volume"].sum().max()) if len(recent) else 0.0
    return max((latest - median) / scale, 0.0)


def escalation_anomaly(frames: TelemetryFrames, package: PackageView,
                       start: pd.Timestamp, end: pd.Timestamp,
                       privileged: Collection[str]) -> float:
    """Distinct privileged grants added to members by anyone but wavekit in [start, end)."""
    oob = _out_of_band_adds(frames.assignments, start, end)
    oob = oob[oob["identity"].isin(package.members) & oob["entitlement"].isin(privileged)]
    return float(len(oob.drop_duplicates(["identity", "entitlement"])))


def measure_package(
    frames: TelemetryFrames,
    package: PackageView,
    *,
    deployed_at: datetime,
    as_of: datetime,
    target_grants: GrantSet,
    baseline_days: int = 28,
    privileged: Collection[str] | None = None,
) -> dict[str, float | None]:
    """Every health metric of `package` as of `as_of` (keys: METRICS; None = not enough data).

    `privileged` defaults to the frames' privileged entitlements.
    """
    start, end = _ts(deployed_at), _ts(as_of)
    priv = frames.privileged if privileged is None else privileged
    return {
        "adoption": adoption(frames, package, start, end),
        "access_drift": access_drift(frames, package, target_grants, start, end),
        "ticket_noise": ticket_noise(frames, package, start, end, baseline_days),
        "exception_growth": exception_growth(frames, package, end),
        "export_anomaly": export_anomaly(frames, package, start, end, baseline_days),
        "escalation_anomaly": escalation_anomaly(frames, package, start, end, priv),
    }


def window_start(deployed_at: datetime, as_of: datetime, baseline_days: int = 28) -> datetime:
    """The earliest telemetry any metric reads: the baseline start or two exception weeks back."""
    return min(as_utc(deployed_at) - timedelta(days=baseline_days),
               as_utc(as_of) - 2 * EXCEPTION_WINDOW)
