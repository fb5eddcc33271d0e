"""Serve prefect.yaml's deployments from this process (`wavekit serve`): one source of truth.

Each deployment is served as prefect.yaml declares it: entrypoint, description, tags,
parameters, concurrency limit and every schedule with its timezone, active flag and
parameters, converted by Prefect's own `prefect deploy` schedule loader. Prefect 3.9 has no
public loader of prefect.yaml deployments (`prefect deploy`'s are private), hence the small
reader here; tests/test_serving.py checks it against prefect.yaml read independently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig

from wavekit.project import load_entrypoint, project_dir


def load_deployment_specs(path: Path | None = None) -> list[dict[str, Any]]:
    """The deployments declared in prefect.yaml (YAML anchors resolved)."""
    doc = yaml.safe_load((path or project_dir() / "prefect.yaml").read_text())
    return list(doc.get("deployments", []))


def deployment_schedules(spec: dict[str, Any]) -> list[DeploymentScheduleCreate]:
    """Every schedule of one prefect.yaml deployment, as `prefect deploy` would create it."""
    return [DeploymentScheduleCreate(**_schedule_config_to_deployment_schedule(s))
            for s in spec.get("schedules") or []]


def concurrency_limit(spec: dict[str, Any]) -> int | ConcurrencyLimitConfig | None:
    """prefect.yaml's `concurrency_limit`: a number, or {limit, collision_strategy, ...} as
    `prefect deploy` reads it."""
    value = spec.get("concurrency_limit")
    return ConcurrencyLimitConfig(**value) if isinstance(value, dict) else value


def build_deployments(specs: list[dict[str, Any]], *, schedules: bool = True) -> list[Any]:
    """RunnerDeployments for `flow.serve`-style serving, from prefect.yaml entries."""
    out = []
    for spec in specs:
        flow = load_entrypoint(spec["entrypoint"])
        kwargs: dict[str, Any] = {
            "name": spec["name"], "description": spec.get("description"),
            "tags": spec.get("tags"), "parameters": spec.get("parameters") or {},
            "version": spec.get("version"),
            "concurrency_limit": concurrency_limit(spec),
            "enforce_parameter_schema": spec.get("enforce_parameter_schema", True),
            "schedules": deployment_schedules(spec) if schedules else [],
        }
        out.append(flow.to_deployment(**{k: v for k, v in kwargs.items() if v is not None}))
    return out


def serve_all(*, schedules: bool = True) -> None:
    """Serve every deployment until interrupted (needs PREFECT_API_URL of a running server)."""
    from prefect import serve

    serve(*build_deployments(load_deployment_specs(), schedules=schedules))
