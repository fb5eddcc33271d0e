"""Shared helpers for starting real servers on loopback in tests."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "server") -> None:
    """Poll `check` until it is true; raise with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up in {timeout}s: {last}")


def missing_server(reason: str) -> None:
    """Skip locally, but fail in CI (WAVEKIT_REQUIRE_SERVERS=1) so a missing server is seen."""
    if os.environ.get("WAVEKIT_REQUIRE_SERVERS") == "1":
        pytest.fail(f"required server unavailable: {reason}")
    pytest.skip(reason)
