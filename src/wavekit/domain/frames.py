"""Telemetry as one DataFrame per kind: the value the health metrics are pure functions of."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

KINDS = ("usage", "tickets", "exceptions", "exports", "assignments")
COLUMNS: dict[str, tuple[str, ...]] = {
    "usage": ("identity", "entitlement", "at"),
    "tickets": ("package", "at", "category"),
    "exceptions": ("package", "identity", "at", "reason"),
    "exports": ("identity", "at", "volume"),
    "assignments": ("identity", "entitlement", "action", "at", "actor"),
}
OPTIONAL: dict[str, frozenset[str]] = {
    "tickets": frozenset({"category"}), "exceptions": frozenset({"reason"}),
}
ACTIONS = ("add", "remove")
WAVEKIT_ACTOR = "wavekit"  # assignment changes by this actor are wavekit's own deploys


def utc_timestamp(value: Any) -> pd.Timestamp:
    """A pandas Timestamp in UTC; naive values are taken to be UTC already."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _empty(kind: str) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS[kind]})
    df["at"] = pd.Series(dtype="datetime64[us, UTC]")
    if kind == "exports":
        df["volume"] = pd.Series(dtype=float)
    return df


def _normalise(kind: str, df: pd.DataFrame | None) -> pd.DataFrame:
    """A frame with exactly the kind's columns, `at` as UTC datetimes, volume as float."""
    if df is None or df.empty:
        return _empty(kind)
    out = df.reindex(columns=list(COLUMNS[kind])).copy()
    out["at"] = pd.to_datetime(out["at"], utc=True, format="ISO8601")
    for col in COLUMNS[kind]:
        if col == "volume":
            out[col] = out[col].astype(float)
        elif col != "at":
            out[col] = out[col].fillna("").astype(object)
    return out.reset_index(drop=True)


@dataclass(frozen=True, eq=False)  # DataFrames do not compare to one bool
class TelemetryFrames:
    """Telemetry as one DataFrame per kind (columns as in the files, `at` in UTC)."""

    usage: pd.DataFrame
    tickets: pd.DataFrame
    exceptions: pd.DataFrame
    exports: pd.DataFrame
    assignments: pd.DataFrame
    privileged: frozenset[str] = frozenset()
    # Latest event time of each kind in the store (unscoped): tells a silent feed from a
    # quiet package. A kind missing here has never delivered anything.
    latest: Mapping[str, pd.Timestamp] = field(default_factory=dict)
    # Earliest event time of each kind in the store (unscoped): how far back a baseline can
    # reach, so a feed that started last week never reads as four quiet weeks.
    earliest: Mapping[str, pd.Timestamp] = field(default_factory=dict)

    @classmethod
    def build(cls, *, privileged: Iterable[str] = (),
              latest: Mapping[str, Any] | None = None,
              earliest: Mapping[str, Any] | None = None, **frames: pd.DataFrame | None
              ) -> TelemetryFrames:
        """Frames from DataFrames (any kind may be left out).

        `latest` and `earliest` default to the frames' own last and first event times.
        """
        unknown = set(frames) - set(KINDS)
        if unknown:
            raise TypeError(f"unknown telemetry kind(s): {', '.join(sorted(unknown))}")
        norm = {k: _normalise(k, frames.get(k)) for k in KINDS}

        def bounds(given: Mapping[str, Any] | None, agg: str) -> dict[str, pd.Timestamp]:
            if given is None:
                return {k: getattr(norm[k]["at"], agg)() for k in KINDS if len(norm[k])}
            return {k: utc_timestamp(v) for k, v in given.items() if v is not None}

        return cls(**norm, privileged=frozenset(privileged), latest=bounds(latest, "max"),
                   earliest=bounds(earliest, "min"))

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {k: getattr(self, k) for k in KINDS}
