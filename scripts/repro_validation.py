"""Reproduce issue 13's validation gaps against the real CLI, one subprocess per case.

    PYTHONPATH=src:. .venv/bin/python scripts/repro_validation.py [-k WORD]

Each case breaks the example catalog (or a telemetry file) in one way and runs
`wavekit catalog validate DIR` (or `wavekit telemetry FILE`) as a user would. A case passes
when the command exits 1 with exactly one problem naming the file, line and field, and no
traceback; the example catalog itself must stay valid. Prints one line per case and exits 1
if any case misbehaves. Slow (a CLI start per case): for a person, not for CI; the tests in
tests/test_catalog_hostile.py and tests/test_validation_cli.py hold the same cases.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.support.hostile_cases import (  # noqa: E402
    CATALOG_CASES,
    TELEMETRY_CASES,
    broken_catalog,
    expected_line,
)
from wavekit.examples import EXAMPLE_CATALOG  # noqa: E402

ROW = re.compile(r"^│\s*(?P<file>[^│]+?)\s*│\s*(?P<line>\d*)\s*│\s*(?P<field>[^│]+?)\s*│")


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wavekit.present.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def main() -> int:
    only = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else ""
    work = Path(tempfile.mkdtemp(prefix="wavekit-repro-"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "COLUMNS": "400",
           "WAVEKIT_DATA_DIR": str(work / "data"),
           "WAVEKIT_DATABASE_URL": f"sqlite:///{work / 'store.db'}"}
    bad = 0
    ok = run(["catalog", "validate", str(EXAMPLE_CATALOG)], env)
    print(("ok  " if ok.returncode == 0 else "BAD ") + "example catalog is valid")
    bad += ok.returncode != 0
    if run(["load", str(EXAMPLE_CATALOG)], env).returncode != 0:
        print("BAD cannot load the example catalog (telemetry cases need it)")
        return 1
    cases = [("catalog", c) for c in CATALOG_CASES] + [("telemetry", c) for c in TELEMETRY_CASES]
    for n, (kind, case) in enumerate(cases):
        if only and only not in case.name:
            continue
        where = work / f"case{n}"
        if kind == "catalog":
            path = broken_catalog(where, case)
            line = expected_line(path, case)
            result = run(["catalog", "validate", str(path)], env)
        else:
            where.mkdir()
            path = where / case.file
            path.write_bytes(case.data)
            line = case.line
            result = run(["telemetry", str(path)], env)
        out = result.stdout + result.stderr
        rows = [m.groupdict() for m in map(ROW.match, out.splitlines()) if m]
        rows = [r for r in rows if r["file"] != "file"]  # the header
        why = []
        if result.returncode != 1:
            why.append(f"exit {result.returncode}")
        if "Traceback" in out:
            why.append("traceback")
        if len(rows) != 1:
            why.append(f"{len(rows)} problems")
        elif (rows[0]["file"], rows[0]["field"]) != (case.file, case.field) or (
                line is not None and rows[0]["line"] != str(line)):
            why.append(f"said {rows[0]}")
        if case.words not in out:
            why.append(f"no {case.words!r}")
        print(("BAD " if why else "ok  ") + case.name + (f": {', '.join(why)}" if why else ""))
        if why:
            print("    " + "\n    ".join(out.strip().splitlines()[-6:]))
        bad += bool(why)
    shutil.rmtree(work, ignore_errors=True)
    print(f"{bad} case(s) misbehave" if bad else "every case is one clean problem")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
