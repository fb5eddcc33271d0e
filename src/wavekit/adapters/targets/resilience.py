"""Retries with exponential back-off and a request-rate limit, shared by the network targets.

Retryable: HTTP 429 (honouring Retry-After), 5xx, timeouts and dropped connections.
The rate limiter is a Protocol: a local token bucket by default, Prefect's global rate
limit (`prefect.concurrency.sync.rate_limit`) when running under a Prefect server.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


class RetryableError(Exception):
    """A failure worth retrying; `retry_after` (seconds) comes from the server when it says."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP dates are rare for 429)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass
class RetryPolicy:
    """Exponential back-off with jitter; `sleep` is injectable so tests never wait."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = self.base_delay * (2 ** (attempt - 1))
        return min(self.max_delay, backoff * (0.5 + random.random() / 2))

    def call(self, fn: Callable[[], T], *, on_retry: Callable[[int, Exception, float], None]
             | None = None) -> T:
        """Run `fn`, retrying RetryableError up to `attempts` times in all."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except RetryableError as exc:
                if attempt == self.attempts:
                    raise
                wait = self.delay(attempt, exc.retry_after)
                if on_retry:
                    on_retry(attempt, exc, wait)
                self.sleep(wait)
        raise AssertionError("unreachable")


class RateLimiter(Protocol):
    def acquire(self) -> None:
        """Block until one more request may be sent."""
        ...


class NoRateLimit:
    def acquire(self) -> None:
        return None


class TokenBucket:
    """A process-local limit of `rate` requests per second with a burst of `burst`."""

    def __init__(self, rate: float, burst: int = 1, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate, self.burst = rate, max(1, burst)
        self._tokens, self._clock, self._sleep = float(self.burst), clock, sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self._sleep(wait)


class PrefectRateLimit:
    """Prefect's global rate limit: one slot per request across every worker and flow run.

    The limit `name` is created on the Prefect server with slot_decay_per_second set to the
    allowed request rate (`prefect gcl create NAME --limit N --slot-decay-per-second R`).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def acquire(self) -> None:
        from prefect.concurrency.sync import rate_limit

        rate_limit(self.name, occupy=1)


def build_rate_limiter(rate_per_second: float | None, prefect_limit: str | None = None
                       ) -> RateLimiter:
    """Pick the limiter from configuration: a Prefect global limit wins over a local rate."""
    if prefect_limit:
        return PrefectRateLimit(prefect_limit)
    if rate_per_second:
        return TokenBucket(rate_per_second, burst=max(1, int(rate_per_second)))
    return NoRateLimit()
