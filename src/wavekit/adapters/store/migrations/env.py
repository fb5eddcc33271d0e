"""Alembic's environment for the wavekit store.

wavekit runs migrations through wavekit.adapters.store.schema, which hands in a connection
already inside its transaction (`config.attributes["connection"]`). The alembic command line
(the repository's alembic.ini, used to write revisions) names a store instead: `-x url=...`,
else alembic.ini's `sqlalchemy.url` (a scratch SQLite file).
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

from wavekit.adapters.store import models  # noqa: F401  (registers the tables)
from wavekit.adapters.store.schema import VERSION_TABLE, migration_connection

config = context.config
if config.config_file_name is not None:  # the alembic command line: its log lines
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = SQLModel.metadata


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    # SQLModel's column types (AutoString, UTCDateTime) are written as the SQLAlchemy type
    # they store as (sa.String(), sa.DateTime(timezone=True)): a revision must not change
    # meaning, or stop importing, when SQLModel changes.
    if (type_ == "type" and isinstance(obj, TypeDecorator)
            and type(obj).__module__.startswith("sqlmodel.")):
        return f"sa.{obj.impl!r}"
    return False


OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "version_table": VERSION_TABLE,
    # SQLite alters tables by copying them ("batch mode"); on PostgreSQL batch
    # operations are plain ALTERs, so one revision serves both.
    "render_as_batch": True,
    "compare_type": True,
    "render_item": _render_item,
}


def run_migrations_offline() -> None:
    context.configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"},
                      **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:  # wavekit's own run: the caller owns the transaction
        context.configure(connection=given, **OPTIONS)
        context.run_migrations()
        return
    with migration_connection(_url()) as connection:
        context.configure(connection=connection, **OPTIONS)
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("name the store: alembic -x url=sqlite:///path/to/wavekit.db ...")
    return url


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
