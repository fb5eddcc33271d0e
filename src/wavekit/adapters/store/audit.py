"""The audit log: every decision, state change and write to a target leaves one event.

The log is a hash chain. Each event carries `seq` (1, 2, 3, ... with no gaps), `prev_hash`
(the previous event's hash; `GENESIS_HASH` for seq 1) and `hash`, the SHA-256 of a canonical
JSON encoding of the event's content, its seq and its prev_hash (`event_hash`). Editing,
deleting, inserting or reordering rows breaks the chain, and `verify_chain` names the first
event where it breaks. Cutting events off the tail leaves a shorter chain that is intact, so
reports print the head (`head`) and `verify_chain(expect_head=...)` checks that it is still
in the chain.

`record` only adds the event to the session; the chain fields are assigned when the
transaction commits (a `before_commit` listener): the session's pending changes are flushed,
appends are serialised (on PostgreSQL `pg_advisory_xact_lock(AUDIT_LOCK_KEY)`; on SQLite the
write lock the flush's INSERT already holds), then the head is read and the transaction's
events are numbered and hashed in the order they were recorded. The lock is held only from
there to the end of the commit, never across the work the transaction did before.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, text
from sqlalchemy import select as core_select  # sqlmodel's select() types at most 4 columns
from sqlalchemy.orm import attributes
from sqlmodel import Session, col, select

from wavekit.adapters.store.models import AuditEvent, Release
from wavekit.domain.clock import as_utc, utcnow

GENESIS_HASH = "0" * 64
"""The prev_hash of the first event."""

HASH_VERSION = 1
"""Part of every hashed document, so a future encoding can be told apart."""

AUDIT_LOCK_KEY = int.from_bytes(b"wkaudit", "big")
"""The PostgreSQL advisory lock key that serialises appends to the chain."""

MIN_HEAD_PREFIX = 12
"""An expected head may be given as the first this-many (or more) hex characters."""

_PENDING = "wavekit.audit.pending"  # session.info key: events recorded, not yet chained


def record(
    session: Session,
    action: str,
    *,
    actor: str = "wavekit",
    package_key: str | None = None,
    wave: int | None = None,
    release_id: int | None = None,
    flow_run_id: str | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> AuditEvent:
    """Add one audit event to the session (committed with the change it describes).

    Its seq and hashes are assigned when the session commits, in the order of `record` calls.
    An event about a release names who requested the run (`requested_by`), unless given.
    """
    if release_id is not None and "requested_by" not in detail:
        release = session.get(Release, release_id)
        if release is not None and release.triggered_by:
            detail["requested_by"] = release.triggered_by
    event = AuditEvent(
        at=at or utcnow(), actor=actor, action=action, package_key=package_key, wave=wave,
        release_id=release_id, flow_run_id=flow_run_id, detail=detail,
    )
    session.add(event)
    session.info.setdefault(_PENDING, []).append(event)
    return event


def events(session: Session, *, package_key: str | None = None, action: str | None = None
           ) -> list[AuditEvent]:
    """Audit events in time order, optionally for one package or action."""
    q = select(AuditEvent).order_by(col(AuditEvent.id))
    if package_key:
        q = q.where(AuditEvent.package_key == package_key)
    if action:
        q = q.where(AuditEvent.action == action)
    return list(session.exec(q))


# --------------------------------------------------------------------------- hashing


def canonical_time(value: datetime) -> str:
    """A timestamp as hashed and exported: UTC, microseconds, `Z`; naive values count as UTC."""
    return as_utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical_detail(detail: Any) -> Any:
    """The detail as the JSON column gives it back (tuples as lists, keys as strings...)."""
    return json.loads(json.dumps({} if detail is None else detail))


def event_hash(*, seq: int | None, prev_hash: str | None, at: datetime, actor: str | None,
               action: str | None, package_key: str | None, wave: int | None,
               release_id: int | None, flow_run_id: str | None, detail: Any) -> str:
    """SHA-256 (hex) of the event's canonical JSON: sorted keys, no whitespace, ASCII only."""
    doc = {
        "v": HASH_VERSION, "seq": seq, "prev_hash": prev_hash, "at": canonical_time(at),
        "actor": actor, "action": action, "package_key": package_key,
        "wave": None if wave is None else int(wave),
        "release_id": None if release_id is None else int(release_id),
        "flow_run_id": flow_run_id, "detail": canonical_detail(detail),
    }
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(data.encode("ascii")).hexdigest()


