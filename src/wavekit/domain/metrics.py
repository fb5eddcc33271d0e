"""Health metrics per package, as pure pandas functions of telemetry (the watch's measurements).

Every metric judges one window [since, as_of) after the deploy (the health check's window:
the interval since its previous due time, see `wavekit.domain.health.measurement_window`)
against a baseline from before launch, [deployed_at - baseline_days, deployed_at). Windows
are half-open. A metric is None ("no data") when the telemetry cannot support a value; the
watch then calls the measurement inconclusive instead of passing or failing it.

    adoption            members who used a granted entitlement in the window / members
    access_drift        at as_of: (intended grants missing on the target + out-of-band grants
                        of the package's entitlements still held) / intended grants
    ticket_noise        tickets per day in the window / tickets per day in the baseline
    exception_growth    exceptions per day in the window / per day in the baseline, minus 1
    export_anomaly      robust z-score of the largest member-day export volume in the window
                        against the members' daily volumes in the baseline (0 = no spike)
    escalation_anomaly  privileged grants added to members out of band in the window

No data. A feed that delivered nothing is not a quiet package:
- usage, tickets, exceptions and exports flow all the time, so a feed that delivered nothing
  at all (from any package) since the window started is silent: None;
- assignment changes are rare, so the assignments feed only has to have delivered something
  since the baseline started (a feed that stops later cannot be told from a quiet target).

Minimum baseline and minimum sample (ticket noise and exception growth are rates):
- the feed must reach back MIN_BASELINE_DAYS (14) before the deploy, and the baseline rate is
  taken over the days the feed covers (at most baseline_days);
- the baseline must hold MIN_BASELINE_EVENTS (5) of the package's events, or there is no rate
  to divide by: None (a window with no events at all is 0, whatever the baseline);
- a window rate above the baseline must rest on MIN_WINDOW_EVENTS (3) events: one or two
  tickets in a day say nothing about noise, so such a window is None, not a failure.
- export_anomaly needs MIN_EXPORT_BASELINE (5) member-days of exports in the baseline, over
  the same minimum coverage.

One computation for one package or many: `measure_packages` measures every package of a
batch in one vectorised pass per telemetry kind (each event is mapped to the packages whose
members, entitlements or key it names, then counted or grouped per package), and
`measure_package`, the watch's measurement, is that batch with one package in it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from wavekit.domain.clock import as_utc
from wavekit.domain.frames import WAVEKIT_ACTOR, TelemetryFrames
from wavekit.domain.grants import Grant, GrantSet
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

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Times = npt.NDArray[np.datetime64]


def _ts(value: datetime) -> pd.Timestamp:
    return pd.Timestamp(as_utc(value))


def _between(df: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    return df[(df["at"] >= start) & (df["at"] < end)]


def _out_of_band(assignments: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
                 ) -> pd.DataFrame:
    a = _between(assignments, start, end)
    return a[_not_wavekit(a)]


def _not_wavekit(assignments: pd.DataFrame) -> pd.Series:
    """Rows changed by anyone but wavekit (its actor name, whatever the case and spaces)."""
    return assignments["actor"].astype(str).str.strip().str.lower() != WAVEKIT_ACTOR


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


def grant_frame(grants: Iterable[Grant]) -> pd.DataFrame:
    """Grants as a frame with columns identity and entitlement (measure_packages' target)."""
    identity, entitlement = list(zip(*grants, strict=True)) or [(), ()]
    return pd.DataFrame({"identity": np.array(identity, dtype=object),
                         "entitlement": np.array(entitlement, dtype=object)})


# ------------------------------------------------------------------ one pass, many packages


@dataclass(frozen=True)
class PackageWindow:
    """One package to measure over [since, as_of), deployed at `deployed_at`.

    `suspended`: grants containment took away on purpose (they are not missing).
    """

    package: PackageView
    deployed_at: datetime
    since: datetime
    as_of: datetime
    suspended: GrantSet = frozenset()


def _naive(ts: pd.Timestamp) -> np.datetime64:
    """A UTC Timestamp as numpy's (naive) datetime64, to compare with `_times` exactly."""
    return np.datetime64(ts.tz_convert("UTC").tz_localize(None).as_unit("ns").to_datetime64())


def _times(df: pd.DataFrame) -> Times:
    """A frame's `at` column as naive datetime64 values in UTC."""
    at = df["at"]
    return np.asarray(at.to_numpy(dtype=f"datetime64[{at.dt.unit}]"))


def _isin(values: Ints, known: Ints) -> Bools:
    """Which of `values` are among `known` (hash lookups, not a sort of both)."""
    if not len(values) or not len(known):
        return np.zeros(len(values), dtype=bool)
    return np.asarray(pd.Series(values, copy=False).isin(known).to_numpy(), dtype=bool)


class _Numbered:
    """The values (identities, entitlements or keys) each package of a batch names, numbered,
    with the packages each value belongs to: a telemetry column maps to packages in one pass.
    """

    def __init__(self, groups: Sequence[Collection[str]], extra: Iterable[str] = ()) -> None:
        named = [v for g in groups for v in g]
        owner = np.repeat(np.arange(len(groups), dtype=np.int64),
                          [len(g) for g in groups])
        self.index = pd.Index(pd.unique(np.asarray([*named, *extra], dtype=object)),
                              dtype=object)
        self.size = len(self.index)
        codes = self.codes(named)
        order = np.argsort(codes, kind="stable")
        self._owner = owner[order]  # packages, grouped by value
        self._count = np.bincount(codes, minlength=self.size).astype(np.int64)
        self._first = np.cumsum(self._count) - self._count
        self.keys = np.unique(owner * self.size + codes)  # (package, value) pairs

    def codes(self, values: pd.Series | Sequence[str]) -> Ints:
        """Each value's number, -1 for a value no package names."""
        if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
            cats = self.index.get_indexer(values.cat.categories)
            raw = values.cat.codes.to_numpy()
            return np.where(raw >= 0, cats[raw], -1).astype(np.int64)
        if not len(values):
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.index.get_indexer(values), dtype=np.int64)

    def expand(self, codes: Ints) -> tuple[Ints, Ints]:
        """(row, package) for every package each row's value belongs to, rows in order."""
        known = codes >= 0
        if not self.size or not known.any():
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        c = np.where(known, codes, 0)
        n = np.where(known, self._count[c], 0)
        rows = np.repeat(np.arange(len(codes), dtype=np.int64), n)
        within = np.arange(len(rows), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
        return rows, self._owner[self._first[c[rows]] + within]

    def named_by(self, pkg: Ints, codes: Ints) -> Bools:
        """Whether package `pkg` names value `codes` (elementwise)."""
        return (codes >= 0) & _isin(pkg * self.size + codes, self.keys)


def _columns(parts: Iterable[tuple[Ints, Ints, Ints]]) -> tuple[Ints, Ints, Ints]:
    """Three parallel integer columns, concatenated part by part."""
    a: list[Ints] = []
    b: list[Ints] = []
    c: list[Ints] = []
    for x, y, z in parts:
        a.append(x)
        b.append(y)
        c.append(z)

    def cat(col: list[Ints]) -> Ints:
        return np.concatenate(col) if col else np.zeros(0, dtype=np.int64)

    return cat(a), cat(b), cat(c)


def _per_package(pkg: Ints, n: int) -> Ints:
    return np.bincount(pkg, minlength=n).astype(np.int64)


class _Scores(NamedTuple):
    """Export z-scores: `baseline[i]` says package i has a baseline (else None); then
    `score` of member `identity` (a number) of package `pkg`, one per member who exported."""

    baseline: list[bool]
    pkg: Ints
    identity: Ints
    score: npt.NDArray[np.float64]


class _Batch:
    """Packages measured together: per-package windows and the telemetry mapped onto them."""

    def __init__(self, frames: TelemetryFrames, packages: Sequence[PackageView],
                 deployed: Sequence[pd.Timestamp], start: Sequence[pd.Timestamp],
                 end: Sequence[pd.Timestamp], baseline_days: int,
                 privileged: Collection[str] | None = None) -> None:
        self.frames, self.packages, self.n = frames, packages, len(packages)
        self.deployed, self.start, self.end = list(deployed), list(start), list(end)
        self.baseline_days = baseline_days
        self.privileged = frozenset(frames.privileged if privileged is None else privileged)
        self.d = np.array([_naive(t) for t in self.deployed], dtype="datetime64[ns]")
        self.s = np.array([_naive(t) for t in self.start], dtype="datetime64[ns]")
        self.e = np.array([_naive(t) for t in self.end], dtype="datetime64[ns]")
        oob = self.out_of_band_adds
        self.ids = _Numbered([p.members for p in packages], oob["identity"])
        self.ents = _Numbered([p.entitlements for p in packages],
                              [*oob["entitlement"], *sorted(self.privileged)])
        self.keys = _Numbered([[p.key] for p in packages])

    @classmethod
    def of(cls, frames: TelemetryFrames, windows: Sequence[PackageWindow], baseline_days: int,
           privileged: Collection[str] | None = None) -> _Batch:
        return cls(frames, [w.package for w in windows], [_ts(w.deployed_at) for w in windows],
                   [_ts(max(w.since, w.deployed_at)) for w in windows],
                   [_ts(w.as_of) for w in windows], baseline_days, privileged)

    def alive(self, kind: str, since: Sequence[pd.Timestamp]) -> list[bool]:
        return [feed_alive(self.frames, kind, t) for t in since]

    @cached_property
    def assignments_alive(self) -> list[bool]:
        """The assignments feed delivered something since each baseline started."""
        bd = pd.Timedelta(days=self.baseline_days)
        return self.alive("assignments", [d - bd for d in self.deployed])

    @cached_property
    def out_of_band_adds(self) -> pd.DataFrame:
        """Grants added by anyone but wavekit (any time), in the feed's order."""
        a = self.frames.assignments
        return a[_not_wavekit(a) & (a["action"] == "add")]

    def _inside(self, at: Times, pkg: Ints, lo: Times, hi: Times) -> Bools:
        return np.asarray((at >= lo[pkg]) & (at < hi[pkg]), dtype=bool)

    # ---------------------------------------------------------------- adoption

    def adoption(self) -> list[float | None]:
        """Share of members who used any granted entitlement in [start, end)."""
        alive = self.alive("usage", self.start)
        u = self.frames.usage
        who = self.ids.codes(u["identity"])
        rows, pkg = self.ids.expand(who)
        keep = self._inside(_times(u)[rows], pkg, self.s, self.e)
        rows, pkg = rows[keep], pkg[keep]
        keep = self.ents.named_by(pkg, self.ents.codes(u["entitlement"])[rows])
        used = np.unique(pkg[keep] * self.ids.size + who[rows[keep]]) // self.ids.size
        count = _per_package(used, self.n)
        return [None if not p.members or s >= e or not ok else float(count[i]) / len(p.members)
                for i, (p, s, e, ok) in enumerate(zip(self.packages, self.start, self.end, alive,
                                                      strict=True))]

    # ---------------------------------------------------------------- access drift

    def access_drift(self, target: pd.DataFrame, suspended: Sequence[GrantSet]
                     ) -> list[float | None]:
        """(Intended grants missing + out-of-band grants still held) / intended, at `end`.

        `target`: the target's grants (identity, entitlement), shared by every package (each
        reads only its own entitlements' grants), or with a `package` column: each package's
        own. Grants suspended by containment are meant to be missing and do not count.
        """
        ids, ents, n_e = self.ids, self.ents, self.ents.size
        todo = [i for i, p in enumerate(self.packages)
                if p.members and p.entitlements and self.assignments_alive[i]]
        # Every intended grant: each package's members x its entitlements.
        i_pkg, i_id, i_ent = _columns(
            (np.full(len(p.members) * len(p.entitlements), i, dtype=np.int64),
             np.repeat(ids.codes(list(p.members)), len(p.entitlements)),
             np.tile(ents.codes(list(p.entitlements)), len(p.members)))
            for i in todo for p in (self.packages[i],))
        t_id, t_ent = ids.codes(target["identity"]), ents.codes(target["entitlement"])
        per_package = "package" in target.columns
        if per_package:
            rows, t_pkg = self.keys.expand(self.keys.codes(target["package"]))
            t_id, t_ent = t_id[rows], t_ent[rows]
        else:
            t_pkg = np.zeros(len(t_id), dtype=np.int64)
        on = (t_id >= 0) & (t_ent >= 0)
        t_id, t_ent, t_pkg = t_id[on], t_ent[on], t_pkg[on]

        def key(pkg: Ints, who: Ints, what: Ints) -> Ints:
            base = who * n_e + what
            return pkg * ids.size * n_e + base if per_package else base

        held_keys = key(t_pkg, t_id, t_ent)
        on_target = _per_package(i_pkg[_isin(key(i_pkg, i_id, i_ent), held_keys)], self.n)
        # Suspended grants of intended ones the target does not hold: held back on purpose.
        s_grants = [(i, g) for i in todo for g in suspended[i]]
        s_pkg = np.array([i for i, _ in s_grants], dtype=np.int64)
        s_id = ids.codes([g.identity for _, g in s_grants])
        s_ent = ents.codes([g.entitlement for _, g in s_grants])
        mine = ids.named_by(s_pkg, s_id) & ents.named_by(s_pkg, s_ent)
        mine &= ~_isin(key(s_pkg, s_id, s_ent), held_keys)
        s_keys = np.unique((s_pkg[mine] * ids.size + s_id[mine]) * n_e + s_ent[mine])
        held_back = _per_package(s_keys // (ids.size * n_e), self.n)
        # Out-of-band grants of the package's entitlements to non-members since the deploy.
        oob = self.out_of_band_adds
        rows, pkg = ents.expand(ents.codes(oob["entitlement"]))
        o_id = ids.codes(oob["identity"])[rows]
        o_ent = ents.codes(oob["entitlement"])[rows]
        keep = self._inside(_times(oob)[rows], pkg, self.d, self.e) & ~ids.named_by(pkg, o_id)
        pkg, o_id, o_ent = pkg[keep], o_id[keep], o_ent[keep]
        pairs = np.unique((pkg * ids.size + o_id) * n_e + o_ent)
        pkg, rest = pairs // (ids.size * n_e), pairs % (ids.size * n_e)
        still = _isin(key(pkg, rest // n_e, rest % n_e), held_keys)  # removed since: no longer
        extra = _per_package(pkg[still], self.n)
        out: list[float | None] = [None] * self.n
        for i in todo:
            p = self.packages[i]
            intended = len(p.members) * len(p.entitlements)
            missing = intended - int(on_target[i]) - int(held_back[i])
            out[i] = (missing + int(extra[i])) / intended
        return out

    # ---------------------------------------------------------------- ticket and exception rates

    def _counts(self, frame: pd.DataFrame) -> Callable[[Times, Times], Ints]:
        """Events of each package in per-package windows [lo, hi)."""
        rows, pkg = self.keys.expand(self.keys.codes(frame["package"]))
        at = _times(frame)[rows]
        return lambda lo, hi: _per_package(pkg[self._inside(at, pkg, lo, hi)], self.n)

    def _covered(self, kind: str) -> list[float]:
        return [baseline_days_covered(self.frames, kind, d, self.baseline_days)
                for d in self.deployed]

    def _rates(self, kind: str) -> tuple[list[float | None], Callable[[Times, Times], Ints]]:
        """Window rate / baseline rate per package (rate_ratio), and the counting function."""
        frame = getattr(self.frames, kind)
        count = self._counts(frame)
        covered = self._covered(kind)
        since = np.array([_naive(d - pd.Timedelta(days=c))
                          for d, c in zip(self.deployed, covered, strict=True)],
                         dtype="datetime64[ns]")
        window, before = count(self.s, self.e), count(since, self.d)
        alive = self.alive(kind, self.start)
        return [None if s >= e or not alive[i] else
                rate_ratio(int(window[i]), (e - s) / DAY, int(before[i]), covered[i])
                for i, (s, e) in enumerate(zip(self.start, self.end, strict=True))], count

    def ticket_noise(self) -> list[float | None]:
        """Tickets per day in [start, end) / tickets per day in the baseline (rate_ratio)."""
        return self._rates("tickets")[0]

    def exception_growth(self) -> list[float | None]:
        """Exceptions per day in [start, end) / per day in the baseline, minus 1.

        0 = as before launch, 1 = doubled, -1 = none at all (0 when there were none before
        either). The same minimum baseline and sample as ticket noise.
        """
        ratios, count = self._rates("exceptions")
        bd = pd.Timedelta(days=self.baseline_days)
        before = count(np.array([_naive(d - bd) for d in self.deployed],
                                dtype="datetime64[ns]"), self.d)
        return [None if r is None else (-1.0 if before[i] else 0.0) if r == 0.0 else r - 1.0
                for i, r in enumerate(ratios)]

    # ---------------------------------------------------------------- exports

    def export_scores(self) -> _Scores:
        """Each member's robust z-score in [start, end) (their largest calendar day)."""
        alive = self.alive("exports", self.start)
        covered = self._covered("exports")
        ok = [s < e and alive[i] and covered[i] >= MIN_BASELINE_DAYS
              for i, (s, e) in enumerate(zip(self.start, self.end, strict=True))]
        since = np.array([_naive(d - pd.Timedelta(days=c) if fine else d)
                          for d, c, fine in zip(self.deployed, covered, ok, strict=True)],
                         dtype="datetime64[ns]")
        x = self.frames.exports
        who = self.ids.codes(x["identity"])
        rows, pkg = self.ids.expand(who)
        measured = np.asarray(ok, dtype=bool)[pkg] if self.n else np.zeros(0, dtype=bool)
        rows, pkg = rows[measured], pkg[measured]
        at = _times(x)
        day = at.astype("datetime64[D]").astype(np.int64)  # UTC calendar days (at >= 1970)
        first = int(day.min()) if len(day) else 0
        days = int(day.max()) - first + 1 if len(day) else 1
        volume = x["volume"].to_numpy(dtype=np.float64)
        at, who, day, volume = at[rows], who[rows], day[rows] - first, volume[rows]
        member = pkg * self.ids.size + who

        def daily(keep: Bools) -> pd.Series:
            # Each member's volume per calendar day, summed in the feed's order (pandas'
            # compensated group sum, as a per-package groupby would).
            return pd.Series(volume[keep]).groupby(member[keep] * days + day[keep],
                                                   sort=False).sum()

        base = daily(self._inside(at, pkg, since, self.d))
        base_pkg = np.asarray(base.index.to_numpy() // days // self.ids.size, dtype=np.int64)
        enough = _per_package(base_pkg, self.n) >= MIN_EXPORT_BASELINE
        values = base.to_numpy()
        median = pd.Series(values).groupby(base_pkg).median()
        deviation = pd.Series(np.abs(values - median.reindex(base_pkg).to_numpy()))
        mad = deviation.groupby(base_pkg).median()
        scale = {int(i): max(MAD_TO_SIGMA * float(m), MIN_EXPORT_SCALE) for i, m in mad.items()}
        recent = daily(self._inside(at, pkg, self.s, self.e))
        peak = recent.groupby(recent.index.to_numpy() // days).max()
        peak_member = np.asarray(peak.index.to_numpy(), dtype=np.int64)
        peak_pkg = peak_member // self.ids.size
        scored = enough[peak_pkg]
        peak_pkg, peak_member = peak_pkg[scored], peak_member[scored]
        centre = median.reindex(peak_pkg).to_numpy()
        spread = np.array([scale[int(i)] for i in peak_pkg], dtype=np.float64)
        score = ((pd.Series(peak.to_numpy()[scored]) - centre) / spread).clip(lower=0.0)
        return _Scores([bool(ok[i] and enough[i]) for i in range(self.n)], peak_pkg,
                       peak_member % self.ids.size, score.to_numpy())

    def export_anomaly(self) -> list[float | None]:
        """Robust z-score of the largest member-day volume in [start, end); 0 when none spikes.

        Baseline: each member's total volume per calendar day (UTC) on days they exported,
        over the baseline window; in the window each member's volume per calendar day too (a
        window that spans midnight never adds two days up). z = (volume - median) /
        max(1.4826 * MAD, 1), floored at 0. None with fewer than 5 baseline member-days or a
        silent export feed.
        """
        found = self.export_scores()
        top = pd.Series(found.score).groupby(found.pkg).max()
        return [None if not has else float(top[i]) if i in top.index else 0.0
                for i, has in enumerate(found.baseline)]

    # ---------------------------------------------------------------- escalations

    def escalations(self) -> tuple[Ints, Ints]:
        """(package, member number) per distinct privileged grant added to a member by
        anyone but wavekit in [start, end)."""
        oob = self.out_of_band_adds
        oob = oob[oob["entitlement"].isin(self.privileged)]
        who = self.ids.codes(oob["identity"])
        rows, pkg = self.ids.expand(who)
        keep = self._inside(_times(oob)[rows], pkg, self.s, self.e)
        rows, pkg = rows[keep], pkg[keep]
        n_e = self.ents.size
        grants = np.unique((pkg * self.ids.size + who[rows]) * n_e
                           + self.ents.codes(oob["entitlement"])[rows])
        return grants // n_e // self.ids.size, grants // n_e % self.ids.size

    def escalation_anomaly(self) -> list[float | None]:
        """Distinct privileged grants added to members by anyone but wavekit in [start, end).

        None for an empty window or when the assignments feed never delivered anything since
        the baseline started.
        """
        count = _per_package(self.escalations()[0], self.n)
        return [None if s >= e or not self.assignments_alive[i] else float(count[i])
                for i, (s, e) in enumerate(zip(self.start, self.end, strict=True))]


def measure_packages(
    frames: TelemetryFrames,
    windows: Sequence[PackageWindow],
    target: pd.DataFrame,
    *,
    baseline_days: int = 28,
    privileged: Collection[str] | None = None,
) -> list[dict[str, float | None]]:
    """Every health metric of every window's package (keys: METRICS), in the windows' order.

    `target`: the target's grants at each window's `as_of`, as a frame (identity,
    entitlement; see grant_frame) every package reads its own entitlements' grants from,
    or with a `package` column naming the package each grant is read for. `privileged`
    defaults to the frames' privileged entitlements.
    """
    b = _Batch.of(frames, windows, baseline_days, privileged)
    columns = {
        "adoption": b.adoption(),
        "access_drift": b.access_drift(target, [w.suspended for w in windows]),
        "ticket_noise": b.ticket_noise(),
        "exception_growth": b.exception_growth(),
        "export_anomaly": b.export_anomaly(),
        "escalation_anomaly": b.escalation_anomaly(),
    }
    return [{m: columns[m][i] for m in METRICS} for i in range(len(windows))]


# ------------------------------------------------------------------ one package


def _one(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
         start: pd.Timestamp, end: pd.Timestamp, baseline_days: int = 28,
         privileged: Collection[str] | None = None) -> _Batch:
    return _Batch(frames, [package], [deployed_at], [start], [end], baseline_days, privileged)


def adoption(frames: TelemetryFrames, package: PackageView, start: pd.Timestamp,
             end: pd.Timestamp) -> float | None:
    """Share of members who used any granted entitlement in [start, end).

    None without members, for an empty window, or when the usage feed delivered nothing
    since `start` (a silent feed must not read as nobody using the role).
    """
    return _one(frames, package, start, start, end).adoption()[0]


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
    return _one(frames, package, deployed_at, deployed_at, end, baseline_days).access_drift(
        grant_frame(target_grants), [suspended])[0]


def ticket_noise(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
                 start: pd.Timestamp, end: pd.Timestamp, baseline_days: int
                 ) -> float | None:
    """Tickets per day in [start, end) / tickets per day in the baseline (see rate_ratio)."""
    return _one(frames, package, deployed_at, start, end, baseline_days).ticket_noise()[0]


def exception_growth(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
                     start: pd.Timestamp, end: pd.Timestamp, baseline_days: int
                     ) -> float | None:
    """Exceptions per day in [start, end) / per day in the baseline, minus 1 (see
    _Batch.exception_growth)."""
    return _one(frames, package, deployed_at, start, end, baseline_days).exception_growth()[0]


def export_anomaly(frames: TelemetryFrames, package: PackageView, deployed_at: pd.Timestamp,
                   start: pd.Timestamp, end: pd.Timestamp, baseline_days: int
                   ) -> float | None:
    """Robust z-score of the largest member-day volume in [start, end) (see
    _Batch.export_anomaly)."""
    return _one(frames, package, deployed_at, start, end, baseline_days).export_anomaly()[0]


def escalation_anomaly(frames: TelemetryFrames, package: PackageView,
                       deployed_at: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp,
                       privileged: Collection[str], baseline_days: int) -> float | None:
    """Distinct privileged grants added to members by anyone but wavekit in [start, end)."""
    return _one(frames, package, deployed_at, start, end, baseline_days,
                privileged).escalation_anomaly()[0]


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
    frames' privileged entitlements. The batch of one of measure_packages.
    """
    grants = (replay_out_of_band(target_grants, frames.assignments, package.scope,
                                 _ts(deployed_at), _ts(as_of))
              if from_history else target_grants)
    window = PackageWindow(package, deployed_at, since, as_of, suspended)
    return measure_packages(frames, [window], grant_frame(grants), baseline_days=baseline_days,
                            privileged=privileged)[0]


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
    b = _Batch.of(frames, [PackageWindow(package, deployed_at, since, as_of)], baseline_days,
                  privileged)
    if metric == "export_anomaly":
        found = b.export_scores()
        who: Iterable[int] = found.identity[found.score > threshold] if found.baseline[0] else ()
    elif metric == "escalation_anomaly":
        who = b.escalations()[1]
    else:
        return frozenset()
    return frozenset(str(b.ids.index[i]) for i in who)


def window_start(deployed_at: datetime, as_of: datetime, baseline_days: int = 28) -> datetime:
    """The earliest telemetry any metric reads: the start of the baseline."""
    del as_of  # every window lies after the deploy
    return as_utc(deployed_at) - timedelta(days=baseline_days)
