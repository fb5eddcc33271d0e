"""Synthetic telemetry for the demo and benchmarks: deterministic, vectorised, one bad package.

Days are counted from `deployed_at` (day k covers [deployed_at + k days, + k+1 days)), so
pre-launch baselines and post-launch behaviour never straddle the launch.

- usage: each member adopts with probability `adoption_final`, at an exponential time
  (mean `adoption_tau_days`) after launch: adoption(t) = final * (1 - exp(-t / tau)); from
  then on `uses_per_day` events a day (Poisson) on the package's entitlements.
- tickets and exceptions: a per-package daily rate, before and after launch; counts are drawn
  by systematic sampling (one random phase per package) so any window holds the expected
  count rounded up or down, never a lucky burst that would fail a healthy package.
- exports: every member exports on a day with probability `export_probability`, a volume
  around `export_median` (log-normal, clipped at 2 sigma).
- assignments: wavekit's own adds at launch (actor "wavekit").
- `degrading`: adoption stalls at `degraded_adoption`; the ticket rate climbs by
  `ticket_slope` baselines a day (1.75x on day 1, 3.25x on day 2, 4.75x on day 3) and
  exceptions by `exception_slope`: the watch fails it on ticket noise from day 2, exception
  growth by day 2-3 and adoption from day 3.
- `anomaly`: on the last day one member bulk-exports `spike_factor` x the median and is
  granted a privileged entitlement out of band (actor "it-helpdesk").
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlmodel import select

from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Entitlement, RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.clock import as_utc
from wavekit.domain.frames import COLUMNS, KINDS, WAVEKIT_ACTOR
from wavekit.domain.packages import PackageView
from wavekit.domain.states import PackageState

DAY_S = 86_400.0
TICKET_CATEGORIES = np.array(["access-request", "how-to", "missing-access", "error"])
EXCEPTION_REASONS = np.array(["business-justification", "temporary-elevation", "sod-waiver"])
OUT_OF_BAND_ACTOR = "it-helpdesk"


@dataclass(frozen=True)
class SynthProfile:
    """The generator's knobs; the defaults keep healthy packages well inside the watch's limits."""

    adoption_final: float = 0.9
    adoption_tau_days: float = 1.0
    degraded_adoption: float = 0.25
    uses_per_day: float = 2.0
    tickets_per_member_day: float = 0.05
    min_tickets_per_day: float = 2.0  # ceil(r)/r stays <= 1.5 on a package's first day
    exceptions_per_member_day: float = 0.02
    min_exceptions_per_day: float = 1.0
    ticket_slope: float = 1.5  # degrading: rate = baseline * min(1 + slope * t, cap)
    ticket_cap: float = 6.0
    exception_slope: float = 5.0
    exception_cap: float = 12.0
    export_probability: float = 0.3
    export_median: float = 200.0
    export_sigma: float = 0.3
    spike_factor: float = 50.0


def _views(database_url: str, keys: Collection[str] | None) -> tuple[list[PackageView],
                                                                      list[str]]:
    with session_scope(database_url) as s:
        wanted = sorted(keys) if keys is not None else list(
            s.exec(select(RolePackage.key).order_by(RolePackage.key)))
        views = [load_package_view(s, k) for k in wanted]
        privileged = sorted(s.exec(select(Entitlement.key)
                                   .where(Entitlement.privileged == True)))  # noqa: E712
    return views, privileged


def synthetic_packages(n_packages: int, members: int, entitlements: int, *,
                       prefix: str = "bench") -> list[PackageView]:
    """Packages with disjoint made-up members and entitlements, for benchmarks at any scale."""
    return [PackageView(
        key=f"{prefix}-{p:04d}", name=f"Bench package {p}", state=PackageState.WATCHING,
        members=frozenset(f"{prefix}-u{p:04d}-{i:06d}" for i in range(members)),
        entitlements=frozenset(f"{prefix}-e{p:04d}-{j:03d}" for j in range(entitlements)),
    ) for p in range(n_packages)]


def _systematic_counts(rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer counts per (row, day) whose sums over any run of days round the expected sum."""
    phase = rng.random((rates.shape[0], 1))
    cum = np.floor(np.cumsum(rates, axis=1) + phase)
    return np.diff(np.concatenate([np.floor(phase), cum], axis=1), axis=1).astype(np.int64)