def _row_hash(row: Any) -> str:
    return event_hash(seq=row.seq, prev_hash=row.prev_hash, at=row.at, actor=row.actor,
                      action=row.action, package_key=row.package_key, wave=row.wave,
                      release_id=row.release_id, flow_run_id=row.flow_run_id,
                      detail=row.detail)


# --------------------------------------------------------------------------- appending


def _collect(session: Session, *_: Any) -> None:
    """Note AuditEvents added without `record`, after those `record` noted, in add order."""
    new = [obj for obj in session.new if isinstance(obj, AuditEvent)]
    if new:
        pending = session.info.setdefault(_PENDING, [])
        known = {id(e) for e in pending}
        pending.extend(e for e in new if id(e) not in known)


def _chain_pending(session: Session) -> None:
    """Number and hash this transaction's events, appending them to the chain's head."""
    if not session.info.get(_PENDING) and not any(isinstance(o, AuditEvent)
                                                  for o in session.new):
        return
    # Insert everything first (before_flush notes events added without `record`): on SQLite
    # the INSERT takes the write lock, so the head below is read inside the write
    # transaction; on PostgreSQL nothing but our own, still invisible, rows is written while
    # the advisory lock is held.
    session.flush()
    pending: list[AuditEvent] = session.info.pop(_PENDING, [])
    seen: set[int] = set()
    chain = []
    for ev in pending:
        if id(ev) not in seen and ev in session and ev.id is not None:
            seen.add(id(ev))
            chain.append(ev)
    if not chain:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
    current = _head(conn)
    seq, prev = (current.seq, current.hash) if current else (0, GENESIS_HASH)
    for ev in chain:
        seq += 1
        # Keep in memory exactly what is stored and hashed: `at` in UTC (as the column gives
        # it back) and the detail as JSON gives it back, written again in case it was
        # mutated in place after the INSERT.
        ev.at = as_utc(ev.at or utcnow())
        ev.detail = canonical_detail(ev.detail)
        attributes.flag_modified(ev, "detail")
        ev.seq, ev.prev_hash = seq, prev
        ev.hash = prev = _row_hash(ev)


sa_event.listen(Session, "before_flush", _collect)
sa_event.listen(Session, "before_commit", _chain_pending)


# --------------------------------------------------------------------------- head


@dataclass(frozen=True)
class ChainHead:
    """The last event of the chain; reports print it so a later verify can catch truncation."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"seq {self.seq}, sha256 {self.hash}"


def _head(conn: Any) -> ChainHead | None:
    row = conn.execute(select(AuditEvent.seq, AuditEvent.hash)
                       .where(col(AuditEvent.seq).is_not(None))
                       .order_by(col(AuditEvent.seq).desc()).limit(1)).first()
    return ChainHead(row.seq, row.hash) if row else None


def head(session: Session) -> ChainHead | None:
    """The chain's head (highest seq) as stored, or None for an empty log."""
    return _head(session.connection())


def head_line(session: Session) -> str:
    """The line reports end with: `audit chain head: seq N, sha256 HEX`."""
    h = head(session)
    return f"audit chain head: {h}" if h else "audit chain head: none (empty audit log)"


_HEAD_LINE = re.compile(r"audit chain head:\s*seq\s+(\d+),\s*sha256\s+([0-9a-f]{64})")


