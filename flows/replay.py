"""Replay a package's health checks over recorded telemetry, before launch: no target is read
or written. The steps are wavekit.workflow.replay; this module only orchestrates them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from wavekit.present.replay_report import render_replay_report
from wavekit.present.reports import artifact_key
from wavekit.workflow import replay
from wavekit.workflow.runtime import current_runtime


@flow(name="replay-package", log_prints=True, flow_run_name="replay {package_key}")
def replay_package(package_key: str, telemetry_dir: str | None = None,
                   deployed_at: datetime | None = None, until: datetime | None = None,
                   settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the package's health checks would have said, had it been deployed at
    `deployed_at`, over the telemetry in `telemetry_dir` (default: the store's); `settings`
    tries other thresholds, e.g. {"ticket_noise": {"threshold": 3}}."""
    with current_runtime() as rt:
        result = replay.replay(rt, package_key,
                               telemetry_dir=Path(telemetry_dir) if telemetry_dir else None,
                               deployed_at=deployed_at, until=until, settings=settings)
        create_markdown_artifact(key=artifact_key("replay", package_key),
                                 markdown=render_replay_report(result, rt.database_url),
                                 description=f"Replay of {package_key}: {result.outcome}")
    print(f"{package_key}: {result.outcome} — {result.reason}")
    return {"outcome": result.outcome, "action": result.action,
            "decided_at": result.decided_at.isoformat() if result.decided_at else None,
            "reason": result.reason, "failing_checks": list(result.failing_checks)}
