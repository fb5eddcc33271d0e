"""The store: one SQLModel engine per URL; SQLite by default, PostgreSQL through the same URL.

The schema comes from the Alembic revisions only (wavekit.adapters.store.schema): an empty
store is created at head the first time it is opened; a store at any other revision than
head is refused with one line (StoreNotReady) until `wavekit db upgrade`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlmodel import Session, create_engine

# Imported for their side effects: the tables on SQLModel.metadata, the audit chain's hooks.
from wavekit.adapters.store import audit, models, schema  # noqa: F401
from wavekit.adapters.store.schema import StoreNotReady

__all__ = ["StoreNotReady", "get_engine", "raw_engine", "reset_store", "session_scope"]


@lru_cache(maxsize=16)
def raw_engine(url: str) -> Engine:
    """The engine for a store URL, creating the SQLite file's directory; no schema check."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:  # one in-memory database shared by every thread, not one per thread
            kwargs["poolclass"] = StaticPool
        # Flow tasks run in threads; SQLite needs to be told that is fine.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def get_engine(url: str) -> Engine:
    """The engine for a store whose schema is this wavekit's: an empty store is created at
    head; one at another revision raises StoreNotReady (run `wavekit db upgrade`)."""
    engine = raw_engine(url)
    schema.ensure_current(url, engine)
    return engine


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets the report and status commands read while a wave writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


Row = TypeVar("Row")


class RowMissing(LookupError):
    """A row the caller knows must exist is not in the store (deleted under it, or a bug)."""


def get_one(session: Session, model: type[Row], key: Any) -> Row:
    """`session.get` for a row that must exist: the row, or RowMissing naming it."""
    row = session.get(model, key)
    if row is None:
        raise RowMissing(f"no {model.__name__} {key!r} in the store")
    return row


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: nothing half-written."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def reset_store(url: str) -> None:
    """Drop every table and create the schema anew at head (the demo and tests start from
    nothing), whatever revision the store was at."""
    raw_engine(url)  # the SQLite file's directory
    schema.recreate_store(url)