def head_from_text(text_: str) -> ChainHead | None:
    """The last `audit chain head: ...` line in a report or artifact, if any."""
    found = _HEAD_LINE.findall(text_)
    return ChainHead(int(found[-1][0]), found[-1][1]) if found else None


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class ChainReport:
    """The verdict of `verify_chain`.

    kind is None when ok, else edited | deleted | inserted | reordered | forged | truncated;
    seq / event_id name the first bad event (for a deletion, the first missing seq).
    """

    ok: bool
    count: int
    head: ChainHead | None
    problem: str | None = None
    kind: str | None = None
    seq: int | None = None
    event_id: int | None = None

    def summary(self) -> str:
        """One line: what the CLI prints."""
        if not self.ok:
            return f"audit chain broken: {self.problem}"
        if self.head is None:
            return "audit chain intact: 0 events"
        return (f"audit chain intact: {self.count} events, "
                f"head {self.head.seq} {self.head.hash[:16]}")


@dataclass(frozen=True)
class _Break:
    kind: str
    seq: int | None
    event_id: int | None
    problem: str


_CHAIN_COLUMNS = tuple(col(c) for c in (
                  AuditEvent.id, AuditEvent.seq, AuditEvent.prev_hash, AuditEvent.hash,
                  AuditEvent.at, AuditEvent.actor, AuditEvent.action, AuditEvent.package_key,
                  AuditEvent.wave, AuditEvent.release_id, AuditEvent.flow_run_id,
                  AuditEvent.detail))


def normalise_head(expected: str) -> str:
    """An expected head hash, lower case; ValueError unless 12 to 64 hex characters."""
    value = expected.strip().lower()
    if not re.fullmatch(f"[0-9a-f]{{{MIN_HEAD_PREFIX},64}}", value):
        raise ValueError(f"an expected head is {MIN_HEAD_PREFIX} to 64 hex characters "
                         f"of a sha256 hash, not {expected!r}")
    return value


def walk_chain(rows: Iterable[Any], find_seq: Callable[[str], int | None] = lambda _h: None,
               expect_head: str | None = None) -> tuple[_Break | None, int, Any, bool]:
    """Check rows (with the AuditEvent columns, in seq order) link up from the genesis.

    `find_seq(hash)` gives the seq of the event with that hash, to tell a reordered or
    inserted event from an edited one. Returns (first break or None, events checked, the
    last row, whether a row's hash starts with `expect_head`).
    """
    expected, prev_hash, prev_row = 1, GENESIS_HASH, None
    n, found = 0, False
    for r in rows:
        label = f"event seq {r.seq} (id {r.id})"
        if r.seq < expected:
            return (_Break("inserted", r.seq, r.id, f"{label} is out of sequence after seq "
                           f"{expected - 1}: an event was inserted with a number already "
                           "used"), n, prev_row, found)
        if r.seq > expected:
            gap = (f"seq {expected}" if r.seq == expected + 1
                   else f"seq {expected} to {r.seq - 1}")
            return (_Break("deleted", expected, None, f"{gap} missing (deleted): the chain "
                           f"jumps from seq {expected - 1} to {label}"), n, prev_row, found)
        own_ok = r.hash == _row_hash(r)
        link_ok = r.prev_hash == prev_hash
        if not link_ok:
            linked = find_seq(r.prev_hash) if r.prev_hash else None
            if linked is not None and linked >= r.seq:
                bad = _Break("reordered", r.seq, r.id, f"{label} is out of order: it was "
                             f"chained after seq {linked}, not seq {r.seq - 1}")
            elif linked is not None:
                first = linked + 1
                span = f"seq {first}" if first == r.seq - 1 else f"seq {first} to {r.seq - 1}"
                bad = _Break("inserted", first, None, f"{span} inserted: {label} was chained "
                             f"directly after seq {linked}")
            elif own_ok and prev_row is not None:
                bad = _Break("edited", prev_row.seq, prev_row.id,
                             f"event seq {prev_row.seq} (id {prev_row.id}) was rewritten: "
                             f"{label} was chained after a different version of it")
            else:
                where = (f"seq {r.seq - 1}'s hash" if prev_row is not None
                         else "the genesis hash")
                bad = _Break("forged", r.seq, r.id, f"{label} was forged or rewritten: its "
                             f"prev_hash is not {where}"
                             + ("" if own_ok else " and its content does not match its hash"))
            return bad, n, prev_row, found
        if not own_ok:
            return (_Break("edited", r.seq, r.id, f"{label} was edited (or forged): its "
                           "content does not match its hash"), n, prev_row, found)
        if expect_head and r.hash.startswith(expect_head):
            found = True
        n, expected, prev_hash, prev_row = n + 1, expected + 1, r.hash, r
    return None, n, prev_row, found


