"""The wheel is the product: one top-level package that works from outside the source tree.

Built with uv, installed into a fresh virtual environment, and run from a directory that
holds no checkout: the CLI starts, prefect.yaml and the flows ride along as package data,
`wavekit serve` can build every deployment, and the store migrations are found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is needed to build the wheel (make install puts it in .tools/bin)")
    return found


CHECK = """
import json, sys
from pathlib import Path
import wavekit, wavekit.project as p
from wavekit.present.serving import build_deployments, load_deployment_specs
root = p.project_dir()
deployments = build_deployments(load_deployment_specs(), schedules=True)
print(json.dumps({"package": str(Path(wavekit.__file__).parent), "project": str(root),
                  "deployments": sorted(d.name for d in deployments),
                  "schedules": {d.name: len(d.schedules) for d in deployments}}))
"""


def test_the_wheel_installs_one_package_that_works_outside_the_checkout(tmp_path: Path):
    uv = _uv()
    dist = tmp_path / "dist"
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True,
                   capture_output=True, timeout=300)
    wheel = next(dist.glob("wavekit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"wavekit"}, top  # no top-level flows/ or blocks/
    for data in ("wavekit/_project/prefect.yaml", "wavekit/_project/flows/wave.py",
                 "wavekit/_project/blocks/slack.py",
                 "wavekit/_project/reports/templates/wave_report.md.j2",
                 "wavekit/adapters/store/migrations/env.py"):
        assert data in names, data
    assert not any(n.startswith("wavekit/devservers/") and "scim2_server" in n for n in names)

    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([uv, "venv", "--python", "python3", str(venv)], check=True, env=env,
                   capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    # The lock's resolution, from uv's cache: the same set CI tested.
    subprocess.run([uv, "pip", "install", "--python", str(python), str(wheel)], check=True,
                   env=env, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_env = {**env, "WAVEKIT_DATA_DIR": str(tmp_path / "data"),
               "PREFECT_HOME": str(tmp_path / "prefect")}
    helped = subprocess.run([str(venv / "bin" / "wavekit"), "--help"], cwd=elsewhere,
                            env=run_env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "release" in helped.stdout, helped.stderr
    checked = subprocess.run([str(python), "-c", CHECK], cwd=elsewhere, env=run_env,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr[-3000:]
    import json

    info = json.loads(checked.stdout.strip().splitlines()[-1])
    assert str(venv) in info["package"] and str(ROOT) not in info["package"]
    assert info["project"].endswith("wavekit/_project"), info
    assert "release-wave" in info["deployments"] and "roll-out-package" in info["deployments"]
    assert info["schedules"]["nightly-maintenance"] == 1
    upgraded = subprocess.run([str(venv / "bin" / "wavekit"), "db", "upgrade"], cwd=elsewhere,
                              env=run_env, capture_output=True, text=True, timeout=300)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
