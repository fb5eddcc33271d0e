"""The store's schema, versioned by the Alembic revisions in `migrations/versions`.

A store is in one of four conditions when wavekit opens it:

- empty (no tables): created on the spot by upgrading to head;
- at head: used as it is;
- behind (an older revision, or tables made by `create_all` before migrations existed):
  wavekit stops with one line (`StoreNotReady`) until someone runs `wavekit db upgrade`,
  which stamps a pre-migration store with the newest revision whose tables it has;
- ahead (a revision this wavekit does not know): stops too, this wavekit is too old.

Alembic is configured here in code (`alembic_config`); no alembic.ini is needed at run time,
so an installed wheel migrates its store. The repository's alembic.ini is only for writing
revisions with `alembic revision --autogenerate`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Enum, MetaData, event, inspect, text
from sqlalchemy.engine import Connection, Engine, create_engine, make_url
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from wavekit.adapters.settings import masked_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Where revisions are looked for; tests add a directory of their own to rehearse a new head.
VERSION_LOCATIONS: tuple[str, ...] = (str(MIGRATIONS_DIR / "versions"),)
# The first revision: the schema `SQLModel.metadata.create_all` made before migrations.
BASELINE = "0001"
VERSION_TABLE = "alembic_version"
# pg_advisory_xact_lock key: two processes never migrate one PostgreSQL store at once.
_PG_LOCK_KEY = 0x7761766B  # "wavk"

# One migration at a time in this process (flow tasks run in threads); stores found at head.
_lock = threading.RLock()
_current: set[tuple[str, str]] = set()


class StoreNotReady(RuntimeError):
    """The store's schema is not the one this wavekit needs; the message is one line."""



# ---------------------------------------------------------------- alembic configuration


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code; `connection` is used as it is (in its
    transaction), which is how wavekit runs every migration."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", _os_path_list(VERSION_LOCATIONS))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _os_path_list(paths: tuple[str, ...]) -> str:
    return os.pathsep.join(p.replace("%", "%%") for p in paths)


@lru_cache(maxsize=8)
def _script(locations: tuple[str, ...]) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def script_directory() -> ScriptDirectory:
    return _script(VERSION_LOCATIONS)


def head_revision() -> str:
    """The revision this wavekit needs (there is exactly one head)."""
    head = script_directory().get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError(f"no migrations found in {VERSION_LOCATIONS}")
    return head


# ---------------------------------------------------------------- what a store is at


@dataclass(frozen=True)
class StoreState:
    url: str  # masked
    has_tables: bool  # any table at all, alembic_version included
    versioned: bool  # alembic_version exists
    revision: str | None  # what alembic_version says (None: no row, or no table)
    head: str
    known: bool  # the revision is one of this wavekit's (or there is none)

    @property
    def empty(self) -> bool:
        return not self.has_tables

    @property
    def at_head(self) -> bool:
        return self.revision == self.head

    @property
    def predates_migrations(self) -> bool:
        return self.has_tables and not self.versioned

    def describe(self) -> str:
        """One line: where the store is and what wavekit needs."""
        if self.empty:
            return (f"the store at {self.url} is empty: the first command that opens it "
                    f"creates it at revision {self.head}")
        if self.at_head:
            return f"the store at {self.url} is at revision {self.head} (head)"
        return self.problem() or ""

    def problem(self) -> str | None:
        """The line wavekit stops with, or None when the store can be used as it is."""
        if self.empty or self.at_head:
            return None
        if not self.known:
            return (f"the store at {self.url} is at revision {self.revision}, which this "
                    f"wavekit does not know (it needs {self.head}): upgrade wavekit")
        at = (f"{self.revision}" if self.revision else
              "none (created before migrations)" if self.predates_migrations else "none")
        return (f"the store at {self.url} is at revision {at}, wavekit needs {self.head}: "
                "run `wavekit db upgrade`")


