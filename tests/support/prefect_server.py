"""A real `prefect server start` on a loopback port, and `wavekit serve` against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port, missing_server, wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Terminate a process we started, then kill it if it does not exit in `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def prefect_env(api: str, home: Path) -> dict[str, str]:
    """The environment of every process that talks to the test server (no Slack, no network)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "WAVEKIT_SLACK"))}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api,
               PREFECT_SERVER_UI_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    return env


# The library's auto-approver, run as its own process: in the test process its thread would
# not see a PREFECT_API_URL given by temporary_settings (threads start without the context).
APPROVER = """
import sys, time
from wavekit.workflow.approvals import approve_all, auto_approver
reject = set(filter(None, sys.argv[2].split(","))) if len(sys.argv) > 2 else set()
def decide(a):
    if a.package_key in reject:
        return ("reject", None, "not this quarter")
    return approve_all(a)
with auto_approver(sys.argv[1], decide, poll_seconds=0.5):
    while True:
        time.sleep(1)
"""


@dataclass
class PrefectServer:
    url: str  # the UI, e.g. http://127.0.0.1:P
    api: str  # http://127.0.0.1:P/api
    home: Path
    logs: Path
    auth: str | None = None  # basic auth "user:password" the server requires, if any

    def env(self, **extra: str) -> dict[str, str]:
        auth = {"PREFECT_API_AUTH_STRING": self.auth} if self.auth else {}
        return {**prefect_env(self.api, self.home), **auth, **extra}


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[PrefectServer]:
    """`prefect server start` on a free port with its own PREFECT_HOME (~10-20 s to start)."""
    yield from _serve(tmp_path)


@pytest.fixture
def prefect_server_with_auth(tmp_path: Path) -> Iterator[PrefectServer]:
    """The same server behind basic auth (PREFECT_SERVER_API_AUTH_STRING); its `env` gives
    clients the matching PREFECT_API_AUTH_STRING."""
    yield from _serve(tmp_path, auth=AUTH_STRING)


AUTH_STRING = "wavekit-admin:a-long-random-test-secret"


def _serve(tmp_path: Path, auth: str | None = None) -> Iterator[PrefectServer]:
    exe = BIN / "prefect"
    if not exe.exists():
        missing_server(f"{exe} is not installed")
    port = free_port()
    home, logs = tmp_path / "prefect-home", tmp_path / "logs"
    home.mkdir()
    logs.mkdir(exist_ok=True)
    server = PrefectServer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api",
                           home, logs, auth)
    server_env = server.env(**({"PREFECT_SERVER_API_AUTH_STRING": auth} if auth else {}))
    with open(logs / "prefect-server.log", "wb") as out:
        proc = subprocess.Popen([str(exe), "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)],
                                env=server_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise EOFError(f"prefect server exited with {proc.returncode}")
            return httpx.get(f"{server.api}/health", timeout=2).status_code == 200
        try:
            wait_until(healthy, timeout=180, what="prefect server")  # a loaded CI box is slow
        except (RuntimeError, EOFError) as exc:
            tail = (logs / "prefect-server.log").read_text(errors="replace")[-2000:]
            missing_server(f"prefect server did not start: {exc}\n{tail}")
        yield server
    finally:
        stop(proc)


@pytest.fixture
def wavekit_serve(prefect_server: PrefectServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Start `wavekit serve --no-schedules` for a store URL; yields a starter function."""
    procs: list[subprocess.Popen] = []

    def start(database_url: str, **extra: str) -> subprocess.Popen:
        # Local mode unless told otherwise: the auto-approver types no code.
        env = prefect_server.env(**{"WAVEKIT_DATABASE_URL": database_url,
                                    "WAVEKIT_DATA_DIR": str(tmp_path / "wavekit-data"),
                                    "WAVEKIT_APPROVAL_POLL_SECONDS": "1",
                                    "WAVEKIT_APPROVALS_UNVERIFIED": "true",
                                    "WAVEKIT_PREFECT_UI_URL": prefect_server.url, **extra})
        with open(prefect_server.logs / "wavekit-serve.log", "ab") as out:
            proc = subprocess.Popen([str(BIN / "wavekit"), "serve", "--no-schedules"],
                                    env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=ROOT)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture
def approver(prefect_server: PrefectServer):  # type: ignore[no-untyped-def]
    """Start the library's auto-approver for a store URL, in its own process."""
    procs: list[subprocess.Popen] = []

    def start(database_url: str, reject: tuple[str, ...] = ()) -> subprocess.Popen:
        with open(prefect_server.logs / "approver.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-c", APPROVER, database_url,
                                     ",".join(reject)],
                                    env=prefect_server.env(), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=ROOT)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            stop(proc)
