"""Shared helpers for starting real servers on loopback in tests."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from tenacity import retry, retry_if_result, stop_after_delay, wait_exponential


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


def _busy(response: httpx.Response) -> bool:
    return response.status_code in (429, 503)


# A Prefect server on SQLite answers 503 while its database is locked by the scheduler or a
# worker, and 429 when it sheds load; Prefect's own client retries both, so tests that speak
# raw HTTP to the API do the same (a status that stays busy is returned and fails the test).
@retry(retry=retry_if_result(_busy), stop=stop_after_delay(60),
       wait=wait_exponential(multiplier=0.2, max=5),
       retry_error_callback=lambda state: state.outcome.result())
def api_request(method: str, url: str, **kwargs: object) -> httpx.Response:
    """One request to a Prefect API, retried while the server answers 429 or 503."""
    kwargs.setdefault("timeout", 10)
    return httpx.request(method, url, **kwargs)  # type: ignore[arg-type]
