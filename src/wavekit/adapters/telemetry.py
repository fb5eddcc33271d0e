"""Telemetry ingestion: usage, tickets, exceptions, exports and assignment changes, via pandas.

One file per kind, CSV or JSON (an array of records, or JSON lines in .jsonl/.ndjson):

    usage        identity, entitlement, at                 someone used an entitlement
    tickets      package, at[, category]                   a support ticket about a package
    exceptions   package, identity, at[, reason]           a policy exception granted
    exports      identity, at, volume                      a data export and its size
    assignments  identity, entitlement, action, at, actor  a grant added/removed on a target

Everything is checked before anything is written; one bad row and nothing loads
(TelemetryInvalid lists every problem with file, line and field). Rows are stored as
TelemetrySample; `load_frames` reads them back as one DataFrame per kind.

Stored encoding (TelemetrySample): tickets' category and exceptions' reason go to `category`,
export volume to `value`; an assignment's actor goes to `category` and its action to the sign
of `value` (+1 add, -1 remove).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, insert
from sqlmodel import Session, select

from wavekit.adapters.catalog import Problem
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Entitlement, Identity, RolePackage, TelemetrySample
from wavekit.domain.clock import as_utc
from wavekit.domain.frames import (
    ACTIONS,
    COLUMNS,
    KINDS,
    OPTIONAL,
    TelemetryFrames,
    _empty,
    _normalise,
    utc_timestamp,
)
from wavekit.domain.grants import GrantSet
from wavekit.domain.metrics import implicated, measure_package, window_start
from wavekit.domain.packages import PackageView

_INSERT_CHUNK = 50_000
_IN_CHUNK = 5_000  # IN-list size well under SQLite's and PostgreSQL's parameter limits
_KIND_IN_NAME = re.compile(r"^(usage|tickets?|exceptions?|exports?|assignments?)(?![a-z])")


class TelemetryInvalid(ValueError):
    """Telemetry files have problems; nothing was written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in the telemetry:\n{shown}{more}")


# ------------------------------------------------------------------ reading files


def kind_from_name(path: str | Path) -> str | None:
    """The kind a file name announces (`usage.csv`, `tickets-2026-04.json`), or None."""
    m = _KIND_IN_NAME.match(Path(path).name.lower())
    if not m:
        return None
    word = m.group(1)
    return word if word in KINDS else word + "s"


