"""The store's schema comes from Alembic revisions only, on SQLite and PostgreSQL.

- the models and the migrated schema agree (fails when a model changes without a revision);
- upgrading 0001 -> head loses no row, whatever head is; a rehearsal revision stacked on
  head (written here, in a temporary directory) alters tables full of data, so the upgrade
  path is exercised with a real schema change even while head is 0001;
- a store at another revision than head stops the CLI and the runtime with one line;
- `wavekit db upgrade` recognises a store made by create_all before migrations.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlmodel
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Enum, MetaData, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlmodel import Session, SQLModel
from typer.testing import CliRunner

from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.settings import load_settings, masked_url
from wavekit.adapters.store import audit, models, schema
from wavekit.adapters.store.engine import get_engine, raw_engine, session_scope
from wavekit.domain.clock import utcnow
from wavekit.examples import EXAMPLE_CATALOG
from wavekit.present.cli import app
from wavekit.workflow.runtime import build_runtime

NEW_REVISION = ".venv/bin/alembic revision --autogenerate --rev-id NNNN -m '...'"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store: no tables at all. PostgreSQL's (the session's shared database) gets a
    password in its URL, which the trust-authenticated test server ignores: it must never
    be printed."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wavekit.db'}"
        return
    url = make_url(request.getfixturevalue("postgres_url")).set(password="s3cret")
    pg = url.render_as_string(hide_password=False)
    schema.empty_store(pg)
    yield pg
    schema.recreate_store(pg)  # leave it at head for the tests that follow


@pytest.fixture
def rehearsal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A revision on top of this wavekit's head, active for the test: it adds columns and
    makes SQLite copy three tables that hold data and are referenced by foreign keys."""
    head = schema.head_revision()
    rev = f"rehearsal_after_{head}"
    versions = tmp_path / "rehearsal_versions"
    versions.mkdir()
    (versions / f"{rev}.py").write_text(f'''
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    # SQLite: copy the tables (what most ALTERs do there); PostgreSQL: plain ALTERs.
    copy = "always" if op.get_context().dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("rolepackage", recreate=copy) as b:
        b.add_column(sa.Column("rehearsal_note", sa.String(), nullable=True))
    with op.batch_alter_table("release", recreate=copy) as b:
        b.add_column(sa.Column("rehearsal_flag", sa.Boolean(), nullable=False,
                               server_default=sa.false()))
    with op.batch_alter_table("maintenancetask", recreate=copy) as b:
        b.add_column(sa.Column("rehearsal_n", sa.Integer(), nullable=True))
    with op.batch_alter_table("auditevent") as b:
        b.add_column(sa.Column("rehearsal_seq", sa.Integer(), nullable=True))
        b.create_index("ix_auditevent_rehearsal_seq", ["rehearsal_seq"], unique=True)


def downgrade():
    with op.batch_alter_table("auditevent") as b:
        b.drop_index("ix_auditevent_rehearsal_seq")
        b.drop_column("rehearsal_seq")
    for table, column in [("maintenancetask", "rehearsal_n"), ("release", "rehearsal_flag"),
                          ("rolepackage", "rehearsal_note")]:
        with op.batch_alter_table(table) as b:
            b.drop_column(column)
''')
    monkeypatch.setattr(schema, "VERSION_LOCATIONS", (*schema.VERSION_LOCATIONS, str(versions)))
    assert schema.head_revision() == rev
    return rev


# ---------------------------------------------------------------- (a) models == migrations


