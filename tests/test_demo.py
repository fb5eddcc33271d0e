"""`wavekit demo` tells one coherent story: one clock drives every timestamp it writes, the
degrading package is rolled back for its ticket noise, the drilled package widens to all its
members, and `wavekit status` afterwards shows the demo's closing numbers."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from rich.console import Console
from sqlmodel import select
from typer.testing import CliRunner

from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import AuditEvent, RolePackage
from wavekit.domain.clock import as_utc
from wavekit.examples import EXAMPLE_CATALOG
from wavekit.present.cli import app
from wavekit.present.demo import DEGRADING, DRILLED, run_demo

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _kpis(text: str) -> list[str]:
    """The lines of the closing 'Deploy & Maintain' table, as printed."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if "Deploy & Maintain" in ln)
    end = next(i for i in range(start + 1, len(lines)) if "Role packages" in lines[i])
    return [re.sub(r"\s+", " ", ln).strip() for ln in lines[start:end] if ln.strip()]


def _first(events: list[AuditEvent], action: str, **detail: object) -> AuditEvent:
    return next(e for e in events if e.action == action
                and all((e.detail or {}).get(k) == v for k, v in detail.items()))


def test_the_demo_tells_one_coherent_story(tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'demo' / 'wavekit.db'}"
    monkeypatch.setenv("WAVEKIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WAVEKIT_DATABASE_URL", url)  # run_demo sets it too; undone after
    console = Console(record=True, width=200)
    run_demo(console, target="sandbox", data_dir=tmp_path / "demo", catalog=EXAMPLE_CATALOG)
    shown = console.export_text()

    with session_scope(url) as s:
        events = list(s.exec(select(AuditEvent).order_by(AuditEvent.seq)))  # type: ignore[arg-type]
        states = {p.key: p.state for p in s.exec(select(RolePackage))}
    by_package: dict[str, list[AuditEvent]] = {}
    for e in events:
        if e.package_key:
            by_package.setdefault(e.package_key, []).append(e)

    # One clock: within a package, what was written later is never dated earlier.
    for key, evs in by_package.items():
        for before, after in itertools.pairwise(evs):
            assert as_utc(after.at) >= as_utc(before.at), (
                f"{key}: {after.action} at {after.at} is dated before {before.action} at "
                f"{before.at}, which was written first")
    for key, evs in by_package.items():  # each deploy's batches lie within the deploy
        for deployed in (e for e in evs if e.action == "deployed"):
            batches = [e for e in evs if e.action == "deploy_batch"
                       and e.release_id == deployed.release_id]
            began = _first([e for e in evs if e.release_id == deployed.release_id],
                           "state_changed", to_state="deploying")
            assert batches, key
            assert all(as_utc(began.at) <= as_utc(b.at) <= as_utc(deployed.at)
                       for b in batches), key

    # HR Case Intake Specialist degrades and is rolled back for its ticket noise, after the
    # failed check that caused it.
    assert states[DEGRADING] == "rolled_back"
    hr = by_package[DEGRADING]
    started = _first(hr, "rollback_started")
    assert "ticket_noise" in started.detail["reason"], started.detail
    failed = [e for e in hr if e.action == "health_checked"
              and e.detail.get("check") == "ticket_noise" and e.detail["verdict"] == "failed"]
    assert failed and as_utc(failed[-1].at) <= as_utc(started.at)
    assert as_utc(_first(hr, "deployed").at) < as_utc(failed[0].at)

    # Service Desk Resolver was drilled (a passed drill), then widened to all its members.
    sd = by_package[DRILLED]
    assert _first(sd, "drill_recorded").detail["passed"] is True
    widened = [e.detail for e in sd if e.action == "cohort_step_deployed"]
    assert [d["step"] for d in widened] == [1, 2, 3], widened
    assert widened[-1]["granted"] == widened[-1]["total"] > 0, widened
    assert as_utc(_first(sd, "drill_recorded").at) < as_utc(_first(sd, "plan_staged").at)

    # The closing numbers: a positive median deploy time, and `wavekit status` agrees.
    closing = _kpis(shown)
    median = next(ln for ln in closing if "Median deploy time" in ln)
    assert re.search(r"[1-9]", median.split("Median deploy time")[1]), median
    status = CliRunner().invoke(app, ["status", "--database-url", url],
                                env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    assert _kpis(status.output) == closing
    print(f"demo test: {len(events)} audit events")