def _read_file(path: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """A file's rows as stripped strings plus `_line` (its line, or record number in JSON)."""
    name = path.name
    if not path.exists():
        problems.append(Problem(name, None, "file", "file is missing"))
        return None
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
            first = 2  # the header is line 1
        elif suffix in (".json", ".jsonl", ".ndjson"):
            lines = suffix != ".json" or path.read_text().lstrip().startswith("{")
            df = pd.read_json(path, orient="records", lines=lines, dtype=False,
                              convert_dates=False)
            first = 1
        else:
            problems.append(Problem(name, None, "file", "is not .csv, .json, .jsonl or .ndjson"))
            return None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        problems.append(Problem(name, None, "file", f"cannot be read: {exc}"))
        return None
    df.columns = [str(c).strip() for c in df.columns]
    df = df.astype(object).where(df.notna(), "")
    df = df.apply(lambda s: s.astype(str).str.strip())
    df["_line"] = np.arange(first, first + len(df))
    return df


# ------------------------------------------------------------------ validation


@dataclass(frozen=True)
class _Known:
    identities: frozenset[str]
    entitlements: frozenset[str]
    packages: frozenset[str]


def _known(session: Session) -> _Known:
    return _Known(identities=frozenset(session.exec(select(Identity.id))),
                  entitlements=frozenset(session.exec(select(Entitlement.key))),
                  packages=frozenset(session.exec(select(RolePackage.key))))


def _flag(problems: list[Problem], file: str, df: pd.DataFrame, mask: pd.Series, fld: str,
          message: str) -> None:
    """One Problem per flagged row; `{value}` in the message is the row's field value."""
    rows = df.loc[mask]
    values = rows[fld] if fld in rows else rows["_line"]
    problems.extend(Problem(file, int(line), fld, message.format(value=value))
                    for line, value in zip(rows["_line"], values, strict=True))


def _times(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert(
            "UTC")
    return pd.to_datetime(values.astype(str).str.strip(), format="ISO8601", utc=True,
                          errors="coerce")


def _validate(kind: str, df: pd.DataFrame, file: str, known: _Known,
              problems: list[Problem]) -> pd.DataFrame:
    """Check one kind's rows; return them as TelemetrySample columns (valid rows only)."""
    cols = COLUMNS[kind]
    missing = [c for c in cols if c not in df.columns and c not in OPTIONAL.get(kind, ())]
    for col in missing:
        problems.append(Problem(file, 1, col, "required column is missing"))
    if missing:
        return pd.DataFrame()
    df = df.copy()
    for col in cols:
        if col not in df.columns:
            df[col] = ""
        elif col not in ("at", "volume"):
            df[col] = df[col].fillna("").astype(str).str.strip()
    n_before = len(problems)

    at = _times(df["at"])
    _flag(problems, file, df, at.isna(), "at", "{value!r} is not a timestamp (ISO 8601)")
    if "package" in cols:
        empty = df["package"] == ""
        _flag(problems, file, df, empty, "package", "package is empty")
        _flag(problems, file, df, ~empty & ~df["package"].isin(known.packages), "package",
              "unknown package {value!r}")
    if "identity" in cols:
        empty = df["identity"] == ""
        _flag(problems, file, df, empty, "identity", "identity is empty")
        _flag(problems, file, df, ~empty & ~df["identity"].isin(known.identities), "identity",
              "unknown identity {value!r}")
    if "entitlement" in cols:
        empty = df["entitlement"] == ""
        _flag(problems, file, df, empty, "entitlement", "entitlement is empty")
        _flag(problems, file, df, ~empty & ~df["entitlement"].isin(known.entitlements),
              "entitlement", "unknown entitlement {value!r}")
    value = pd.Series(1.0, index=df.index)
    if kind == "exports":
        value = pd.to_numeric(df["volume"], errors="coerce")
        _flag(problems, file, df, value.isna(), "volume", "{value!r} is not a number")
        _flag(problems, file, df, value < 0, "volume", "negative volume {value}")
    if kind == "assignments":
        action = df["action"].str.lower()
        _flag(problems, file, df, ~action.isin(ACTIONS), "action",
              "{value!r} is not add or remove")
        _flag(problems, file, df, df["actor"] == "", "actor", "actor is empty")
        value = pd.Series(np.where(action == "remove", -1.0, 1.0), index=df.index)
    if len(problems) > n_before:
        return pd.DataFrame()

    category = {"tickets": "category", "exceptions": "reason", "assignments": "actor"}.get(kind)
    blank = pd.Series("", index=df.index)
    return pd.DataFrame({
        "kind": kind,
        "at": at,
        "package_key": df["package"] if "package" in cols else None,
        "identity": df["identity"] if "identity" in cols else None,
        "entitlement": df["entitlement"] if "entitlement" in cols else None,
        "category": (df[category] if category else blank).replace("", None),
        "value": value.astype(float),
    })


# ------------------------------------------------------------------ writing


def _store(session: Session, batches: list[tuple[str, str, pd.DataFrame]]) -> dict[str, int]:
    """Replace each named source's earlier delivery, then insert (caller's transaction)."""
    for kind, source in {(k, s) for k, s, _ in batches if s}:
        session.exec(delete(TelemetrySample).where(  # type: ignore[call-overload]
            TelemetrySample.kind == kind, TelemetrySample.source == source))
    counts: dict[str, int] = {}
    table = TelemetrySample.__table__  # type: ignore[attr-defined]
    for kind, source, rows in batches:
        counts[kind] = counts.get(kind, 0) + len(rows)
        for start in range(0, len(rows), _INSERT_CHUNK):
            # Core executemany over plain column lists: several times faster than ORM bulk
            # inserts built from DataFrame.to_dict("records").
            session.connection().execute(insert(table),
                                         _records(rows.iloc[start:start + _INSERT_CHUNK],
                                                  source))
    return counts


def _records(rows: pd.DataFrame, source: str) -> list[dict[str, Any]]:
    cols = {c: rows[c].astype(object).where(rows[c].notna(), None).tolist()
            for c in rows.columns if c != "at"}
    cols["at"] = rows["at"].dt.to_pydatetime().tolist()
    cols["source"] = [source] * len(rows)
    names = list(cols)
    return [dict(zip(names, values, strict=True))
            for values in zip(*cols.values(), strict=True)]


def _as_path_list(paths: Any) -> list[tuple[str | None, Path]]:
    if isinstance(paths, (str, Path)):
        return [(None, Path(paths))]
    if isinstance(paths, Mapping):
        out: list[tuple[str | None, Path]] = []
        for kind, value in paths.items():
            values = [value] if isinstance(value, (str, Path)) else list(value)
            out.extend((kind, Path(v)) for v in values)
        return out
    return [(None, Path(p)) for p in paths]


def ingest_telemetry(
    database_url: str,
    paths: str | Path | Iterable[str | Path] | Mapping[str, str | Path | Iterable[str | Path]],
    *,
    source: str = "",
    kind: str | None = None,
) -> dict[str, int]:
    """Validate telemetry files and store them in one transaction; return rows stored per kind.

    `paths` is a file, a list of files (kind from each name, or `kind` for all), or a mapping
    kind -> file(s). Each file's rows are tagged with `source`, by default the file's name:
    ingesting the same source again replaces what it delivered before, so a re-run never
    doubles events. Raises TelemetryInvalid listing every problem; then nothing is stored.

    Example: ingest_telemetry("sqlite:///wavekit.db", ["usage.csv", "tickets.json"])
    """
    problems: list[Problem] = []
    batches: list[tuple[str, str, pd.DataFrame]] = []
    with session_scope(database_url) as s:
        known = _known(s)
        for given, path in _as_path_list(paths):
            k = given or kind or kind_from_name(path)
            if k not in KINDS:
                problems.append(Problem(path.name, None, "kind",
                                        f"cannot tell the kind from {k or path.name!r}; "
                                        f"name it one of {', '.join(KINDS)}"))
                continue
            df = _read_file(path, problems)
            if df is not None:
                batches.append((k, source or path.name, _validate(k, df, path.name, known,
                                                                  problems)))
        if problems:
            raise TelemetryInvalid(problems)
        counts = _store(s, batches)
        audit.record(s, "telemetry_ingested", source=source or ", ".join(
            sorted({src for _, src, _ in batches})), rows=counts)
    return counts


def ingest_frame(database_url: str, kind: str, df: pd.DataFrame, *, source: str = "") -> int:
    """Validate and store one kind's DataFrame (columns as in the files); return rows stored.

    `at` may be datetimes or ISO 8601 strings. A non-empty `source` replaces that source's
    earlier delivery; an empty one appends. Problems give the row number (1-based) as line.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown telemetry kind {kind!r}; one of {', '.join(KINDS)}")
    label = f"<{kind} frame>"
    frame = df.reset_index(drop=True).copy()
    frame["_line"] = np.arange(1, len(frame) + 1)
    problems: list[Problem] = []
    with session_scope(database_url) as s:
        rows = _validate(kind, frame, label, _known(s), problems)
        if problems:
            raise TelemetryInvalid(problems)
        counts = _store(s, [(kind, source, rows)])
        audit.record(s, "telemetry_ingested", source=source or label, rows=counts)
    return counts.get(kind, 0)


# ------------------------------------------------------------------ reading back


def _from_samples(kind: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Stored TelemetrySample rows of one kind as the kind's file columns."""
    if rows.empty:
        return _empty(kind)
    at = pd.to_datetime(rows["at"], utc=True, format="ISO8601")
    cols: dict[str, Any] = {"identity": rows["identity"], "entitlement": rows["entitlement"],
                            "package": rows["package_key"], "at": at}
    if kind == "tickets":
        cols["category"] = rows["category"]
    elif kind == "exceptions":
        cols["reason"] = rows["category"]
    elif kind == "exports":
        cols["volume"] = rows["value"].astype(float)
    elif kind == "assignments":
        cols["action"] = np.where(rows["value"] < 0, "remove", "add")
        cols["actor"] = rows["category"]
    return _normalise(kind, pd.DataFrame(cols))


def _read(session: Session, kind: str, since: datetime | None, until: datetime | None,
          column: Any = None, values: Collection[str] | None = None) -> pd.DataFrame:
    t = TelemetrySample
    base = select(t.kind, t.at, t.package_key, t.identity, t.entitlement, t.category,
                  t.value).where(t.kind == kind)
    if since is not None:
        base = base.where(t.at >= as_utc(since))
    if until is not None:
        base = base.where(t.at < as_utc(until))
    if column is None:
        return pd.read_sql_query(base, session.connection())
    wanted = sorted(set(values or ()))
    parts = [pd.read_sql_query(base.where(column.in_(wanted[i:i + _IN_CHUNK])),
                               session.connection())
             for i in range(0, len(wanted), _IN_CHUNK)]
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _load(session: Session, since: datetime | None, until: datetime | None,
          package: PackageView | None) -> TelemetryFrames:
    t = TelemetrySample
    privileged = frozenset(session.exec(select(Entitlement.key)
                                        .where(Entitlement.privileged == True)))  # noqa: E712
    latest_q = select(t.kind, func.max(t.at)).group_by(t.kind)
    if until is not None:
        latest_q = latest_q.where(t.at < as_utc(until))
    latest = {k: utc_timestamp(v)
              for k, v in session.exec(latest_q) if v is not None}
    earliest_q = select(t.kind, func.min(t.at)).group_by(t.kind)
    if until is not None:
        earliest_q = earliest_q.where(t.at < as_utc(until))
    earliest = {k: utc_timestamp(v)
                for k, v in session.exec(earliest_q) if v is not None}
    if package is None:
        raw = {k: _read(session, k, since, until) for k in KINDS}
    else:
        raw = {
            "usage": _read(session, "usage", since, until, t.entitlement, package.entitlements),
            "tickets": _read(session, "tickets", since, until, t.package_key, {package.key}),
            "exceptions": _read(session, "exceptions", since, until, t.package_key,
                                {package.key}),
            "exports": _read(session, "exports", since, until, t.identity, package.members),
            "assignments": _read(session, "assignments", since, until, t.entitlement,
                                 package.entitlements | privileged),
        }
    frames = {k: _from_samples(k, raw[k]) for k in KINDS}
    return TelemetryFrames(**frames, privileged=privileged, latest=latest, earliest=earliest)


def load_frames(
    session_or_url: Session | str,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    package: PackageView | None = None,
) -> TelemetryFrames:
    """Stored telemetry with since <= at < until, one DataFrame per kind.

    With `package`, only what its metrics read: usage of its entitlements, its tickets and
    exceptions, its members' exports, and assignment changes of its entitlements and of
    privileged ones.
    """
    if isinstance(session_or_url, str):
        with session_scope(session_or_url) as s:
            return _load(s, since, until, package)
    return _load(session_or_url, since, until, package)


class TelemetryMetrics:
    """Measures packages from the store's telemetry; what the watch calls on every check."""

    def __init__(self, database_url: str, *, baseline_days: int = 28) -> None:
        self.database_url = database_url
        self.baseline_days = baseline_days

    def _frames(self, package: PackageView, deployed_at: datetime, as_of: datetime
                ) -> TelemetryFrames:
        return load_frames(self.database_url,
                           window_start(deployed_at, as_of, self.baseline_days), as_of,
                           package=package)

    def measure(self, package: PackageView, *, deployed_at: datetime, since: datetime,
                as_of: datetime, target_grants: GrantSet, suspended: GrantSet = frozenset(),
                from_history: bool = False) -> dict[str, float | None]:
        """Load the package's telemetry (baseline to `as_of`) and measure [since, as_of)."""
        return measure_package(self._frames(package, deployed_at, as_of), package,
                               deployed_at=deployed_at, since=since, as_of=as_of,
                               target_grants=target_grants, baseline_days=self.baseline_days,
                               suspended=suspended, from_history=from_history)

    def implicated(self, package: PackageView, metric: str, *, deployed_at: datetime,
                   since: datetime, as_of: datetime, threshold: float) -> frozenset[str]:
        """The members behind an anomaly of `metric` in [since, as_of)."""
        return implicated(self._frames(package, deployed_at, as_of), package, metric,
                          deployed_at=deployed_at, since=since, as_of=as_of,
                          threshold=threshold, baseline_days=self.baseline_days)