def test_models_and_migrations_agree(blank_url: str) -> None:
    """`alembic check`: after upgrade head the models and the schema have no difference.
    Failing here means a model changed without a revision (README: Store and migrations)."""

    schema.upgrade_store(blank_url)
    with raw_engine(blank_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
        enums = _db_enums(conn)
    assert diff == [], f"models and migrations differ; add a revision ({NEW_REVISION}): {diff}"
    # compare_metadata does not look at enum labels: a PackageState member added without a
    # revision would fail on PostgreSQL only, at the first write.
    if enums is not None:
        wanted = {c.type.name: list(c.type.enums) for t in SQLModel.metadata.tables.values()
                  for c in t.columns if isinstance(c.type, Enum) and c.type.name}
        assert enums == wanted


def _db_enums(conn: Connection) -> dict[str, list[str]] | None:
    if conn.dialect.name != "postgresql":
        return None
    return {e["name"]: list(e["labels"]) for e in inspect(conn).get_enums()}  # type: ignore[attr-defined]


def test_one_head_and_the_baseline_is_the_root() -> None:
    script = schema.script_directory()
    assert len(script.get_heads()) == 1, "merge the heads: alembic merge heads"
    assert [r.revision for r in script.walk_revisions()][-1] == schema.BASELINE


def test_downgrade_to_nothing_and_up_again(blank_url: str) -> None:
    from alembic import command

    schema.upgrade_store(blank_url)
    with schema.migration_connection(blank_url) as conn:
        command.downgrade(schema.alembic_config(conn), "base")
        assert set(inspect(conn).get_table_names()) == {schema.VERSION_TABLE}
        assert not _db_enums(conn)  # PostgreSQL's packagestate type went with its table
    schema.empty_store(blank_url)
    assert schema.upgrade_store(blank_url).after == schema.head_revision()


# ---------------------------------------------------------------- (b) upgrades lose nothing


def test_upgrade_from_baseline_to_head_loses_no_row(blank_url: str, tmp_path: Path,
                                                     rehearsal: str) -> None:
    real_head = schema.script_directory().get_revision(rehearsal).down_revision
    schema.upgrade_store(blank_url, schema.BASELINE)
    _fill_at_baseline(blank_url, tmp_path)
    before = _rows(blank_url)
    assert all(before.values()), [t for t, rows in before.items() if not rows]

    assert schema.upgrade_store(blank_url, str(real_head)).after == real_head
    assert _rows(blank_url, like=before) == before
    with Session(raw_engine(blank_url)) as s:  # 0002 chained the events already there
        chain = audit.verify_chain(s)
        assert chain.ok and chain.count == len(before["auditevent"]), chain
    # ... and on through a revision that alters (on SQLite: copies) tables full of data.
    shape = _constraints(blank_url)
    assert schema.upgrade_store(blank_url).after == rehearsal
    assert _rows(blank_url, like=before) == before
    assert _constraints(blank_url) == shape  # foreign keys, unique constraints, indexes kept
    with raw_engine(blank_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM release WHERE rehearsal_flag = :f"),
                            {"f": False}).scalar() == len(before["release"])


def _fill_at_baseline(url: str, tmp_path: Path) -> None:
    """Every table at revision 0001 gets rows written by wavekit's own code: the example
    catalog, audit events and one row of each other kind, written at head into a scratch
    store and copied into the store column by column (the columns 0001 has)."""
    scratch = f"sqlite:///{tmp_path / 'scratch.db'}"
    now = utcnow()
    with session_scope(scratch) as s:
        write_catalog(s, load_catalog(EXAMPLE_CATALOG), source="example")
    with Session(get_engine(scratch)) as s:
        def first(model: type, offset: int = 0) -> Any:
            return s.exec(sqlmodel.select(model).offset(offset)).first()

        pkg, ent = first(models.RolePackage), first(models.Entitlement)
        assert pkg is not None and ent is not None
        release = models.Release(package_key=pkg.key, wave=pkg.wave, adds=2, closed=False)
        s.add(release)
        s.flush()
        assert release.id is not None
        s.add_all([
            models.BundleGrant(release_id=release.id, kind="prior", identity="ann",
                               entitlement=ent.key),
            models.BundleScope(release_id=release.id, entitlement=ent.key),
            models.Approval(release_id=release.id, package_key=pkg.key, decision="approved",
                            deadline=now + timedelta(hours=24)),
            models.HealthCheckResult(release_id=release.id, package_key=pkg.key,
                                     check_name="adoption", due_at=now, measured_at=now,
                                     value=0.5, threshold=0.4, verdict="passed"),
            models.SandboxGrant(identity="ann", entitlement=ent.key),
            models.TelemetrySample(kind="usage", at=now, package_key=pkg.key, identity="ann"),
            models.MaintenanceTask(dedupe_key="drill:x", package_key=pkg.key, kind="drill",
                                   reason="fallback drill pending"),
            models.SlackRequestSeen(signature="v0=abc"),
        ])
        if not first(models.SodRule):
            other = first(models.Entitlement, 1)
            assert other is not None
            s.add(models.SodRule(key="sod-test", entitlement_a=ent.key,
                                 entitlement_b=other.key))
        if not first(models.PackageDependency):
            dep = first(models.RolePackage, 1)
            assert dep is not None
            s.add(models.PackageDependency(package_key=pkg.key, depends_on=dep.key))
        for i in range(3):
            audit.record(s, "test.event", package_key=pkg.key, release_id=release.id,
                         n=i, note="é ✓ {json}")
        s.commit()
    source, target = MetaData(), MetaData()
    with raw_engine(scratch).connect() as src, schema.migration_connection(url) as dst:
        source.reflect(src)
        target.reflect(dst)
        for table in target.sorted_tables:
            if table.name == schema.VERSION_TABLE:
                continue
            columns = [c.name for c in table.columns]
            rows = [dict(r._mapping) for r in
                    src.execute(select(*[source.tables[table.name].c[c] for c in columns]))]
            if rows:
                dst.execute(table.insert(), rows)


def _rows(url: str, like: dict[str, list[dict]] | None = None) -> dict[str, list[dict]]:
    """Every row of every table (of `like`'s tables and columns, when given), in key order."""
    md = MetaData()
    out: dict[str, list[dict]] = {}
    with raw_engine(url).connect() as conn:
        md.reflect(conn)
        for name, table in sorted(md.tables.items()):
            if name == schema.VERSION_TABLE or (like is not None and name not in like):
                continue
            keep = (list(like[name][0]) if like and like[name]
                    else [c.name for c in table.columns])
            order = [c for c in table.primary_key.columns]
            out[name] = [dict(r._mapping) for r in
                         conn.execute(select(*[table.c[c] for c in keep]).order_by(*order))]
    return out


def _constraints(url: str) -> dict[str, tuple]:
    def cols(items: list[Any], key: str) -> list:
        return sorted(sorted(i[key]) if isinstance(i[key], list) else i[key] for i in items)

    with raw_engine(url).connect() as conn:
        insp = inspect(conn)
        return {t: (sorted((tuple(fk["constrained_columns"]), fk["referred_table"],
                            tuple(fk["referred_columns"])) for fk in insp.get_foreign_keys(t)),
                    cols(insp.get_unique_constraints(t), "column_names"),
                    sorted(i["name"] for i in insp.get_indexes(t)
                           if "rehearsal" not in (i["name"] or "")))
                for t in insp.get_table_names()}


# ---------------------------------------------------------------- (c) a store behind head


def _one_line(result) -> str:  # type: ignore[no-untyped-def]
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_a_store_behind_head_stops_the_cli_and_the_runtime(blank_url: str, rehearsal: str,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    schema.upgrade_store(blank_url, schema.BASELINE)
    runner = CliRunner()
    where = masked_url(blank_url)
    expected = (f"the store at {where} is at revision {schema.BASELINE}, wavekit needs "
                f"{rehearsal}: run `wavekit db upgrade`")
    for args in (["status"], ["load", str(EXAMPLE_CATALOG)], ["report"]):
        result = runner.invoke(app, [*args, "--database-url", blank_url])
        assert result.exit_code == 1, result.output
        assert _one_line(result) == expected
    assert "s3cret" not in expected
    # Flow commands check before any flow run starts; so does every flow, in build_runtime.
    monkeypatch.setenv("WAVEKIT_DATABASE_URL", blank_url)
    result = runner.invoke(app, ["watch"])
    assert result.exit_code == 1 and _one_line(result) == expected
    with pytest.raises(schema.StoreNotReady) as stopped:
        build_runtime(load_settings(database_url=blank_url))
    assert str(stopped.value) == expected

    current = runner.invoke(app, ["db", "current", "--database-url", blank_url])
    assert current.exit_code == 0 and _one_line(current) == expected
    upgraded = runner.invoke(app, ["db", "upgrade", "--database-url", blank_url])
    assert upgraded.exit_code == 0, upgraded.output
    assert _one_line(upgraded) == (f"upgraded the store at {where} from revision "
                                   f"{schema.BASELINE} to {rehearsal} (head)")
    assert runner.invoke(app, ["status", "--database-url", blank_url]).exit_code == 0
    assert runner.invoke(app, ["db", "upgrade", "--database-url", blank_url]).output.strip() \
        == f"the store at {where} is at revision {rehearsal} (head)"


def test_a_store_ahead_of_this_wavekit_stops_too(blank_url: str, rehearsal: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    schema.upgrade_store(blank_url)
    monkeypatch.undo()  # this wavekit no longer knows the rehearsal revision
    result = CliRunner().invoke(app, ["status", "--database-url", blank_url])
    assert result.exit_code == 1
    assert _one_line(result) == (
        f"the store at {masked_url(blank_url)} is at revision {rehearsal}, which this "
        f"wavekit does not know (it needs {schema.head_revision()}): upgrade wavekit")
    result = CliRunner().invoke(app, ["db", "upgrade", "--database-url", blank_url])
    assert result.exit_code == 1 and "upgrade wavekit" in _one_line(result)


def test_an_empty_store_is_created_at_head_by_the_first_command(blank_url: str) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "current", "--database-url", blank_url]).output.startswith(
        f"the store at {masked_url(blank_url)} is empty")
    result = runner.invoke(app, ["load", str(EXAMPLE_CATALOG), "--database-url", blank_url])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["db", "current", "--database-url", blank_url]).output.strip() \
        == f"the store at {masked_url(blank_url)} is at revision " \
           f"{schema.head_revision()} (head)"


