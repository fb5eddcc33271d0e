"""One background poll loop, for whoever watches the store while something else runs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def polling(poll: Callable[[], object], interval: float, name: str) -> Iterator[None]:
    """Call `poll` now and every `interval` seconds in a daemon thread while the body runs;
    the last call has finished when the block ends."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            # A busy store (SQLite locked) is tried again next tick: the loop must not die.
            with contextlib.suppress(Exception):
                poll()
            stop.wait(interval)

    thread = threading.Thread(target=loop, daemon=True, name=name)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
