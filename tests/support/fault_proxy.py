"""A fault-injecting HTTP proxy on loopback, for putting in front of the SCIM server.

A seeded share of requests (`rate`) gets a fault instead of (or besides) the upstream answer:

    429         Too Many Requests with Retry-After, never forwarded
    503         Service Unavailable (sometimes with Retry-After), never forwarded
    reset       the connection is reset (RST) before the request is forwarded
    reset_after the request IS forwarded and applied upstream, then the connection is reset
                (the client never learns that its write landed)
    slow        the answer comes after a delay

Threads, the standard library only; bound to 127.0.0.1; stops with the context manager.
Every fault is counted in `injected`.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("429", "503", "reset", "reset_after", "slow")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection",
        "host"}


class FaultProxy:
    def __init__(self, upstream: str, *, rate: float = 0.2, seed: int = 0,
                 faults: tuple[str, ...] = FAULTS, retry_after: str = "0.2",
                 slow_seconds: tuple[float, float] = (0.3, 1.0)) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.rate, self.faults, self.retry_after = rate, faults, retry_after
        self.slow_seconds = slow_seconds
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def decide(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self._rng.random() >= self.rate:
                return None
            fault = self._rng.choice(self.faults)
            self.injected[fault] += 1
            return fault

    def slow_delay(self) -> float:
        with self._lock:
            return self._rng.uniform(*self.slow_seconds)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                return

            def _reset(self) -> None:
                # SO_LINGER 0: close sends RST, the client sees "connection reset by peer".
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _proxy(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy.decide()
                if fault == "reset":
                    return self._reset()
                if fault == "429":
                    return self._answer(429, {"Retry-After": proxy.retry_after,
                                              "Content-Type": "application/scim+json"},
                                        b'{"detail": "too many requests (injected)"}')
                if fault == "503":
                    return self._answer(503, {"Retry-After": proxy.retry_after},
                                        b"service unavailable (injected)")
                if fault == "slow":
                    time.sleep(proxy.slow_delay())
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                      timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    answer = {k: v for k, v in response.getheaders() if k.lower() not in _HOP}
                finally:
                    upstream.close()
                if fault == "reset_after":
                    return self._reset()
                self._answer(response.status, answer, data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy

        return Handler

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=10)

    def summary(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(self.injected.items()))
        return f"{sum(self.injected.values())} faults in {self.requests} requests ({shown})"


@contextmanager
def fault_proxy(upstream: str, **kwargs: object) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, **kwargs).start()  # type: ignore[arg-type]
    try:
        yield proxy
    finally:
        proxy.stop()
