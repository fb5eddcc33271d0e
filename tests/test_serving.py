"""`wavekit serve` serves the deployments exactly as prefect.yaml declares them.

prefect.yaml is read here on its own (plain YAML), not through wavekit's loader, so a loader
that dropped or bent a schedule, a parameter or a limit fails this test. Prefect has no
public loader of prefect.yaml deployments (`prefect deploy`'s are private), so wavekit keeps
its own small one and converts schedules with `prefect deploy`'s converter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from wavekit.present.cli import app
from wavekit.present.serving import build_deployments, load_deployment_specs

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in doc["deployments"]}


def _schedule(created: Any) -> dict[str, Any]:
    s = created.schedule
    return {"cron": getattr(s, "cron", None),
            "interval": s.interval.total_seconds() if hasattr(s, "interval") else None,
            "timezone": s.timezone, "active": created.active,
            "parameters": created.parameters or {}}


def _declared_schedule(s: dict[str, Any]) -> dict[str, Any]:
    # An interval without a timezone runs in UTC, as `prefect deploy` creates it.
    return {"cron": s.get("cron"), "interval": s.get("interval"),
            "timezone": s.get("timezone") or "UTC", "active": s.get("active", True),
            "parameters": s.get("parameters") or {}}


def test_served_deployments_carry_exactly_what_prefect_yaml_declares() -> None:
    declared = _declared()
    served = {d.name: d for d in build_deployments(load_deployment_specs())}
    assert set(served) == set(declared)
    assert any(spec.get("schedules") for spec in declared.values())  # the test has teeth
    for name, spec in declared.items():
        d = served[name]
        assert d.entrypoint == spec["entrypoint"], name
        assert d.parameters == (spec.get("parameters") or {}), name
        assert d.tags == spec.get("tags", []), name
        assert [_schedule(s) for s in d.schedules] == [
            _declared_schedule(s) for s in spec.get("schedules") or []], name
        limit = spec.get("concurrency_limit")
        if limit is None:
            assert d.concurrency_limit is None, name
        else:
            assert d.concurrency_limit == limit["limit"], name
            assert d.concurrency_options.collision_strategy.value == \
                limit["collision_strategy"], name
    without = build_deployments(load_deployment_specs(), schedules=False)
    assert all(not d.schedules for d in without)  # --no-schedules


def test_serve_takes_the_store_url_like_every_command(tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    # Another store in the environment: the option wins (undone after the test).
    monkeypatch.setenv("WAVEKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    seen: dict[str, str | None] = {}

    def serve_all(*, schedules: bool = True) -> None:  # the served runs read the environment
        seen["url"] = os.environ.get("WAVEKIT_DATABASE_URL")

    monkeypatch.setattr("wavekit.present.serving.serve_all", serve_all)
    result = CliRunner().invoke(app, ["serve", "--no-schedules", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert seen["url"] == url
    assert (tmp_path / "served.db").exists()  # the store was checked (created) before serving

