"""Serve prefect.yaml's deployments from this process (`wavekit serve`): one source of truth."""

from __future__ import annotations

import importlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def load_deployment_specs(path: Path | None = None) -> list[dict[str, Any]]:
    """The deployments declared in prefect.yaml."""
    doc = yaml.safe_load((path or PROJECT_ROOT / "prefect.yaml").read_text())
    return list(doc.get("deployments", []))


def build_deployments(specs: list[dict[str, Any]], *, schedules: bool = True) -> list[Any]:
    """RunnerDeployments for `flow.serve`-style serving, from prefect.yaml entries."""
    out = []
    for spec in specs:
        module_path, func = spec["entrypoint"].split(":")
        module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        kwargs: dict[str, Any] = {"name": spec["name"], "description": spec.get("description"),
                                  "tags": spec.get("tags"),
                                  "parameters": spec.get("parameters") or {}}
        sched = (spec.get("schedules") or [{}])[0] if schedules else {}
        if "cron" in sched:
            kwargs["cron"] = sched["cron"]
        elif "interval" in sched:
            kwargs["interval"] = timedelta(seconds=sched["interval"])
        out.append(flow.to_deployment(**kwargs))
    return out


def serve_all(*, schedules: bool = True) -> None:
    """Serve every deployment until interrupted (needs PREFECT_API_URL of a running server)."""
    from prefect import serve

    serve(*build_deployments(load_deployment_specs(), schedules=schedules))
