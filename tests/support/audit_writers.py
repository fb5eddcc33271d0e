"""An audit writer for the concurrency tests, run in separate processes (no pytest in them)."""

from __future__ import annotations

from typing import Any

from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope


def append_events(url: str, name: str, count: int, start: Any) -> None:
    """Wait for the others at `start`, then append `count` events (and a pair's second
    event every third transaction), one transaction each."""
    start.wait()
    for i in range(count):
        with session_scope(url) as s:
            audit.record(s, "parallel", actor=name, n=i)
            if i % 3 == 0:
                audit.record(s, "parallel", actor=f"{name}-pair", n=i)
