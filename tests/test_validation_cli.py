"""Every hostile input of issue 13, through the CLI a user runs: exit 1, exactly one problem
naming file, line and field, no traceback, nothing written. (The library-level assertions are
in tests/test_catalog_hostile.py and tests/test_telemetry_hostile.py; the same cases run as
real subprocesses with scripts/repro_validation.py, and one here.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from tests.support.hostile_cases import (
    CATALOG_CASES,
    TELEMETRY_CASES,
    Case,
    broken_catalog,
    expected_line,
)
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import AuditEvent, RolePackage, TelemetrySample
from wavekit.present.cli import app

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^│\s*(?P<file>[^│]+?)\s*│\s*(?P<line>\d*)\s*│\s*(?P<field>[^│]+?)\s*│")


def _rows(output: str) -> list[dict[str, str]]:
    rows = [m.groupdict() for m in map(ROW.match, output.splitlines()) if m]
    return [r for r in rows if r["file"] != "file"]  # the table's header


def _check(output: str, code: int, case: Case, line: int | None) -> None:
    assert code == 1, output
    assert "Traceback" not in output, output
    [row] = _rows(output)
    assert (row["file"], row["field"]) == (case.file, case.field), output
    if line is not None:
        assert row["line"] == str(line), output
    assert case.words in output, output


def _counts(url: str) -> list[int]:
    with session_scope(url) as s:
        return [s.exec(select(func.count()).select_from(t)).one()
                for t in (RolePackage, AuditEvent, TelemetrySample)]


@pytest.mark.parametrize("case", CATALOG_CASES, ids=[c.name for c in CATALOG_CASES])
def test_catalog_validate_gives_one_problem(tmp_path: Path, case: Case) -> None:
    root = broken_catalog(tmp_path, case)
    result = CliRunner().invoke(app, ["catalog", "validate", str(root)],
                                env={"COLUMNS": "400"})
    _check(result.output, result.exit_code, case, expected_line(root, case))


@pytest.mark.parametrize("case", TELEMETRY_CASES, ids=[c.name for c in TELEMETRY_CASES])
def test_telemetry_gives_one_problem_and_stores_nothing(loaded_store: str, tmp_path: Path,
                                                       case: Case) -> None:
    before = _counts(loaded_store)
    path = tmp_path / case.file
    path.write_bytes(case.data)
    result = CliRunner().invoke(app, ["telemetry", str(path), "--database-url", loaded_store],
                                env={"COLUMNS": "400"})
    _check(result.output, result.exit_code, case, case.line)
    assert _counts(loaded_store) == before


def test_a_real_subprocess_gives_one_line_per_problem_and_no_traceback(tmp_path: Path) -> None:
    [case] = [c for c in CATALOG_CASES if c.name == "empty packages.yaml"]
    root = broken_catalog(tmp_path, case)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "COLUMNS": "400"}
    done = subprocess.run([sys.executable, "-m", "wavekit.present.cli", "catalog", "validate",
                           str(root)], env=env, capture_output=True, text=True, timeout=120)
    _check(done.stdout + done.stderr, done.returncode, case, expected_line(root, case))
