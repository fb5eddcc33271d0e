"""A Prefect server behind basic auth (PREFECT_SERVER_API_AUTH_STRING): wavekit's processes
pass PREFECT_API_AUTH_STRING and work; anyone without it is turned away."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.servers import api_request

if TYPE_CHECKING:
    from tests.support.prefect_server import PrefectServer

pytest_plugins = ["tests.support.prefect_server"]
pytestmark = pytest.mark.slow


BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def _wavekit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "wavekit"), *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT, stdin=subprocess.DEVNULL)


def test_cli_and_serve_work_against_a_server_that_requires_auth(
        prefect_server_with_auth: PrefectServer, loaded_store: str, tmp_path: Path) -> None:
    from tests.support.prefect_server import stop

    server = prefect_server_with_auth
    assert server.auth is not None
    user, password = server.auth.split(":", 1)
    # Without the secret, the API (and so the UI's data) is closed.
    assert httpx.post(f"{server.api}/flow_runs/filter", json={}).status_code == 401

    env = server.env(WAVEKIT_DATABASE_URL=loaded_store,
                     WAVEKIT_DATA_DIR=str(tmp_path / "data"))
    # Without PREFECT_API_AUTH_STRING the CLI says what to set, in one line.
    refused = _wavekit({k: v for k, v in env.items() if k != "PREFECT_API_AUTH_STRING"},
                       "release", "--wave", "1", "--dry-run", "--as", "rm-alex")
    assert refused.returncode == 1
    assert "PREFECT_API_AUTH_STRING" in refused.stderr and "Traceback" not in refused.stderr
    done = _wavekit(env, "release", "--wave", "1", "--dry-run", "--as", "rm-alex")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Dry run of wave 1" in done.stdout
    runs = api_request("POST", f"{server.api}/flow_runs/filter", json={},
                       auth=(user, password)).json()
    assert [r["name"] for r in runs] == ["wave 1"]
    assert runs[0]["parameters"]["requested_by"] == "rm-alex"

    # `wavekit serve` registers its deployments through the same authenticated client.
    with open(server.logs / "serve.log", "wb") as out:
        proc = subprocess.Popen([str(BIN / "wavekit"), "serve", "--no-schedules"], env=env,
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        end = time.monotonic() + 240
        names: set[str] = set()
        while time.monotonic() < end and "release-wave" not in names:
            assert proc.poll() is None, (server.logs / "serve.log").read_text()[-2000:]
            names = {d["name"] for d in api_request(
                "POST", f"{server.api}/deployments/filter", json={},
                auth=(user, password)).json()}
            time.sleep(1)
        assert "release-wave" in names
    finally:
        stop(proc)
