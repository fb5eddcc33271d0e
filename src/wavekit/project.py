"""Where the Prefect project lives (prefect.yaml, flows/, blocks/, report templates).

In a source checkout that is the repository root; an installed wheel carries the same files
as package data under `wavekit/_project`. wavekit never imports flows/ or blocks/ statically
(they import wavekit): the CLI reaches a flow through its prefect.yaml entrypoint, as a
Prefect worker does.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

_PACKAGED = Path(__file__).resolve().parent / "_project"
_SOURCE = Path(__file__).resolve().parents[2]


class ProjectNotFound(RuntimeError):
    """Neither a source checkout nor the packaged project files were found."""


def project_dir() -> Path:
    """The directory holding prefect.yaml, flows/ and blocks/."""
    for candidate in (_SOURCE, _PACKAGED):
        if (candidate / "prefect.yaml").is_file() and (candidate / "flows").is_dir():
            return candidate
    raise ProjectNotFound("wavekit's prefect.yaml was not found: reinstall the wavekit wheel")


def set_project_directory(directory: str | None = None) -> dict[str, str]:
    """Prefect pull step of prefect.yaml: run a deployed flow from wavekit's project directory.

    A worker runs it before loading the entrypoint (`flows/wave.py:...`, relative to the
    working directory). The directory is `directory`, else WAVEKIT_PROJECT_DIR from the
    worker's environment, else this installation's project (the source checkout wavekit is
    imported from, or the wheel's packaged copy): a worker that can import wavekit runs the
    flows of the same version. Read at run time on the worker, never baked in at deploy time.
    """
    chosen = Path(directory or os.environ.get("WAVEKIT_PROJECT_DIR") or project_dir())
    if not (chosen / "flows").is_dir():
        raise ProjectNotFound(f"{chosen} holds no flows/ directory: set WAVEKIT_PROJECT_DIR "
                              "to a wavekit checkout or unset it")
    os.chdir(chosen)
    return {"directory": str(chosen.resolve())}


def load_entrypoint(entrypoint: str) -> Any:
    """The object an entrypoint such as `flows/wave.py:release_wave` names."""
    root = str(project_dir())
    if root not in sys.path:
        sys.path.insert(0, root)
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def flow(name: str) -> Any:
    """A flow of flows/ by its function name (release_wave, rollback_package, ...)."""
    modules = {"release_wave": "wave", "roll_out_package": "wave", "rollback_package": "wave",
               "watch_packages": "watch", "nightly_maintenance": "maintenance",
               "approval_deadlines": "approvals", "rollback_drill": "drills",
               "cohort_action": "cohorts"}
    return load_entrypoint(f"flows/{modules[name]}.py:{name}")
