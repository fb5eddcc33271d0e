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