def _events(counts: np.ndarray, day0: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """(row index, days since launch) of every event, uniformly placed inside its day."""
    rows, days = np.nonzero(counts)
    n = counts[rows, days]
    row = np.repeat(rows, n)
    t = np.repeat(days + day0, n) + rng.random(n.sum())
    return row, t


def _frame(kind: str, deployed_at: pd.Timestamp, t: np.ndarray, start: pd.Timestamp,
           end: pd.Timestamp, **cols: np.ndarray) -> pd.DataFrame:
    at = deployed_at + pd.to_timedelta(np.round(t * DAY_S), unit="s")
    df = pd.DataFrame({**cols, "at": at})
    df = df[(df["at"] >= start) & (df["at"] < end)]
    return df[list(COLUMNS[kind])].sort_values("at", kind="stable").reset_index(drop=True)


def generate_telemetry(
    source: str | Sequence[PackageView],
    *,
    start: datetime,
    deployed_at: datetime,
    days: float,
    degrading: str | None = None,
    anomaly: str | None = None,
    seed: int = 0,
    packages: Collection[str] | None = None,
    privileged: Sequence[str] | None = None,
    profile: SynthProfile = SynthProfile(),
) -> dict[str, pd.DataFrame]:
    """Telemetry in [start, start + days) for packages launched at `deployed_at`, per kind.

    `source` is a store URL (its packages, or `packages` keys among them, and its privileged
    entitlements) or PackageViews. Same inputs and seed, same frames.
    """
    if isinstance(source, str):
        views, priv = _views(source, packages)
    else:
        views = [v for v in source if packages is None or v.key in packages]
        priv = []
    priv = list(privileged) if privileged is not None else priv
    views = [v for v in views if v.members]  # nobody to use, ask or export: no telemetry
    rng = np.random.default_rng(seed)
    launch = pd.Timestamp(as_utc(deployed_at))
    t0, t1 = pd.Timestamp(as_utc(start)), pd.Timestamp(as_utc(start) + timedelta(days=days))
    day0 = math.floor((t0 - launch) / pd.Timedelta(days=1))
    n_days = max(math.ceil((t1 - launch) / pd.Timedelta(days=1)) - day0, 0)
    keys = np.array([v.key for v in views], dtype=object)
    degrade = keys == degrading
    mid = np.arange(day0, day0 + n_days) + 0.5  # each day's midpoint, days since launch
    after = np.clip(mid, 0, None) * (mid > 0)

    members = [np.array(sorted(v.members), dtype=object) for v in views]
    ents = [np.array(sorted(v.entitlements), dtype=object) for v in views]
    sizes = np.array([len(m) for m in members], dtype=float)

    # Tickets and exceptions: baseline rates, multiplied for the degrading package after launch.
    def counts(per_member: float, floor: float, slope: float, cap: float) -> np.ndarray:
        base = np.maximum(sizes * per_member, floor)[:, None] * np.ones((1, n_days))
        mult = np.where(degrade[:, None], np.minimum(1 + slope * after, cap), 1.0)
        return _systematic_counts(base * mult, rng)

    pkg_row, t = _events(counts(profile.tickets_per_member_day, profile.min_tickets_per_day,
                                profile.ticket_slope, profile.ticket_cap), day0, rng)
    tickets = _frame("tickets", launch, t, t0, t1, package=keys[pkg_row],
                     category=TICKET_CATEGORIES[rng.integers(0, len(TICKET_CATEGORIES),
                                                             len(t))])
    pkg_row, t = _events(counts(profile.exceptions_per_member_day,
                                profile.min_exceptions_per_day, profile.exception_slope,
                                profile.exception_cap), day0, rng)
    # Each exception names a random member of its package.
    who = _pick(members, pkg_row, rng)
    exceptions = _frame("exceptions", launch, t, t0, t1, package=keys[pkg_row], identity=who,
                        reason=EXCEPTION_REASONS[rng.integers(0, len(EXCEPTION_REASONS),
                                                              len(t))])

    usage = _usage(views, members, ents, degrade, launch, t0, t1, day0, n_days, rng, profile)
    exports = _exports(members, launch, t0, t1, day0, n_days, rng, profile)
    assignments = _assignments(members, ents, launch, t0, t1)

    if anomaly is not None and anomaly in set(keys):
        p = int(np.flatnonzero(keys == anomaly)[0])
        last = (t1 - launch) / pd.Timedelta(days=1) - 0.5  # midway through the last day
        spiker = members[p][:1]
        if len(spiker):
            spike = _frame("exports", launch, np.array([last]), t0, t1, identity=spiker,
                           volume=np.array([profile.export_median * profile.spike_factor]))
            exports = pd.concat([exports, spike], ignore_index=True)
            if priv:
                esc = _frame("assignments", launch, np.array([last]), t0, t1,
                             identity=spiker, entitlement=np.array(priv[:1], dtype=object),
                             action=np.array(["add"]), actor=np.array([OUT_OF_BAND_ACTOR]))
                assignments = pd.concat([assignments, esc], ignore_index=True)
    return {"usage": usage, "tickets": tickets, "exceptions": exceptions, "exports": exports,
            "assignments": assignments}


def _pick(groups: list[np.ndarray], group_row: np.ndarray, rng: np.random.Generator
          ) -> np.ndarray:
    """One random element of groups[g] for every g in `group_row`, vectorised."""
    flat = np.concatenate(groups) if groups else np.array([], dtype=object)
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(groups) else sizes
    if not len(group_row):
        return np.array([], dtype=object)
    k = sizes[group_row]
    idx = offsets[group_row] + np.floor(rng.random(len(group_row)) * np.maximum(k, 1))
    return np.where(k > 0, flat[np.minimum(idx, len(flat) - 1).astype(np.int64)], "")


def _usage(views: list[PackageView], members: list[np.ndarray], ents: list[np.ndarray],
           degrade: np.ndarray, launch: pd.Timestamp, t0: pd.Timestamp, t1: pd.Timestamp,
           day0: int, n_days: int, rng: np.random.Generator, profile: SynthProfile
           ) -> pd.DataFrame:
    pkg = np.repeat(np.arange(len(views)), [len(m) for m in members])
    ident = np.concatenate(members) if members else np.array([], dtype=object)
    final = np.where(degrade[pkg], profile.degraded_adoption, profile.adoption_final)
    adopts = (rng.random(len(pkg)) < final) & np.array([len(e) > 0 for e in ents])[pkg]
    first = rng.exponential(profile.adoption_tau_days, len(pkg))
    pkg, ident, first = pkg[adopts], ident[adopts], first[adopts]
    last_day = day0 + n_days
    # Day slots from each adopter's first use to the end of the horizon.
    start_day = np.floor(first).astype(np.int64)
    n_slots = np.clip(last_day - start_day, 0, None)
    row = np.repeat(np.arange(len(pkg)), n_slots)
    slot = (np.arange(n_slots.sum()) - np.repeat(np.cumsum(n_slots) - n_slots, n_slots)
            + np.repeat(start_day, n_slots))
    n = rng.poisson(profile.uses_per_day, len(row))
    ev_row = np.repeat(row, n)
    t = np.repeat(slot, n) + rng.random(n.sum())
    keep = t >= first[ev_row]
    ev_row, t = ev_row[keep], t[keep]
    # Every adopter's first use happens exactly at their adoption time.
    ev_row = np.concatenate([np.arange(len(pkg)), ev_row])
    t = np.concatenate([first, t])
    return _frame("usage", launch, t, t0, t1, identity=ident[ev_row],
                  entitlement=_pick(ents, pkg[ev_row], rng))


def _exports(members: list[np.ndarray], launch: pd.Timestamp, t0: pd.Timestamp,
             t1: pd.Timestamp, day0: int, n_days: int, rng: np.random.Generator,
             profile: SynthProfile) -> pd.DataFrame:
    people = np.array(sorted(set().union(*map(set, members))) if members else [], dtype=object)
    exporting = rng.random((len(people), n_days)) < profile.export_probability
    rows, days = np.nonzero(exporting)
    noise = np.clip(rng.normal(0, profile.export_sigma, len(rows)),
                    -2 * profile.export_sigma, 2 * profile.export_sigma)
    volume = np.round(profile.export_median * np.exp(noise))
    t = days + day0 + rng.random(len(rows))
    return _frame("exports", launch, t, t0, t1, identity=people[rows], volume=volume)


def _assignments(members: list[np.ndarray], ents: list[np.ndarray], launch: pd.Timestamp,
                 t0: pd.Timestamp, t1: pd.Timestamp) -> pd.DataFrame:
    """wavekit's own adds at launch (one per intended grant), as a target's audit feed shows."""
    pairs = [(np.repeat(m, len(e)), np.tile(e, len(m))) for m, e in zip(members, ents,
                                                                          strict=True)]
    ident = np.concatenate([p[0] for p in pairs]) if pairs else np.array([], dtype=object)
    ent = np.concatenate([p[1] for p in pairs]) if pairs else np.array([], dtype=object)
    n = len(ident)
    return _frame("assignments", launch, np.zeros(n), t0, t1, identity=ident, entitlement=ent,
                  action=np.full(n, "add", dtype=object),
                  actor=np.full(n, WAVEKIT_ACTOR, dtype=object))


def write_telemetry(frames: dict[str, pd.DataFrame], directory: str | Path) -> dict[str, Path]:
    """Write each kind as `<kind>.csv` in the documented format (timestamps ISO 8601, UTC)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for kind in KINDS:
        if kind not in frames:
            continue
        df = frames[kind][list(COLUMNS[kind])].copy()
        # numpy formats a million timestamps in a blink; strftime takes seconds.
        naive = pd.to_datetime(df["at"], utc=True).dt.tz_localize(None).to_numpy()
        df["at"] = pd.Series(np.datetime_as_string(naive, unit="s"), index=df.index) + "Z"
        path = out / f"{kind}.csv"
        df.to_csv(path, index=False)
        written[kind] = path
    return written