def store_state(connection: Connection, url: str) -> StoreState:
    """Read, without changing anything, which revision the store behind `connection` is at."""
    tables = set(inspect(connection).get_table_names())
    versioned = VERSION_TABLE in tables
    revision = None
    if versioned:
        heads = MigrationContext.configure(connection).get_current_heads()
        revision = ",".join(heads) if heads else None
    known = True
    if revision is not None:
        try:
            script_directory().get_revision(revision)
        except CommandError:
            known = False
    return StoreState(url=masked_url(url), has_tables=bool(tables), versioned=versioned,
                      revision=revision, head=head_revision(), known=known)


def read_state(url: str, engine: Engine) -> StoreState:
    with engine.connect() as conn:
        return store_state(conn, url)


def ensure_current(url: str, engine: Engine) -> None:
    """Let wavekit use the store: create an empty one at head, refuse any other not at head.

    Raises StoreNotReady with the one line to show. A store found at head is not looked at
    again in this process (until the head changes).
    """
    key = (url, head_revision())
    if key in _current:
        return
    with _lock:
        if key in _current:
            return
        state = read_state(url, engine)
        if state.empty:
            upgrade_store(url, only_if_empty=True)
        elif problem := state.problem():
            raise StoreNotReady(problem)
        _current.add(key)


# ---------------------------------------------------------------- changing a store


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None
    after: str
    stamped: str | None  # the revision a pre-migration store was recognised as


def upgrade_store(url: str, revision: str = "head", *, only_if_empty: bool = False
                  ) -> UpgradeResult:
    """Upgrade the store to `revision`, in one transaction (all of it or nothing).

    A store made by `create_all` before migrations (tables, no alembic_version) is first
    stamped with the newest revision whose tables it has; if it has no revision's tables,
    nothing is changed.
    """
    with _lock, migration_connection(url) as conn:
        state = store_state(conn, url)
        if not state.known:
            raise StoreNotReady(state.problem())
        if only_if_empty and not state.empty and not state.at_head:
            raise StoreNotReady(state.problem())  # someone else created it meanwhile
        stamped = None
        if state.predates_migrations:
            stamped, differences = recognise(conn)
            if stamped is None:
                raise StoreNotReady(
                    f"the store at {state.url} has tables but no revision, and they are no "
                    f"revision's ({len(differences)} difference(s) from the nearest, first: "
                    f"{differences[0]}): nothing was changed")
            command.stamp(alembic_config(conn), stamped)
        command.upgrade(alembic_config(conn), revision)
        after = store_state(conn, url)
    _forget(url)
    if after.at_head:
        _current.add((url, after.head))
    return UpgradeResult(before=state.revision, after=after.revision or "", stamped=stamped)


def recreate_store(url: str) -> None:
    """Drop every table in the store (and PostgreSQL enum types), then upgrade to head."""
    with _lock:
        with migration_connection(url) as conn:
            _drop_everything(conn)
            command.upgrade(alembic_config(conn), "head")
        _forget(url)
        _current.add((url, head_revision()))


def empty_store(url: str) -> None:
    """Drop every table in the store (and PostgreSQL enum types): an empty store, which the
    next wavekit command creates anew."""
    with _lock:
        with migration_connection(url) as conn:
            _drop_everything(conn)
        _forget(url)


def _forget(url: str) -> None:
    for key in [k for k in _current if k[0] == url]:
        _current.discard(key)


def _drop_everything(conn: Connection) -> None:
    from sqlmodel import SQLModel

    reflected = MetaData()
    reflected.reflect(conn)
    enums = {c.type.name for t in [*reflected.tables.values(), *SQLModel.metadata.tables.values()]
             for c in t.columns if isinstance(c.type, Enum) and c.type.name}
    reflected.drop_all(conn)
    if conn.dialect.name == "postgresql":
        quote = conn.dialect.identifier_preparer.quote
        for name in sorted(enums):
            conn.execute(text(f"DROP TYPE IF EXISTS {quote(name)}"))


