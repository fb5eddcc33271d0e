"""The audit log is a hash chain: tampering is named, concurrent writers never fork it."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlmodel import select
from typer.testing import CliRunner

from tests.support.audit_writers import append_events
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import get_engine, session_scope
from wavekit.adapters.store.models import AuditEvent
from wavekit.present.cli import app

T0 = datetime(2026, 4, 8, 9, 0, tzinfo=UTC)


def _chain(url: str, n: int = 10) -> list[AuditEvent]:
    """n events: the first three in one transaction, the rest one per transaction."""
    with session_scope(url) as s:
        for i in range(3):
            audit.record(s, "gates_checked", package_key="fin", wave=1, release_id=1,
                         at=T0 + timedelta(minutes=i), gate=i, passed=[True, False])
    for i in range(3, n):
        with session_scope(url) as s:
            audit.record(s, "deploy_batch", actor=f"runner-{i}", package_key="fin",
                         at=T0 + timedelta(minutes=i), batch=i, grants=[["ann", "fin-gl"]])
    return _rows(url)


def _rows(url: str) -> list[AuditEvent]:
    with session_scope(url) as s:
        return list(s.exec(select(AuditEvent).order_by(AuditEvent.seq)))


def _verify(url: str, **kw) -> audit.ChainReport:
    with session_scope(url) as s:
        return audit.verify_chain(s, **kw)


def _sql(url: str, *statements: str, **params) -> None:
    """Tamper with the table directly, as someone with database access would."""
    with get_engine(url).begin() as conn:
        for stmt in statements:
            conn.execute(text(stmt), params)


def _is_pg(url: str) -> bool:
    return url.startswith("postgresql")


# --------------------------------------------------------------------------- appending


def test_a_chain_of_events_verifies_and_links_in_record_order(store_url: str) -> None:
    rows = _chain(store_url, 10)
    with session_scope(store_url) as s:
        # Several events in one transaction, one added without `record`, an autoflush
        # in between, a time zone other than UTC and a detail that is not plain JSON.
        audit.record(s, "first", at=T0 + timedelta(hours=1))
        s.add(AuditEvent(action="second", at=T0 + timedelta(hours=2)))
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "first")).one()
        audit.record(s, "third", at=datetime(2026, 4, 8, 14, tzinfo=timezone(timedelta(hours=2))),
                     pair=("a", "b"), counts={1: 2})
    rows = _rows(store_url)
    assert [r.seq for r in rows] == list(range(1, 14))
    assert [r.action for r in rows[-3:]] == ["first", "second", "third"]
    assert rows[0].prev_hash == audit.GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert len({r.hash for r in rows}) == 13
    assert rows[-1].at == datetime(2026, 4, 8, 12, tzinfo=UTC)
    assert rows[-1].detail == {"pair": ["a", "b"], "counts": {"1": 2}}

    report = _verify(store_url)
    assert report.ok and report.problem is None
    assert report.count == 13 and report.head == audit.ChainHead(13, rows[-1].hash)
    with session_scope(store_url) as s:
        assert audit.head(s) == report.head
        assert audit.head_from_text(f"...\n{audit.head_line(s)}\n") == report.head


def test_an_empty_log_verifies(store_url: str) -> None:
    report = _verify(store_url)
    assert report.ok and report.count == 0 and report.head is None
    assert report.summary() == "audit chain intact: 0 events"


def test_a_rolled_back_transaction_leaves_no_link(store_url: str) -> None:
    _chain(store_url, 4)
    with pytest.raises(RuntimeError), session_scope(store_url) as s:
        audit.record(s, "never")
        s.flush()
        raise RuntimeError("crash before commit")
    with session_scope(store_url) as s:
        audit.record(s, "after")
    rows = _rows(store_url)
    assert [(r.seq, r.action) for r in rows[-2:]] == [(4, "deploy_batch"), (5, "after")]
    assert _verify(store_url).ok


def test_the_hash_is_canonical_json_of_the_content_and_prev_hash() -> None:
    base = dict(seq=1, prev_hash=audit.GENESIS_HASH, at=T0, actor="a", action="x",
                package_key=None, wave=1, release_id=None, flow_run_id=None,
                detail={"b": 1, "a": [1, 2]})
    h = audit.event_hash(**base)
    # The same instant in another zone, naive UTC, key order and tuples do not matter...
    assert audit.event_hash(**{**base, "at": T0.astimezone(timezone(timedelta(hours=-5)))}) == h
    assert audit.event_hash(**{**base, "at": T0.replace(tzinfo=None)}) == h
    assert audit.event_hash(**{**base, "detail": {"a": (1, 2), "b": 1}}) == h
    # ...every field and the link do.
    for field, value in [("seq", 2), ("prev_hash", "1" * 64), ("actor", "b"), ("wave", 2),
                         ("at", T0 + timedelta(microseconds=1)), ("detail", {"b": 1})]:
        assert audit.event_hash(**{**base, field: value}) != h, field
    assert audit.canonical_time(T0) == "2026-04-08T09:00:00.000000Z"


# --------------------------------------------------------------------------- tampering


@pytest.mark.parametrize("column", ["detail", "actor"])
def test_an_edited_event_is_named(store_url: str, column: str) -> None:
    rows = _chain(store_url)
    if column == "detail":
        value = "CAST(:v AS json)" if _is_pg(store_url) else ":v"
        _sql(store_url, f"UPDATE auditevent SET detail = {value} WHERE seq = 4",
             v=json.dumps({"batch": 3, "grants": [["mallory", "fin-gl"]]}))
    else:
        _sql(store_url, "UPDATE auditevent SET actor = 'mallory' WHERE seq = 4")
    report = _verify(store_url)
    assert not report.ok and report.kind == "edited"
    assert (report.seq, report.event_id) == (4, rows[3].id)
    assert report.problem.startswith(f"event seq 4 (id {rows[3].id}) was edited")


def test_an_edited_event_with_a_recomputed_hash_is_named(store_url: str) -> None:
    rows = _chain(store_url)
    r = rows[3]
    forged = audit.event_hash(seq=r.seq, prev_hash=r.prev_hash, at=r.at, actor="mallory",
                              action=r.action, package_key=r.package_key, wave=r.wave,
                              release_id=r.release_id, flow_run_id=r.flow_run_id,
                              detail=r.detail)
    _sql(store_url, "UPDATE auditevent SET actor = 'mallory', hash = :h WHERE seq = 4",
         h=forged)
    report = _verify(store_url)
    assert not report.ok and report.kind == "edited"
    assert (report.seq, report.event_id) == (4, r.id)
    assert "rewritten" in report.problem


def test_a_deleted_event_is_named(store_url: str) -> None:
    _chain(store_url)
    _sql(store_url, "DELETE FROM auditevent WHERE seq = 5")
    report = _verify(store_url)
    assert not report.ok and report.kind == "deleted" and report.seq == 5
    assert report.problem.startswith("seq 5 missing (deleted)")
    assert report.count == 9


def test_a_row_inserted_outside_wavekit_is_named(store_url: str) -> None:
    _chain(store_url)
    with get_engine(store_url).begin() as conn:
        forged = conn.execute(insert(AuditEvent.__table__).values(
            at=T0, actor="mallory", action="approval_decided", detail={})
            .returning(AuditEvent.__table__.c.id)).scalar_one()
    report = _verify(store_url)
    assert not report.ok and report.kind == "inserted" and report.event_id == forged
    assert "not in the chain" in report.problem


def test_a_forged_event_spliced_into_the_chain_is_named(store_url: str) -> None:
    rows = _chain(store_url)
    # Make room at seq 5 (two steps: the unique index is checked row by row), then insert
    # an event whose own hash and link to seq 4 are right: only its successor shows it.
    _sql(store_url, "UPDATE auditevent SET seq = -(seq + 1) WHERE seq >= 5",
         "UPDATE auditevent SET seq = -seq WHERE seq < 0")
    fields = dict(seq=5, prev_hash=rows[3].hash, at=T0, actor="mallory",
                  action="approval_decided", package_key="fin", wave=1, release_id=1,
                  flow_run_id=None, detail={"decision": "approved"})
    with get_engine(store_url).begin() as conn:
        conn.execute(insert(AuditEvent.__table__).values(**fields,
                                                         hash=audit.event_hash(**fields)))
    report = _verify(store_url)
    assert not report.ok and report.kind == "inserted" and report.seq == 5
    assert report.problem == (f"seq 5 inserted: event seq 6 (id {rows[4].id}) was chained "
                              "directly after seq 4")


def test_a_forged_event_at_the_tail_is_named(store_url: str) -> None:
    rows = _chain(store_url)
    with get_engine(store_url).begin() as conn:
        conn.execute(insert(AuditEvent.__table__).values(
            seq=11, prev_hash=rows[-1].hash, hash="f" * 64, at=T0, actor="mallory",
            action="approval_decided", detail={}))
    report = _verify(store_url)
    assert not report.ok and report.seq == 11 and report.kind == "edited"


@pytest.mark.parametrize("a,b", [(3, 7), (3, 4)])
def test_reordered_events_are_named(store_url: str, a: int, b: int) -> None:
    rows = _chain(store_url)
    _sql(store_url, f"UPDATE auditevent SET seq = -1 WHERE seq = {a}",
         f"UPDATE auditevent SET seq = {a} WHERE seq = {b}",
         f"UPDATE auditevent SET seq = {b} WHERE seq = -1")
    report = _verify(store_url)
    assert not report.ok and report.kind == "reordered"
    assert (report.seq, report.event_id) == (a, rows[b - 1].id)
    assert report.problem == (f"event seq {a} (id {rows[b - 1].id}) is out of order: it was "
                              f"chained after seq {b if b == a + 1 else b - 1}, not seq {a - 1}")


def test_a_truncated_tail_is_caught_against_an_earlier_head(store_url: str) -> None:
    rows = _chain(store_url)
    with session_scope(store_url) as s:
        earlier = audit.head(s)
    assert earlier == audit.ChainHead(10, rows[-1].hash)
    _sql(store_url, "DELETE FROM auditevent WHERE seq > 8")

    plain = _verify(store_url)
    assert plain.ok and plain.count == 8  # a shorter chain is still a chain
    for expected in (earlier.hash, earlier.hash[:16].upper()):
        report = _verify(store_url, expect_head=expected)
        assert not report.ok and report.kind == "truncated"
        assert report.problem == (f"expected head {earlier.hash[:16]} is not in the chain: "
                                  "events after seq 8 were cut off (truncated tail) or rewritten")
    assert _verify(store_url, expect_head=rows[4].hash).ok  # an older head is still in it
    assert _verify(store_url, expect_head=plain.head.hash).ok
    with pytest.raises(ValueError, match="12 to 64 hex"):
        _verify(store_url, expect_head="abc")


# --------------------------------------------------------------------------- concurrency


def test_parallel_threads_never_fork_the_chain(store_url: str) -> None:
    threads_n, per_thread = 6, 15
    start = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with session_scope(store_url) as s:
                    audit.record(s, "parallel", actor=f"thread-{t}", n=i)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors[0]
    _assert_complete(store_url, {f"thread-{t}" for t in range(threads_n)}, per_thread)


def test_parallel_processes_never_fork_the_chain(store_url: str) -> None:
    # A fork server imports wavekit once; each writer is a fresh process with its own
    # engine and connections (nothing inherited from this test process).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.support.audit_writers"])
    procs_n, per_proc = 3, 24
    start = ctx.Barrier(procs_n)
    procs = [ctx.Process(target=append_events, args=(store_url, f"proc-{p}", per_proc, start))
             for p in range(procs_n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * procs_n  # a writer's error is printed above
    with session_scope(store_url) as s:
        pairs = s.exec(select(AuditEvent).where(AuditEvent.actor.endswith("-pair"))).all()
    assert len(pairs) == procs_n * 8
    _assert_complete(store_url, {f"proc-{p}" for p in range(procs_n)}, per_proc,
                     extra=len(pairs))


def _assert_complete(url: str, writers: set[str], each: int, extra: int = 0) -> None:
    rows = _rows(url)
    total = len(writers) * each + extra
    assert [r.seq for r in rows] == list(range(1, total + 1))  # no gaps, no duplicates
    for name in writers:  # each writer's events keep its order
        assert [r.detail["n"] for r in rows if r.actor == name] == list(range(each))
    report = _verify(url)
    assert report.ok, report.problem
    assert report.count == total


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_store(sqlite_url: str) -> str:
    _chain(sqlite_url, 5)
    return sqlite_url


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})


def test_cli_verify_passes_on_an_intact_chain(cli_store: str) -> None:
    head = _rows(cli_store)[-1].hash
    result = _cli("audit", "verify", "--database-url", cli_store)
    assert result.exit_code == 0, result.output
    assert result.output == f"audit chain intact: 5 events, head 5 {head[:16]}\n"
    ok = _cli("audit", "verify", "--database-url", cli_store, "--expect-head", head[:16])
    assert ok.exit_code == 0, ok.output


def test_cli_verify_fails_with_one_line(cli_store: str) -> None:
    rows = _rows(cli_store)
    _sql(cli_store, "UPDATE auditevent SET actor = 'mallory-with-a-long-name-' || actor "
                    "WHERE seq = 2")
    result = _cli("audit", "verify", "--database-url", cli_store)
    assert result.exit_code == 1
    assert result.output == (f"audit chain broken: event seq 2 (id {rows[1].id}) was edited "
                             "(or forged): its content does not match its hash\n")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_verify_against_a_report_catches_a_truncated_tail(cli_store: str,
                                                              tmp_path: Path) -> None:
    with session_scope(cli_store) as s:
        report = tmp_path / "wave-1.md"
        report.write_text(f"# Wave 1 report\n\n{audit.head_line(s)}\n")
    ok = _cli("audit", "verify", "--database-url", cli_store, "--against-report", str(report))
    assert ok.exit_code == 0, ok.output
    earlier = _rows(cli_store)[-1].hash
    _sql(cli_store, "DELETE FROM auditevent WHERE seq = 5")
    assert _cli("audit", "verify", "--database-url", cli_store).exit_code == 0
    for args in (["--against-report", str(report)], ["--expect-head", earlier[:12]]):
        result = _cli("audit", "verify", "--database-url", cli_store, *args)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "truncated tail" in result.output
    no_head = tmp_path / "other.md"
    no_head.write_text("# nothing here\n")
    result = _cli("audit", "verify", "--database-url", cli_store, "--against-report",
                  str(no_head))
    assert result.exit_code == 1 and "no 'audit chain head' line" in result.output
    bad = _cli("audit", "verify", "--database-url", cli_store, "--expect-head", "xyz")
    assert bad.exit_code == 2


def test_cli_verify_reports_an_unreadable_store_in_one_line(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # an audit table from before the chain
        conn.execute("CREATE TABLE auditevent (id INTEGER PRIMARY KEY, action TEXT)")
    result = _cli("audit", "verify", "--database-url", f"sqlite:///{db}")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    # The store check answers first: these tables are no revision's.
    assert result.output.startswith(f"the store at sqlite:///{db} is at revision none")
    assert result.output.rstrip().endswith("run `wavekit db upgrade`")


def test_cli_export_writes_one_json_object_per_event(cli_store: str, tmp_path: Path) -> None:
    rows = _rows(cli_store)
    out = tmp_path / "audit.jsonl"
    result = _cli("audit", "export", "--format", "jsonl", "--out", str(out),
                  "--database-url", cli_store)
    assert result.exit_code == 0, result.output
    assert f"wrote 5 events to {out}" in result.output
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["seq"], r["prev_hash"], r["hash"]) for r in records] == [
        (r.seq, r.prev_hash, r.hash) for r in rows]
    assert records[0]["at"] == "2026-04-08T09:00:00.000000Z"
    assert records[0]["detail"] == {"gate": 0, "passed": [True, False]}
    # Each line carries what its hash covers: the export can be checked on its own.
    for r in records:
        assert audit.event_hash(**{k: r[k] for k in (
            "seq", "prev_hash", "actor", "action", "package_key", "wave", "release_id",
            "flow_run_id", "detail")}, at=datetime.fromisoformat(r["at"])) == r["hash"]

    stdout = _cli("audit", "export", "--database-url", cli_store)
    assert stdout.exit_code == 0 and stdout.output.splitlines() == lines


def test_the_wave_report_ends_with_the_chain_head(loaded_store: str) -> None:
    from wavekit.present.reports import render_wave_report

    text_ = render_wave_report(loaded_store, 1)
    with session_scope(loaded_store) as s:
        assert audit.head(s) is not None
        assert text_.endswith(f"\n{audit.head_line(s)}\n")
        assert audit.head_from_text(text_) == audit.head(s)
