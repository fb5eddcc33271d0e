"""The rollback-drill flow under a Prefect test harness, on the sandbox and on a real SCIM
server: a drill records its result, the gate and the KPI move because of it, a slow or
inexact restore records a failed drill, and production is never written."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import text
from sqlmodel import col, select
from typer.testing import CliRunner

from flows.drills import rollback_drill
from tests.support.flows import ScriptedMetrics
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import raw_engine, session_scope
from wavekit.adapters.store.models import DrillRun
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.base import ApplyResult, ClosesOnExit, Target
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.clock import ManualClock
from wavekit.domain.grants import Grant, GrantSet
from wavekit.examples import EXAMPLE_CATALOG, EXAMPLE_SIGNED_DRILLS, seed_target
from wavekit.present.cli import app
from wavekit.present.kpis import compute_kpis
from wavekit.present.reports import write_reports
from wavekit.workflow import drills, maintenance
from wavekit.workflow.runtime import Runtime, build_runtime, runtime_override

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]
SD, HR = "service-desk-resolver", "hr-case-intake-specialist"
T0 = datetime(2026, 4, 20, 9, tzinfo=UTC)
# The example world's recorded drills (an hour before the real now; after T0) count too.
EXAMPLE = len(EXAMPLE_SIGNED_DRILLS)
# Production access in Service Desk's scope before any drill: two members already resolve
# incidents, a non-member holds emergency elevation. The drill must put exactly this back.
SD_HOLDINGS = [Grant("acampbell", "itsm-incident-resolve"), Grant("acarter", "itsm-kb-author"),
               Grant("hwilson", "itsm-emergency-elevation")]


class Spy(ClosesOnExit):
    """Production, watched: every write is remembered (a drill must make none)."""

    def __init__(self, inner: Target) -> None:
        self.inner, self.name, self.writes = inner, inner.name, []  # type: ignore[var-annotated]

    def read_grants(self, entitlements: Iterable[str]) -> GrantSet:
        return self.inner.read_grants(entitlements)  # type: ignore[arg-type]

    def apply(self, adds, removes, **kw) -> ApplyResult:  # type: ignore[no-untyped-def]
        adds, removes = list(adds), list(removes)
        self.writes.append((adds, removes))
        return self.inner.apply(adds, removes, **kw)

    def close(self) -> None:
        self.inner.close()


class Slow(Spy):
    """A drill target whose every write takes `minutes` on the injected clock."""

    def __init__(self, inner: Target, clock: ManualClock, minutes: float) -> None:
        super().__init__(inner)
        self.clock, self.minutes = clock, minutes

    def apply(self, adds, removes, **kw) -> ApplyResult:  # type: ignore[no-untyped-def]
        self.clock.advance(timedelta(minutes=self.minutes))
        return super().apply(adds, removes, **kw)


class Lossy(Spy):
    """A drill target that silently drops one removal of its third write (the restore)."""

    def apply(self, adds, removes, **kw) -> ApplyResult:  # type: ignore[no-untyped-def]
        removes = sorted(removes)
        if len(self.writes) == 2 and removes:
            self.lost = removes.pop(0)
        return super().apply(adds, removes, **kw)


def sandbox_rows(url: str, sandbox: str = "default") -> bytes:
    """A sandbox's grants as bytes, straight from the table."""
    with raw_engine(url).connect() as c:
        rows = c.execute(text("SELECT sandbox, identity, entitlement FROM sandboxgrant WHERE "
                              "sandbox = :s ORDER BY identity, entitlement"), {"s": sandbox})
        return json.dumps([list(r) for r in rows]).encode()


def gate(rt: Runtime, key: str = SD):  # type: ignore[no-untyped-def]
    return drills.drill_gate(rt, key)


def kpi(url: str, as_of: datetime) -> tuple[int, int]:
    with session_scope(url) as s:
        return compute_kpis(s, as_of).fallback_tested


def backlog(rt: Runtime, as_of: datetime) -> maintenance.MaintenancePlan:
    return maintenance.plan_from_store(rt, as_of)