@contextmanager
def migration_connection(url: str) -> Iterator[Connection]:
    """One connection in one transaction for a whole migration run.

    SQLite: foreign keys are off while migrating (batch mode copies a table, drops it and
    renames the copy; with them on, dropping a referenced table fails or deletes rows), a
    real `BEGIN IMMEDIATE` makes DDL transactional and keeps a second process out, and a
    foreign-key check runs before the commit. PostgreSQL: an advisory lock keeps a second
    process out; once in, it finds the store already upgraded.
    """
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    memory = sqlite and parsed.database in (None, "", ":memory:")
    if memory:  # one in-memory database: the store engine's own (StaticPool)
        from wavekit.adapters.store.engine import raw_engine

        with raw_engine(url).connect() as conn, conn.begin():
            yield conn
        return
    kwargs: dict[str, Any] = {"poolclass": NullPool}
    if sqlite:
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_engine(url, **kwargs)
    if sqlite:
        event.listen(engine, "connect", _sqlite_migration_pragmas)
        event.listen(engine, "begin", lambda c: c.exec_driver_sql("BEGIN IMMEDIATE"))
    try:
        with engine.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            yield conn
            if sqlite:
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left {len(broken)} row(s) whose "
                                       f"foreign key points nowhere, first: {tuple(broken[0])};"
                                       " nothing was changed")
    finally:
        engine.dispose()


def _sqlite_migration_pragmas(dbapi_connection: sqlite3.Connection,
                              _record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None  # the "begin" listener starts transactions
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=OFF")
    cur.close()


# ---------------------------------------------------------------- stores from before migrations


def recognise(conn: Connection) -> tuple[str | None, list[str]]:
    """The newest revision whose tables the store has (None if none has) and, when none
    has, how the store differs from the nearest one.

    Compared: table names, column names and nullability, primary keys and index names:
    what `create_all` of the same models made, on SQLite or PostgreSQL alike.
    """
    found = _shape(conn)
    match: str | None = None
    nearest: list[str] | None = None
    for rev in script_directory().walk_revisions():  # head first
        differences = _differences(found, _revision_shape(rev.revision, VERSION_LOCATIONS))
        if not differences:
            # Of revisions with the same tables (one that only moves data), the oldest: the
            # upgrade then runs the data steps rather than skipping them.
            match = rev.revision
        elif match is not None:
            break
        elif nearest is None or len(differences) < len(nearest):
            nearest = differences
    if match is not None:
        return match, []
    return None, nearest or ["no revision found"]


@lru_cache(maxsize=16)
def _revision_shape(revision: str, _locations: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    engine = create_engine("sqlite://")  # the revision's schema, built in memory
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(alembic_config(conn), revision)
            return _shape(conn)
    finally:
        engine.dispose()


def _shape(conn: Connection) -> dict[str, dict[str, Any]]:
    insp = inspect(conn)
    shape: dict[str, dict[str, Any]] = {}
    for table in insp.get_table_names():
        if table == VERSION_TABLE:
            continue
        pk = insp.get_pk_constraint(table)["constrained_columns"]
        columns = {c["name"]: bool(c["nullable"]) and c["name"] not in pk
                   for c in insp.get_columns(table)}
        indexes = {i["name"] for i in insp.get_indexes(table)
                   if i["name"] and not i.get("duplicates_constraint")}
        shape[table] = {"columns": columns, "pk": sorted(pk), "indexes": indexes}
    return shape


def _differences(found: dict[str, dict[str, Any]], wanted: dict[str, dict[str, Any]]) -> list[str]:
    out = [f"table {t} is missing" for t in sorted(wanted.keys() - found.keys())]
    out += [f"there is a table {t}" for t in sorted(found.keys() - wanted.keys())]
    for t in sorted(wanted.keys() & found.keys()):
        have, want = found[t], wanted[t]
        for c in sorted(want["columns"].keys() - have["columns"].keys()):
            out.append(f"column {t}.{c} is missing")
        for c in sorted(have["columns"].keys() - want["columns"].keys()):
            out.append(f"there is a column {t}.{c}")
        for c in sorted(want["columns"].keys() & have["columns"].keys()):
            if want["columns"][c] != have["columns"][c]:
                out.append(f"column {t}.{c} is {'' if have['columns'][c] else 'not '}nullable")
        if have["pk"] != want["pk"]:
            out.append(f"table {t} has primary key {have['pk']}, not {want['pk']}")
        for i in sorted(want["indexes"] - have["indexes"]):
            out.append(f"index {i} on {t} is missing")
        for i in sorted(have["indexes"] - want["indexes"]):
            out.append(f"there is an index {i} on {t}")
    return out