def verify_chain(session: Session, *, expect_head: str | None = None,
                 batch_size: int = 1000) -> ChainReport:
    """Walk the audit log in seq order and name the first event that was edited, deleted,
    inserted or reordered. With `expect_head` (a head hash printed earlier, or its first 12+
    hex characters) also fail if the chain no longer contains it: the tail was cut off.

    Rows are streamed; memory does not grow with the log.
    """
    expect = normalise_head(expect_head) if expect_head else None
    conn = session.connection()

    def find_seq(h: str) -> int | None:
        return conn.execute(select(AuditEvent.seq).where(AuditEvent.hash == h)
                            .order_by(col(AuditEvent.seq)).limit(1)).scalar()

    rows = conn.execute(core_select(*_CHAIN_COLUMNS).where(col(AuditEvent.seq).is_not(None))
                        .order_by(col(AuditEvent.seq))
                        .execution_options(yield_per=batch_size))
    try:
        bad, n, last, found = walk_chain(rows, find_seq, expect)
    finally:
        rows.close()
    if bad is None:
        stray = conn.execute(select(AuditEvent.id).where(col(AuditEvent.seq).is_(None))
                             .order_by(col(AuditEvent.id)).limit(1)).scalar()
        if stray is not None:
            bad = _Break("inserted", None, stray, f"event id {stray} is not in the chain (no "
                         "seq or hash): it was inserted outside wavekit")
    if bad is None and expect and not found:
        tail = f"after seq {last.seq} " if last is not None else ""
        bad = _Break("truncated", None, None, f"expected head {expect[:16]} is not in the "
                     f"chain: events {tail}were cut off (truncated tail) or rewritten")
    if bad is None:
        return ChainReport(True, n, ChainHead(last.seq, last.hash) if last else None)
    total = conn.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    return ChainReport(False, total, _head(conn), bad.problem, bad.kind, bad.seq, bad.event_id)


# --------------------------------------------------------------------------- export


def export_records(session: Session, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Every event as a JSON-ready dict in chain order (unchained rows last), streamed."""
    rows = session.connection().execute(
        core_select(*_CHAIN_COLUMNS)
        .order_by(col(AuditEvent.seq).is_(None), col(AuditEvent.seq), col(AuditEvent.id))
        .execution_options(yield_per=batch_size))
    try:
        for r in rows:
            yield {"seq": r.seq, "prev_hash": r.prev_hash, "hash": r.hash, "id": r.id,
                   "at": canonical_time(r.at), "actor": r.actor, "action": r.action,
                   "package_key": r.package_key, "wave": r.wave, "release_id": r.release_id,
                   "flow_run_id": r.flow_run_id, "detail": r.detail}
    finally:
        rows.close()


def export_jsonl(session: Session, out: Any) -> int:
    """Write one JSON object per line to the text stream `out`; returns how many."""
    n = 0
    for rec in export_records(session):
        out.write(json.dumps(rec, sort_keys=True, ensure_ascii=True) + "\n")
        n += 1
    return n
