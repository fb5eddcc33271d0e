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

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sqlalchemy import String, delete, func, insert, or_, type_coerce
from sqlalchemy import select as core_select  # sqlmodel's select() types at most 4 columns
from sqlmodel import Session, select
from sqlmodel import col as sql_col  # `col` names the CSV columns in this module

from wavekit.adapters.problems import InputInvalid, Problem, capped, show
from wavekit.adapters.safe_csv import CsvRefused, cell_problems, table_from_text
from wavekit.adapters.safe_files import FileRefused, Limits, read_text
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Entitlement, Identity, RolePackage, TelemetrySample
from wavekit.domain.clock import as_utc
from wavekit.domain.frames import (
    ACTIONS,
    COLUMNS,
    KINDS,
    OPTIONAL,
    WAVEKIT_ACTOR,
    TelemetryFrames,
    _empty,
    _normalise,
    utc_timestamp,
)
from wavekit.domain.grants import GrantSet
from wavekit.domain.metrics import (
    PackageWindow,
    grant_frame,
    implicated,
    measure_package,
    measure_packages,
    window_start,
)
from wavekit.domain.packages import PackageView

_INSERT_CHUNK = 50_000
_IN_CHUNK = 5_000  # IN-list size well under SQLite's and PostgreSQL's parameter limits
MAX_ROWS_PER_CHECK = 20
MAX_VOLUME = 1e15
# Timestamps outside [EARLIEST, LATEST) are typos or epoch mix-ups, not telemetry.
EARLIEST = pd.Timestamp("2000-01-01", tz="UTC")
LATEST = pd.Timestamp("2100-01-01", tz="UTC")
_KIND_IN_NAME = re.compile(r"^(usage|tickets?|exceptions?|exports?|assignments?)(?![a-z])")


class TelemetryInvalid(InputInvalid):
    """Telemetry files have problems; nothing was written."""

    what = "the telemetry"
    listed = 50


# ------------------------------------------------------------------ reading files


def kind_from_name(path: str | Path) -> str | None:
    """The kind a file name announces (`usage.csv`, `tickets-2026-04.json`), or None."""
    m = _KIND_IN_NAME.match(Path(path).name.lower())
    if not m:
        return None
    word = m.group(1)
    return word if word in KINDS else word + "s"