def test_passwords_are_masked() -> None:
    masked = masked_url("postgresql+psycopg2://wavekit:hunter2@db.internal:5432/wavekit")
    assert masked == "postgresql+psycopg2://wavekit:***@db.internal:5432/wavekit"


# ---------------------------------------------------------------- (d) stores from before


def _pre_migration_store(url: str) -> None:
    """A store as wavekit made it before migrations: create_all, no alembic_version. Once
    head is past 0001 the models are no longer 0001's, so it is 0001 without its stamp."""
    if schema.head_revision() == schema.BASELINE:
        SQLModel.metadata.create_all(raw_engine(url))
    else:
        schema.upgrade_store(url, schema.BASELINE)
        with schema.migration_connection(url) as conn:
            conn.execute(text(f"DROP TABLE {schema.VERSION_TABLE}"))
    schema._forget(url)


def test_db_upgrade_stamps_a_store_from_before_migrations(blank_url: str,
                                                          tmp_path: Path) -> None:
    _pre_migration_store(blank_url)
    _fill_at_baseline(blank_url, tmp_path)
    before = _rows(blank_url)
    assert all(before.values())
    runner = CliRunner()
    where = masked_url(blank_url)
    stopped = runner.invoke(app, ["status", "--database-url", blank_url])
    assert stopped.exit_code == 1
    assert _one_line(stopped) == (f"the store at {where} is at revision none (created before "
                                  f"migrations), wavekit needs {schema.head_revision()}: run "
                                  "`wavekit db upgrade`")
    result = runner.invoke(app, ["db", "upgrade", "--database-url", blank_url])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (f"the store at {where} was created before "
                                             f"migrations: stamped {schema.BASELINE}")
    assert schema.read_state(blank_url, raw_engine(blank_url)).at_head
    assert _rows(blank_url, like=before) == before
    assert runner.invoke(app, ["status", "--database-url", blank_url]).exit_code == 0


def test_a_create_all_store_of_these_models_is_stamped_head(blank_url: str) -> None:
    """A store made by `create_all` of the models as they are now (a wavekit from between a
    model change and its revision) has head's tables: it is stamped head, not 0001."""
    SQLModel.metadata.create_all(raw_engine(blank_url))
    schema._forget(blank_url)
    result = schema.upgrade_store(blank_url)
    assert result.stamped == result.after == schema.head_revision()


def test_db_upgrade_refuses_tables_that_are_no_revisions(blank_url: str) -> None:
    _pre_migration_store(blank_url)
    with schema.migration_connection(blank_url) as conn:
        conn.execute(text("DROP TABLE slackrequestseen"))
        conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY)"))
    result = CliRunner().invoke(app, ["db", "upgrade", "--database-url", blank_url])
    assert result.exit_code == 1
    line = _one_line(result)
    assert line.startswith(f"the store at {masked_url(blank_url)} has tables but no "
                           "revision, and they are no revision's (2 difference(s) from the "
                           "nearest, first: ")
    assert "table slackrequestseen is missing" in line and line.endswith("nothing was changed")
    with raw_engine(blank_url).connect() as conn:
        assert schema.VERSION_TABLE not in inspect(conn).get_table_names()
