"""The code's shape is a tested rule: layers point one way, the domain stays plain Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    # .importlinter: present -> workflow -> adapters -> domain; wavekit never imports flows/
    # or blocks/; the domain imports no store, Prefect, HTTP or Slack library; flows/ import no
    # adapter (they reach the outside world through wavekit.workflow).
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout


def test_wavekit_has_no_flat_modules_left() -> None:
    # Every module sits in the folder of its layer; only the package map stays at the top.
    top = sorted(p.name for p in (ROOT / "src" / "wavekit").glob("*.py"))
    assert top == ["__init__.py", "project.py"]


def test_the_state_diagram_is_generated_from_the_machine() -> None:
    from wavekit.domain.states import diagram

    doc = (ROOT / "docs" / "states.md").read_text()
    assert doc == diagram(), "stale: python -m wavekit.domain.states > docs/states.md"


def test_no_task_retries_on_top_of_the_targets_own() -> None:
    """One retry layer: a target retries each request (tenacity); a task that writes a target
    retrying too would multiply the attempts and the time (retries of retries)."""
    import importlib

    from prefect import Task

    # Refreshing telemetry reads a file or HTTP source that has no retry layer of its own.
    allowed = {"refresh_telemetry"}
    found = {}
    for module in sorted((ROOT / "flows").glob("*.py")):
        mod = importlib.import_module(f"flows.{module.stem}")
        found.update({t.name: t.retries for t in vars(mod).values() if isinstance(t, Task)})
    assert "force_rollback" in found and "restore_prior_bundle" in found
    assert {name: n for name, n in found.items() if n and name not in allowed} == {}