class _JsonRefused(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise _JsonRefused(f"{name} is not a number JSON allows")


def _json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise _JsonRefused(f"is not valid JSON: {exc.msg} (line {exc.lineno}, column "
                           f"{exc.colno})") from None
    except RecursionError:
        raise _JsonRefused("is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise _JsonRefused(f"is not valid JSON: {str(exc).splitlines()[0][:120]}") from None


def _cell(value: Any) -> str | None:
    """A JSON value as the text a CSV cell would hold; None for a list or an object."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def _json_records(name: str, text: str, lines: bool, columns: tuple[str, ...],
                  required: tuple[str, ...], problems: list[Problem]) -> pd.DataFrame | None:
    """JSON (an array, or one object per line) as rows of the kind's columns plus `_line`."""
    records: list[tuple[int, Any]] = []
    found: list[tuple[int | None, str, str]] = []
    if lines:
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    records.append((number, _json(line)))
                except _JsonRefused as exc:
                    found.append((number, "record", str(exc).replace(" (line 1,", " (")))
    else:
        try:
            doc = _json(text)
        except _JsonRefused as exc:
            problems.append(Problem(name, None, "file", str(exc)))
            return None
        if not isinstance(doc, list):
            problems.append(Problem(name, None, "file", "must be a JSON array of records (or "
                                    "one record per line in .jsonl)"))
            return None
        records = list(enumerate(doc, 1))
    rows: dict[str, list[str]] = {c: [] for c in columns}
    numbers: list[int] = []
    bad: set[int] = set()
    present: set[str] = set()
    for number, record in records:
        if not isinstance(record, dict):
            found.append((number, "record", "is not a JSON object"))
            continue
        present.update(k for k in record if isinstance(k, str))
        numbers.append(number)
        for c in columns:
            cell = _cell(record.get(c))
            if cell is None:
                found.append((number, c, "holds a list or an object, not a value"))
                bad.add(number)
                cell = ""
            elif c in required and c not in record:
                found.append((number, c, "is missing from this record"))
                bad.add(number)
            rows[c].append(cell.strip())
    absent = [c for c in required if numbers and c not in present]
    if absent:  # a field no record has is the file's one problem, not one per record
        problems.extend(Problem(name, None, c, "required field is missing from every record")
                        for c in absent)
        return None
    frame = pd.DataFrame(rows, columns=list(columns), dtype=object).astype(str)
    frame["_line"] = numbers
    cells = cell_problems(frame, columns)
    found.extend(cells)
    bad.update(line for line, _, _ in cells if line is not None)
    frame["_ok"] = ~frame["_line"].isin(bad)
    problems.extend(_capped(name, sorted(found, key=lambda f: f[0] or 0)))
    return frame


def _read_file(path: Path, kind: str, problems: list[Problem],
               limits: Limits | None = None) -> pd.DataFrame | None:
    """A file's rows as stripped strings plus `_line` (its line, or record number in JSON)
    and `_ok` (False for a row with a problem of its own); None if the file is unusable."""
    name = path.name
    limits = limits or Limits()
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl", ".ndjson"):
        problems.append(Problem(name, None, "file", "is not .csv, .json, .jsonl or .ndjson"))
        return None
    columns = COLUMNS[kind]
    required = tuple(c for c in columns if c not in OPTIONAL.get(kind, ()))
    try:
        text = read_text(path, limits.telemetry_bytes)
    except FileRefused as exc:
        problems.append(Problem(name, exc.line, exc.field, exc.message))
        return None
    if suffix == ".csv":
        try:
            table = table_from_text(text, columns, required,
                                    missing_message="required column is missing")
        except CsvRefused as exc:
            problems.extend(Problem(name, line, fld, msg) for line, fld, msg in exc.problems)
            return None
        problems.extend(_capped(name, table.problems))
        return table.frame
    lines = suffix != ".json" or text.lstrip().startswith("{")
    return _json_records(name, text, lines, columns, required, problems)


def _capped(file: str, found: Iterable[tuple[int | None, str, str]]) -> list[Problem]:
    """Problems, at most MAX_ROWS_PER_CHECK per field, then one saying how many more."""
    return capped(file, found, MAX_ROWS_PER_CHECK, "field")


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
          message: str, *, raw: bool = False) -> None:
    """One Problem per flagged row (`{value}` is the row's field value, shown safely; `raw`
    for a value known to be a plain number), at most MAX_ROWS_PER_CHECK of them and then one
    saying how many more."""
    fmt = (lambda v: str(v)[:40]) if raw else show
    rows = df.loc[mask]
    if not len(rows):
        return
    head = rows.iloc[:MAX_ROWS_PER_CHECK]
    values = head[fld] if fld in head else head["_line"]
    problems.extend(Problem(file, int(line), fld, message.format(value=fmt(value)))
                    for line, value in zip(head["_line"], values, strict=True))
    if len(rows) > MAX_ROWS_PER_CHECK:
        problems.append(Problem(file, int(rows["_line"].iloc[MAX_ROWS_PER_CHECK]), fld,
                                f"... and {len(rows) - MAX_ROWS_PER_CHECK:,} more rows with "
                                "this problem: " + message.format(value="...")))


def _times(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert(
            "UTC")
    return pd.to_datetime(values.astype(str).str.strip(), format="ISO8601", utc=True,
                          errors="coerce")


def _validate(kind: str, df: pd.DataFrame, file: str, known: _Known,
              problems: list[Problem]) -> pd.DataFrame:
    """Check one kind's rows; return them as TelemetrySample columns (valid rows only).

    Rows whose `_ok` is False already have a problem of their own and are not judged again.
    """
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
    if "_ok" in df.columns and not df["_ok"].all():
        df = df[df["_ok"].astype(bool)]
        n_before = -1  # the file already has problems: nothing from it is stored

    at = _times(df["at"])
    _flag(problems, file, df, at.isna(), "at", "{value} is not a timestamp (ISO 8601)")
    implausible = at.notna() & ((at < EARLIEST) | (at >= LATEST))
    _flag(problems, file, df, implausible, "at",
          f"{{value}} is outside {EARLIEST.year}..{LATEST.year - 1}")
    if "package" in cols:
        empty = df["package"] == ""
        _flag(problems, file, df, empty, "package", "package is empty")
        _flag(problems, file, df, ~empty & ~df["package"].isin(known.packages), "package",
              "unknown package {value}")
    if "identity" in cols:
        empty = df["identity"] == ""
        _flag(problems, file, df, empty, "identity", "identity is empty")
        _flag(problems, file, df, ~empty & ~df["identity"].isin(known.identities), "identity",
              "unknown identity {value}")
    if "entitlement" in cols:
        empty = df["entitlement"] == ""
        _flag(problems, file, df, empty, "entitlement", "entitlement is empty")
        _flag(problems, file, df, ~empty & ~df["entitlement"].isin(known.entitlements),
              "entitlement", "unknown entitlement {value}")
    value = pd.Series(1.0, index=df.index)
    if kind == "exports":
        value = pd.to_numeric(df["volume"], errors="coerce").astype(float)
        _flag(problems, file, df, value.isna(), "volume", "{value} is not a number")
        infinite = value.notna() & ~np.isfinite(value)
        _flag(problems, file, df, infinite, "volume", "{value} is not a finite number")
        finite = value.notna() & np.isfinite(value)
        _flag(problems, file, df, finite & (value < 0), "volume", "negative volume {value}",
              raw=True)
        _flag(problems, file, df, finite & (value > MAX_VOLUME), "volume",
              f"{{value}} is larger than {MAX_VOLUME:.0e} (not a plausible export size)")
    if kind == "assignments":
        action = df["action"].str.lower()
        _flag(problems, file, df, ~action.isin(ACTIONS), "action",
              "{value} is not add or remove")
        _flag(problems, file, df, df["actor"] == "", "actor", "actor is empty")
        value = pd.Series(np.where(action == "remove", -1.0, 1.0), index=df.index)
    if n_before < 0 or len(problems) > n_before:
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
        session.exec(delete(TelemetrySample).where(
            sql_col(TelemetrySample.kind) == kind, sql_col(TelemetrySample.source) == source))
    counts: dict[str, int] = {}
    table = TelemetrySample.__table__  # type: ignore[attr-defined]  # set on table models; sqlmodel's stubs omit it
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
    limits: Limits | None = None,
) -> dict[str, int]:
    """Validate telemetry files and store them in one transaction; return rows stored per kind.

    `paths` is a file, a list of files (kind from each name, or `kind` for all), or a mapping
    kind -> file(s). Each file's rows are tagged with `source`, by default the file's name:
    ingesting the same source again replaces what it delivered before, so a re-run never
    doubles events. Raises TelemetryInvalid listing every problem; then nothing is stored.
    `limits` caps each file's size (default: Limits.from_env(), WAVEKIT_MAX_TELEMETRY_MB).

    Example: ingest_telemetry("sqlite:///wavekit.db", ["usage.csv", "tickets.json"])
    """
    with session_scope(database_url) as s:
        batches = _validated(s, paths, source=source, kind=kind, limits=limits)
        counts = _store(s, batches)
        audit.record(s, "telemetry_ingested", source=source or ", ".join(
            sorted({src for _, src, _ in batches})), rows=counts)
    return counts


def _validated(session: Session, paths: Any, *, source: str, kind: str | None,
               limits: Limits | None) -> list[tuple[str, str, pd.DataFrame]]:
    """(kind, source, stored-encoding rows) per file; raises TelemetryInvalid on any problem."""
    problems: list[Problem] = []
    batches: list[tuple[str, str, pd.DataFrame]] = []
    if limits is None:
        try:
            limits = Limits.from_env()
        except ValueError as exc:
            raise TelemetryInvalid([Problem("environment", None, "limits", str(exc))]) from None
    known = _known(session)
    for given, path in _as_path_list(paths):
        k = given or kind or kind_from_name(path)
        if k not in KINDS:
            problems.append(Problem(path.name, None, "kind",
                                    f"cannot tell the kind from {k or path.name!r}; "
                                    f"name it one of {', '.join(KINDS)}"))
            continue
        df = _read_file(path, k, problems, limits)
        if df is not None:
            batches.append((k, source or path.name, _validate(k, df, path.name, known,
                                                              problems)))
    if problems:
        raise TelemetryInvalid(problems)
    return batches


def telemetry_files(directory: Path) -> list[Path]:
    """The telemetry files in `directory` (by name: usage.csv, tickets.jsonl, ...)."""
    if not directory.is_dir():
        raise TelemetryInvalid([Problem(str(directory), None, "path", "not a directory")])
    found = sorted(p for p in directory.iterdir() if p.is_file() and kind_from_name(p))
    if not found:
        raise TelemetryInvalid([Problem(str(directory), None, "path",
                                        "holds no telemetry file (usage.csv, tickets.csv, "
                                        "exceptions.csv, exports.csv, assignments.csv)")])
    return found


def read_telemetry(database_url: str, paths: Any, *, limits: Limits | None = None
                   ) -> TelemetryFrames:
    """Validate telemetry files exactly as ingest does and return them as frames, storing
    nothing: what replay judges recorded telemetry from. Raises TelemetryInvalid."""
    with session_scope(database_url) as s:
        batches = _validated(s, paths, source="", kind=None, limits=limits)
        privileged = _privileged(s)
    frames = {}
    for k in KINDS:
        parts = [rows for kind, _, rows in batches if kind == k and not rows.empty]
        frames[k] = _from_samples(k, pd.concat(parts, ignore_index=True) if parts
                                  else pd.DataFrame())
    return TelemetryFrames.build(privileged=privileged, **frames)


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
    cols: dict[str, Any] = {"identity": rows.get("identity"),
                            "entitlement": rows.get("entitlement"),
                            "package": rows.get("package_key"), "at": at}
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


# The stored columns each kind's frame is built from (_from_samples), besides `at`.
_STORED = {
    "usage": ("identity", "entitlement"),
    "tickets": ("package_key", "category"),
    "exceptions": ("package_key", "identity", "category"),
    "exports": ("identity", "value"),
    "assignments": ("identity", "entitlement", "category", "value"),
}


def _fetch(session: Session, query: Any) -> pd.DataFrame:
    """A query's rows as a frame, taken from the DBAPI cursor in one fetch: no SQLAlchemy
    Row per row (the columns read need no result processing; see _read)."""
    result = session.connection().execute(query)
    try:
        names = list(result.keys())
        rows = result.cursor.fetchall()
    finally:
        result.close()
    return pd.DataFrame.from_records(rows, columns=names, coerce_float=False)


def _read(session: Session, kind: str, since: datetime | None, until: datetime | None,
          column: Any = None, values: Collection[str] | None = None,
          where: Sequence[Any] = ()) -> pd.DataFrame:
    t = TelemetrySample
    # `at` is read as the raw stored value and converted by pandas in one vectorised call
    # (_from_samples): the column type's result processor would build a datetime per row.
    base = core_select(type_coerce(t.at, String).label("at"),
                       *(sql_col(getattr(t, c)) for c in _STORED[kind])
                       ).where(sql_col(t.kind) == kind, *where)
    if since is not None:
        base = base.where(sql_col(t.at) >= as_utc(since))
    if until is not None:
        base = base.where(sql_col(t.at) < as_utc(until))
    if column is None:
        return _fetch(session, base)
    wanted = sorted(set(values or ()))
    parts = [_fetch(session, base.where(column.in_(wanted[i:i + _IN_CHUNK])))
             for i in range(0, len(wanted), _IN_CHUNK)]
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _privileged(session: Session) -> frozenset[str]:
    return frozenset(session.exec(select(Entitlement.key)
                                  .where(Entitlement.privileged == True)))  # noqa: E712


def _bounds(session: Session, until: datetime | None
            ) -> tuple[dict[str, pd.Timestamp], dict[str, pd.Timestamp]]:
    """(latest, earliest) event time of each kind before `until`, unscoped."""
    t = TelemetrySample
    latest: dict[str, pd.Timestamp] = {}
    earliest: dict[str, pd.Timestamp] = {}
    # Two queries per kind: each reads one end of the (kind, at) index, not the table.
    for kind in KINDS:
        for bound, agg in ((latest, func.max(t.at)), (earliest, func.min(t.at))):
            q = select(agg).where(t.kind == kind)
            if until is not None:
                q = q.where(t.at < as_utc(until))
            value = session.exec(q).one()
            if value is not None:
                bound[kind] = utc_timestamp(value)
    return latest, earliest


def _load(session: Session, since: datetime | None, until: datetime | None,
          package: PackageView | None) -> TelemetryFrames:
    t = TelemetrySample
    privileged = _privileged(session)
    latest, earliest = _bounds(session, until)
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


class LiveMeasurement(NamedTuple):
    """One package measured on the target as it is now (the nightly run's measurements).

    `target_grants`: the package's scope on the target, unless measure_live is handed the
    target's grants of every package at once (`held`).
    """

    package: PackageView
    deployed_at: datetime
    since: datetime
    target_grants: GrantSet = frozenset()
    suspended: GrantSet = frozenset()


def load_live_frames(session: Session, since: datetime, window_since: datetime,
                     until: datetime) -> TelemetryFrames:
    """Every package's telemetry that live measurements of windows starting at `window_since`
    or later read, with baselines back to `since`, in one query per kind.

    Live measurements (not from history) read usage only inside their window (adoption) and
    assignment changes only when someone other than wavekit made them (access drift and
    escalations): the rest, wavekit's own adds at every deploy, is most of the feed and is
    left in the store. Not for `from_history` measurements, which replay wavekit's own too.
    """
    t = TelemetrySample
    privileged = _privileged(session)
    latest, earliest = _bounds(session, until)
    # A superset of what metrics.WAVEKIT_ACTOR excludes would drop rows the metrics keep;
    # this SQL test only drops rows whose actor, trimmed and lower-cased, is exactly it.
    not_wavekit = or_(sql_col(t.category).is_(None),
                      func.lower(func.trim(t.category)) != WAVEKIT_ACTOR)
    raw = {k: _read(session, k, window_since if k == "usage" else since, until,
                    where=[not_wavekit] if k == "assignments" else ())
           for k in KINDS}
    frames = {k: _from_samples(k, raw[k]) for k in KINDS}
    return TelemetryFrames(**frames, privileged=privileged, latest=latest, earliest=earliest)


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

    def measure_live(self, measurements: Sequence[LiveMeasurement], as_of: datetime, *,
                     held: pd.DataFrame | None = None) -> dict[str, dict[str, float | None]]:
        """`measure` for many packages at once, as of now on the target: the telemetry is
        loaded once for all of them and measured in one pass (package key -> metrics).

        `held`: the target's grants of every package's scope, read once (columns identity,
        entitlement; see metrics.grant_frame); each package reads its own entitlements' grants
        from it. Without it, each measurement's own `target_grants` are read.
        """
        if not measurements:
            return {}
        since = min(window_start(m.deployed_at, as_of, self.baseline_days)
                    for m in measurements)
        window = min(max(as_utc(m.since), as_utc(m.deployed_at)) for m in measurements)
        with session_scope(self.database_url) as s:
            frames = load_live_frames(s, since, window, as_of)
        if held is None:
            held = pd.concat([grant_frame(m.target_grants).assign(package=m.package.key)
                              for m in measurements], ignore_index=True)
        windows = [PackageWindow(m.package, m.deployed_at, m.since, as_of, m.suspended)
                   for m in measurements]
        measured = measure_packages(frames, windows, held, baseline_days=self.baseline_days)
        return {m.package.key: values for m, values in zip(measurements, measured, strict=True)}

    def implicated(self, package: PackageView, metric: str, *, deployed_at: datetime,
                   since: datetime, as_of: datetime, threshold: float) -> frozenset[str]:
        """The members behind an anomaly of `metric` in [since, as_of)."""
        return implicated(self._frames(package, deployed_at, as_of), package, metric,
                          deployed_at=deployed_at, since=since, as_of=as_of,
                          threshold=threshold, baseline_days=self.baseline_days)