def runs(url: str, key: str = SD) -> list[DrillRun]:
    """The package's drills (not the example world's signed ones)."""
    with session_scope(url) as s:
        return list(s.exec(select(DrillRun).where(DrillRun.package_key == key,
                                                  DrillRun.kind == "automated")
                           .order_by(col(DrillRun.id))))


def scope_of(url: str, key: str) -> frozenset[str]:
    with session_scope(url) as s:
        return load_package_view(s, key).scope


@pytest.fixture
def production(loaded_store: str) -> SandboxTarget:
    target = SandboxTarget(loaded_store)
    seed_target(target)
    target.apply(SD_HOLDINGS, [])
    return target


# ------------------------------------------------------------------ sandbox


def test_a_drill_through_the_cli_records_a_passing_drill_and_opens_the_gate(
        loaded_store: str, production: SandboxTarget, tmp_path: Path) -> None:
    rt = build_runtime(load_settings(database_url=loaded_store), metrics=ScriptedMetrics())
    before = sandbox_rows(loaded_store)
    now = datetime.now(UTC)
    assert not gate(rt).passed and kpi(loaded_store, now) == (EXAMPLE, 5)
    night = backlog(rt, now)
    assert f"drill:{SD}" in {i.dedupe_key for i in night.open}
    maintenance.record_backlog(rt, night, now)

    result = CliRunner().invoke(app, ["drill", SD, "--as", "rm-alex", "--database-url",
                                      loaded_store], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "passed" in result.output and "gate rollback_drill passes" in result.output

    assert sandbox_rows(loaded_store) == before  # production, byte for byte
    assert gate(rt).passed and "rollback drill passed on" in gate(rt).reason
    later = datetime.now(UTC)
    assert kpi(loaded_store, later) == (EXAMPLE + 1, 5)
    closing = backlog(rt, later)
    assert [i.dedupe_key for i in closing.close] == [f"drill:{SD}"]
    assert f"drill:{SD}" not in {i.dedupe_key for i in closing.open}

    (run,) = runs(loaded_store)
    members = len(_members(loaded_store, SD))
    assert (run.status, run.kind, run.actor) == ("passed", "automated", "rm-alex")
    assert (run.target, run.production_target) == (f"sandbox:drill-{SD}", "sandbox:default")
    assert run.flow_run_id
    assert run.production_count == run.prior_count == run.readback_count == 3
    assert run.seeded_added == 3 and run.seeded_removed == 0
    assert run.adds == members * 14 - 2  # two members already held theirs
    assert run.withdrawn == run.adds and run.re_granted == 0
    assert run.mismatches == [] and run.drift_outside == [] and run.failure == ""
    assert run.started_at <= run.deployed_at <= run.rollback_started_at <= run.finished_at
    assert 0 <= run.duration_seconds < 30 * 60
    # The drill sandbox was put back to production's copy, exactly.
    drill_sandbox = SandboxTarget(loaded_store, f"drill-{SD}")
    assert drill_sandbox.read_grants(scope_of(loaded_store, SD)) == frozenset(SD_HOLDINGS)

    with session_scope(loaded_store) as s:
        actions = [e.action for e in audit.events(s, package_key=SD) if
                   e.action.startswith("drill_")]
        chain = audit.verify_chain(s)
    assert actions == ["drill_started", "drill_seeded", "drill_deployed",
                       "drill_rollback_started", "drill_recorded"]
    assert chain.ok, chain
    written = write_reports(loaded_store, tmp_path / "out")
    report = (tmp_path / "out" / f"drill-{SD}-{run.id}.md")
    assert report in written
    text_ = report.read_text()
    assert "**Passed:**" in text_ and "**Equal: yes.** 3 == 3 grants" in text_
    assert "sandbox:default (read, never written)" in text_
    with session_scope(loaded_store) as s:
        assert audit.head_from_text(text_) == audit.head(s)
    dashboard = (tmp_path / "out" / "dashboard.html").read_text()
    assert f"Rollback drilled {run.finished_at:%Y-%m-%d}" in dashboard


def _members(url: str, key: str) -> frozenset[str]:
    with session_scope(url) as s:
        return load_package_view(s, key).members


def test_a_drill_re_grants_what_the_package_retires_and_never_writes_production(
        loaded_store: str, production: SandboxTarget) -> None:
    spy = Spy(production)
    settings = load_settings(database_url=loaded_store)
    before = sandbox_rows(loaded_store)
    with runtime_override(lambda: build_runtime(settings, target=spy,
                                                metrics=ScriptedMetrics())):
        state = rollback_drill(HR, actor="rm-alex", return_state=True)
    assert state.is_completed(), state.message
    assert spy.writes == [] and sandbox_rows(loaded_store) == before
    (run,) = runs(loaded_store, HR)
    assert run.status == "passed" and run.retirements == 34 > 0  # archive grants retired
    assert run.re_granted == run.retirements and run.withdrawn == run.adds
    assert run.readback_count == run.prior_count == run.production_count
    assert SandboxTarget(loaded_store, f"drill-{HR}").read_grants(scope_of(loaded_store, HR)) \
        == production.read_grants(scope_of(loaded_store, HR))


def test_a_restore_slower_than_the_objective_fails_the_drill(
        loaded_store: str, production: SandboxTarget) -> None:
    clock = ManualClock(T0)
    slow = Slow(SandboxTarget(loaded_store, "drill-slow"), clock, minutes=31)
    settings = load_settings(database_url=loaded_store)
    rt = build_runtime(settings, target=production, clock=clock, drill_target=slow,
                       metrics=ScriptedMetrics())
    before = sandbox_rows(loaded_store)
    with runtime_override(lambda: rt):
        state = rollback_drill(SD, objective_minutes=30, return_state=True)
        assert state.is_failed() and state.name == "Drill failed"
        assert "over the rollback objective of 30 min" in state.message
        (run,) = runs(loaded_store)
        assert run.status == "failed" and run.duration_seconds == 31 * 60  # the clock's
        assert run.readback_count == run.prior_count == 3 and run.mismatches == []
        assert run.failure == "restore took 31m 00s, over the rollback objective of 30 min"
        assert not gate(rt).passed and "failed: restore took 31m" in gate(rt).reason
        assert kpi(loaded_store, clock.now()) == (0, 5)
        due = {i.dedupe_key: i.reason for i in backlog(rt, clock.now()).open}
        assert due[f"drill:{SD}"].startswith(f"the last rollback drill ({T0:%Y-%m-%d}) failed")
        # The same restore within a wider objective passes: the objective is what decides.
        assert rollback_drill(SD, objective_minutes=45, return_state=True).is_completed()
        assert gate(rt).passed and kpi(loaded_store, clock.now()) == (1, 5)
        # ... until it is older than the review cadence.
        clock.advance(timedelta(days=31))
        assert not gate(rt).passed and kpi(loaded_store, clock.now()) == (0, 5)
    assert sandbox_rows(loaded_store) == before


def test_a_read_back_that_differs_fails_the_drill(loaded_store: str,
                                                  production: SandboxTarget,
                                                  tmp_path: Path) -> None:
    lossy = Lossy(SandboxTarget(loaded_store, "drill-lossy"))
    settings = load_settings(database_url=loaded_store)
    rt = build_runtime(settings, target=production, drill_target=lossy,
                       metrics=ScriptedMetrics())
    before = sandbox_rows(loaded_store)
    with runtime_override(lambda: rt):
        state = rollback_drill(SD, return_state=True)
    assert state.is_failed()
    (run,) = runs(loaded_store)
    lost = lossy.lost
    assert run.status == "failed" and run.mismatches == [[lost.identity, lost.entitlement]]
    assert run.readback_count == run.prior_count + 1
    assert run.failure == ("1 grant(s) the package changed differ from the prior bundle after "
                           "the rollback")
    assert not gate(rt).passed and kpi(loaded_store, datetime.now(UTC)) == (EXAMPLE, 5)
    assert sandbox_rows(loaded_store) == before
    write_reports(loaded_store, tmp_path)
    report = (tmp_path / f"drill-{SD}-{run.id}.md").read_text()
    assert "**Failed:**" in report and "**Equal: NO.**" in report
    assert f"- {lost.identity} → {lost.entitlement}" in report


def test_a_drill_that_cannot_finish_is_recorded_failed(loaded_store: str,
                                                       production: SandboxTarget) -> None:
    class Refusing(Spy):
        def apply(self, adds, removes, **kw):  # type: ignore[no-untyped-def]
            from wavekit.adapters.targets.base import TargetError

            raise TargetError("drill directory is read-only")

    rt = build_runtime(load_settings(database_url=loaded_store), target=production,
                       drill_target=Refusing(SandboxTarget(loaded_store, "drill-x")),
                       metrics=ScriptedMetrics())
    with runtime_override(lambda: rt):
        assert rollback_drill(SD, return_state=True).is_failed()
    (run,) = runs(loaded_store)
    assert run.status == "failed" and run.finished_at is not None
    assert run.failure == ("the drill did not finish: TargetError: drill directory is "
                           "read-only")
    assert not gate(rt).passed


# ------------------------------------------------------------------ a real SCIM server


def _raw(config) -> bytes:  # type: ignore[no-untyped-def]
    """Production's Users and Groups exactly as the SCIM server answers them."""
    headers = {"Authorization": f"Bearer {config.token.get_secret_value()}"}
    return b"".join(httpx.get(f"{config.base_url}/{kind}", params={"count": 1000},
                              headers=headers, timeout=30).content
                    for kind in ("Users", "Groups"))


def test_a_drill_on_a_scim_server(loaded_store: str, scim_server, scim_directory,
                                  monkeypatch) -> None:
    from wavekit.adapters.targets.scim import ScimTarget, provision_scim_directory
    from wavekit.devservers.scim import fresh_tenant

    people = pd.read_csv(EXAMPLE_CATALOG / "identities.csv", dtype=str).fillna("")
    groups = list(pd.read_csv(EXAMPLE_CATALOG / "entitlements.csv", dtype=str)["key"])
    provision_scim_directory(scim_directory, people.to_dict("records"), groups)
    production = ScimTarget(scim_directory)
    seed_target(production)
    production.apply(SD_HOLDINGS, [])
    drill_dir = fresh_tenant(scim_server)  # another directory: empty, the drill provisions it
    monkeypatch.setenv("WAVEKIT_DRILL_TARGET", "scim")
    monkeypatch.setenv("WAVEKIT_DRILL_SCIM_URL", drill_dir.base_url)
    monkeypatch.setenv("WAVEKIT_DRILL_SCIM_TOKEN", drill_dir.token.get_secret_value())
    settings = load_settings(database_url=loaded_store)
    before = _raw(scim_directory)
    scope = scope_of(loaded_store, SD)
    try:
        # As configured (WAVEKIT_DRILL_*): passed, the gate opens, the KPI counts it.
        with runtime_override(lambda: build_runtime(settings, target=production,
                                                    metrics=ScriptedMetrics())):
            state = rollback_drill(SD, actor="rm-alex", return_state=True)
        assert state.is_completed(), state.message
        rt = build_runtime(settings, target=production, metrics=ScriptedMetrics())
        assert gate(rt).passed and kpi(loaded_store, datetime.now(UTC)) == (EXAMPLE + 1, 5)
        with ScimTarget(drill_dir) as fresh:  # production's copy of the scope, read back
            assert fresh.read_grants(scope) == frozenset(SD_HOLDINGS)
        # Then through the same directory losing one write of the restore: failed, and the
        # latest drill decides: the gate shuts again.
        lossy = Lossy(ScimTarget(drill_dir))
        with runtime_override(lambda: build_runtime(settings, target=production,
                                                    drill_target=lossy,
                                                    metrics=ScriptedMetrics())):
            assert rollback_drill(SD, return_state=True).is_failed()
        assert not gate(rt).passed and kpi(loaded_store, datetime.now(UTC)) == (EXAMPLE, 5)
    finally:
        production.close()
    assert _raw(scim_directory) == before  # production, byte for byte
    passed, failed = runs(loaded_store)
    assert passed.status == "passed" and passed.target == ScimTarget(drill_dir).name
    assert passed.production_target == production.name != passed.target
    assert passed.prior_count == passed.readback_count == passed.production_count == 3
    assert passed.adds == len(_members(loaded_store, SD)) * 14 - 2
    assert failed.status == "failed" and failed.mismatches == [[lossy.lost.identity,
                                                                lossy.lost.entitlement]]
