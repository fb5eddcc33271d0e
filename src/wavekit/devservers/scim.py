"""A throwaway `scim2-server` on loopback: the SCIM demo's directory and the tests' server."""

from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from wavekit.adapters.targets.scim import ScimConfig, ScimSession

# scim2-server takes its bearer token only as a command-line flag, which any local user can
# read in the process list; this launcher appends it from the environment instead.
_LAUNCHER = (
    "import os, sys\n"
    "from scim2_server.testserver.cli import main\n"
    # "--flag=value": a token starting with "-" must not read as another option.
    "sys.argv = ['scim2-server', *sys.argv[1:], "
    "'--bearer-token=' + os.environ.pop('WAVEKIT_SCIM_DEV_TOKEN')]\n"
    "main()\n"
)


class ScimServerUnavailable(RuntimeError):
    """scim2-server is not installed or did not come up."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ServiceProviderConfig", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def run_local_scim_server(port: int | None = None, *, startup_timeout: float = 30.0
                          ) -> Iterator[ScimConfig]:
    """Start scim2-server (in memory) on 127.0.0.1 with a fresh bearer token; yield the config
    of its "wavekit" tenant. `fresh_tenant` gives further empty directories on the same server.

    Example: with run_local_scim_server() as config: ScimTarget(config).read_grants(["ops"])
    """
    if importlib.util.find_spec("scim2_server") is None:
        raise ScimServerUnavailable("scim2-server is not installed (pip install scim2-server)")
    port = port or _free_port()
    token = secrets.token_urlsafe(24)
    config = ScimConfig(base_url=f"http://127.0.0.1:{port}/wavekit/v2", token=token)
    env = {**os.environ, "WAVEKIT_SCIM_DEV_TOKEN": token}
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            # Tenants are created on first use: each test gets an empty directory for free.
            [sys.executable, "-c", _LAUNCHER, "--hostname", "127.0.0.1", "--port", str(port),
             "--dynamic-tenants"],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + startup_timeout
            while not _answers(config.base_url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    tail = output.read().decode(errors="replace")[-2000:]
                    raise ScimServerUnavailable(
                        f"scim2-server on port {port} did not come up: {tail}")
                time.sleep(0.05)  # polling a starting process, not driving time
            yield config
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fresh_tenant(config: ScimConfig, name: str | None = None) -> ScimConfig:
    """The same local server under another tenant: a new, empty directory."""
    root = config.base_url.rstrip("/").rsplit("/", 2)[0]
    return config.model_copy(update={"base_url": f"{root}/{name or uuid.uuid4().hex[:12]}/v2"})


def reset_directory(config: ScimConfig, *, transport: httpx.BaseTransport | None = None) -> None:
    """Delete every Group, then every User, on a (test or demo) SCIM service."""
    session = ScimSession(config, transport=transport)
    try:
        for kind, endpoint, attribute in (("Group", "Groups", "displayName"),
                                          ("User", "Users", "userName")):
            ids = [r.id for r in session.search(kind, attributes=[attribute]) if r.id]
            session.delete_all(endpoint, ids)
    finally:
        session.close()
