"""Replay a package's health checks over recorded telemetry, before launch (domain.replay).

Reads the package from the store and the telemetry from files (validated as ingest validates
them, stored nowhere) or from the store; never touches a target and writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from wavekit.adapters.catalog_schema import health_overrides
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.telemetry import load_frames, read_telemetry, telemetry_files
from wavekit.domain.clock import as_utc
from wavekit.domain.health import checks_for
from wavekit.domain.replay import ReplayResult, replay_package
from wavekit.workflow.runtime import Runtime

BASELINE_DAYS = 28  # as the live watch (TelemetryMetrics)


class ReplayRefused(ValueError):
    """The replay cannot run as asked (unknown package, bad setting, no telemetry)."""


def replay(rt: Runtime, package_key: str, *, telemetry_dir: Path | None = None,
           deployed_at: datetime | None = None, until: datetime | None = None,
           settings: Mapping[str, Any] | None = None) -> ReplayResult:
    """What the watch would have said had `package_key` been deployed at `deployed_at`.

    `settings` are health overrides on top of the catalog's (`{"ticket_noise":
    {"threshold": 3}}`), checked as the catalog checks them. `deployed_at` defaults to the
    first day with a full baseline of telemetry before it.
    """
    with session_scope(rt.database_url) as s:
        if s.get(RolePackage, package_key) is None:
            raise ReplayRefused(f"no package {package_key!r} in the store")
        view = load_package_view(s, package_key)
    merged: dict[str, Any] = dict(view.health)
    for name, given in (settings or {}).items():
        base = merged.get(name)
        merged[name] = ({**base, **given} if isinstance(base, dict) and isinstance(given, dict)
                        else given)
    try:
        checks = checks_for(health_overrides(merged, where=f"{package_key}.health"))
    except ValueError as exc:
        raise ReplayRefused(str(exc)) from None
    frames = (read_telemetry(rt.database_url, telemetry_files(telemetry_dir))
              if telemetry_dir is not None else load_frames(rt.database_url, package=view))
    if deployed_at is None:
        first = min(frames.earliest.values(), default=None)
        if first is None:
            raise ReplayRefused("no telemetry to replay: give --telemetry DIR or ingest some")
        start = first.to_pydatetime() + timedelta(days=BASELINE_DAYS)
        deployed_at = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
            days=1)
    return replay_package(view, frames, checks, deployed_at=as_utc(deployed_at),
                          until=as_utc(until) if until else None, baseline_days=BASELINE_DAYS)
