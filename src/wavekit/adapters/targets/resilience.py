"""Retries and a request-rate limit, shared by the network targets: the only retry layer.

Retries are tenacity's (`RetryPolicy.call`): exponential back-off with full jitter, a
server's Retry-After (429/503) honoured up to `max_delay`, bounded both in attempts and in
total time, and every retry logged with its reason. Retryable: HTTP 429, 5xx, timeouts and
dropped connections (the targets raise RetryableError for those); anything else fails at once.

The rate limit is Prefect's own global rate limit (`prefect.concurrency.sync.rate_limit`)
when one is named, else none: a hand-written local limiter would be a second layer beside a
server's 429 + Retry-After, which the retries already honour, and it could not be shared by
several workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


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
    """How hard to retry: at most `attempts` tries and `max_time` seconds in all; waits grow
    exponentially from `base_delay` with full jitter, capped at `max_delay`. `sleep` is
    injectable so tests never wait."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_time: float = 120.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, state: RetryCallState) -> float:
        """The wait before the next try: the server's Retry-After when it gave one."""
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(min(retry_after, self.max_delay))
        backoff = wait_random_exponential(multiplier=self.base_delay, max=self.max_delay)
        return float(backoff(state))

    def call(self, fn: Callable[[], T], *, what: str = "request",
             on_retry: Callable[[int, Exception, float], None] | None = None) -> T:
        """Run `fn`, retrying RetryableError; the last one is re-raised when retries run out."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            assert isinstance(exc, Exception)
            if on_retry:
                on_retry(state.attempt_number, exc, wait)
            else:
                log.warning("%s: %s; retry %d of %d in %.1fs", what, exc, state.attempt_number,
                            self.attempts - 1, wait)

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.max_time),
            wait=self.delay, retry=retry_if_exception_type(RetryableError),
            sleep=self.sleep, before_sleep=before_sleep, reraise=True)
        return retrying(fn)


class RateLimiter(Protocol):
    def acquire(self) -> None:
        """Block until one more request may be sent."""
        ...


class NoRateLimit:
    def acquire(self) -> None:
        return None


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


def build_rate_limiter(prefect_limit: str | None = None) -> RateLimiter:
    """Prefect's global rate limit when the configuration names one, else no limit."""
    return PrefectRateLimit(prefect_limit) if prefect_limit else NoRateLimit()
