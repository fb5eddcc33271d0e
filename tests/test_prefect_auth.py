"""A Prefect server behind basic auth (PREFECT_SERVER_API_AUTH_STRING): wavekit's processes
pass PREFECT_API_AUTH_STRING and work; anyone without it is turned away.

Here: the CLI, `wavekit serve` and `wavekit slack-receiver`. The worker (and the flow runs it
starts, `prefect deploy`) run behind auth in tests/test_production_topology.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.servers import api_request, free_port, wait_until
from tests.support.slack_double import (
    BOT_TOKEN,
    CHANNEL,
    SIGNING_SECRET,
    block_actions,
    signed_request,
)
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, Release, RolePackage
from wavekit.domain.clock import utcnow

if TYPE_CHECKING:
    from tests.support.prefect_server import PrefectServer
    from tests.support.slack_double import SlackDouble

pytest_plugins = ["tests.support.prefect_server", "tests.support.slack_double"]
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


# A flow run that pauses for the owner's decision (the handoff's typed input), in its own
# process with the client environment; it prints its run id, then the decision it got.
PAUSED_RUN = """
import json
from prefect import flow
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run
from wavekit.workflow.approvals import ApprovalInput

@flow(name="auth-handoff-probe")
def handoff():
    print("run", flow_run.id, flush=True)
    return pause_flow_run(wait_for_input=ApprovalInput, timeout=120, poll_interval=1).model_dump()

print("decision", json.dumps(handoff()), flush=True)
"""


def test_slack_receiver_resumes_a_run_on_a_server_that_requires_auth(
        prefect_server_with_auth: PrefectServer, loaded_store: str,
        slack_double: SlackDouble, tmp_path: Path) -> None:
    from tests.support.prefect_server import stop

    server = prefect_server_with_auth
    assert server.auth is not None
    auth = tuple(server.auth.split(":", 1))
    env = server.env(WAVEKIT_DATABASE_URL=loaded_store,
                     WAVEKIT_DATA_DIR=str(tmp_path / "data"))
    procs: list[subprocess.Popen] = []
    try:
        with open(server.logs / "paused-run.log", "wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-c", PAUSED_RUN], env=env,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=ROOT))
        probe, probe_log = procs[0], server.logs / "paused-run.log"

        def paused() -> bool:
            assert probe.poll() is None, probe_log.read_text()[-2000:]
            runs = api_request("POST", f"{server.api}/flow_runs/filter", json={},
                               auth=auth).json()
            return any(r["state_type"] == "PAUSED" for r in runs)
        wait_until(paused, timeout=120, what="paused flow run")
        (run_id,) = [line.split()[1] for line in probe_log.read_text().splitlines()
                     if line.startswith("run ")]

        with session_scope(loaded_store) as s:
            release = Release(package_key="finance-month-end-operator", wave=1,
                              flow_run_id=run_id, triggered_by="URELMGR01")
            s.add(release)
            s.flush()
            approval = Approval(release_id=release.id, package_key=release.package_key,
                                flow_run_id=run_id, deadline=utcnow() + timedelta(hours=1))
            s.add(approval)
            s.flush()
            s.get(RolePackage, release.package_key).state = "awaiting_handoff"
            approval_id = approval.id

        # The real `wavekit slack-receiver`, given the server's secret like every client.
        port = free_port()
        with open(server.logs / "slack-receiver.log", "wb") as out:
            procs.append(subprocess.Popen(
                [str(BIN / "wavekit"), "slack-receiver", "--port", str(port)],
                env={**env, "WAVEKIT_SLACK_BOT_TOKEN": BOT_TOKEN,
                     "WAVEKIT_SLACK_SIGNING_SECRET": SIGNING_SECRET,
                     "WAVEKIT_SLACK_CHANNEL": CHANNEL,
                     "WAVEKIT_SLACK_API_URL": slack_double.base_url},
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT))
        receiver, base = procs[1], f"http://127.0.0.1:{port}"

        def listening() -> bool:
            assert receiver.poll() is None, \
                (server.logs / "slack-receiver.log").read_text()[-2000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        wait_until(listening, timeout=60, what="slack-receiver")

        body, headers = signed_request(
            block_actions("UFINOWNER1", "wavekit_approve", str(approval_id), channel=CHANNEL),
            int(utcnow().timestamp()))
        clicked = httpx.post(f"{base}/slack/interactivity", content=body, headers=headers,
                             timeout=60)
        assert clicked.status_code == 200, clicked.text

        # The click resumed the run on the authenticated server: the flow got the decision.
        assert probe.wait(timeout=60) == 0, probe_log.read_text()[-2000:]
        decisions = [json.loads(line.split(" ", 1)[1])
                     for line in probe_log.read_text().splitlines()
                     if line.startswith("decision ")]
        assert decisions == [{"decision": "approve", "approver": "UFINOWNER1", "code": "",
                              "comment": ""}], probe_log.read_text()[-2000:]
        run = api_request("GET", f"{server.api}/flow_runs/{run_id}", auth=auth).json()
        assert run["state_type"] == "COMPLETED", run["state_type"]
    finally:
        for proc in reversed(procs):
            stop(proc)
