"""Target wrappers that inject faults: a slow target that checks the store's write lock is free
whenever it is called, a target that fails at a given batch, one that drops writes."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from wavekit.adapters.targets.base import (
    ApplyResult,
    BatchResult,
    ClosesOnExit,
    ProgressCallback,
    Snapshot,
    Target,
    TargetUnavailable,
    apply_restoring,
    read_snapshot,
)
from wavekit.domain.grants import Grant, GrantSet


class Wrapped(ClosesOnExit):
    """Delegates to `inner`; keeps the stored-values capability of the inner target."""

    def __init__(self, inner: Target) -> None:
        self.inner = inner
        self.name = inner.name

    def read_grants(self, entitlements: Collection[str]) -> GrantSet:
        return self.inner.read_grants(entitlements)

    def read_snapshot(self, entitlements: Collection[str]) -> Snapshot:
        return read_snapshot(self.inner, entitlements)

    def apply(self, adds: Iterable[Grant], removes: Iterable[Grant], *, batch_size: int = 500,
              on_batch: ProgressCallback | None = None) -> ApplyResult:
        return self.inner.apply(adds, removes, batch_size=batch_size, on_batch=on_batch)

    def apply_verbatim(self, adds: Iterable[Grant], removes: Iterable[Grant],
                       stored: Mapping[Grant, str], *, batch_size: int = 500,
                       on_batch: ProgressCallback | None = None) -> ApplyResult:
        return apply_restoring(self.inner, adds, removes, stored, batch_size=batch_size,
                               on_batch=on_batch)

    def close(self) -> None:
        self.inner.close()


def write_lock_free(db: Path, within: float = 1.0) -> bool:
    """Whether another connection can take SQLite's write lock within `within` seconds.

    A short transaction of another thread lets go in milliseconds; one held across this
    whole call (a transaction that called the target) never does."""
    deadline = time.monotonic() + within
    while True:
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        finally:
            conn.close()


class SlowLockProbe(Wrapped):
    """Every read and batch takes `delay` seconds, like a slow directory across a WAN; before
    each it records whether the store's write lock was free (it must always be)."""

    def __init__(self, inner: Target, db: Path, delay: float = 0.5) -> None:
        super().__init__(inner)
        self.db, self.delay = db, delay
        self.calls = 0
        self.held: list[str] = []  # calls made while some transaction held the write lock
        self._lock = threading.Lock()

    def _probe(self, what: str) -> None:
        free = write_lock_free(self.db, within=max(1.0, self.delay))
        with self._lock:
            self.calls += 1
            if not free:
                self.held.append(what)
        time.sleep(self.delay)

    def read_grants(self, entitlements: Collection[str]) -> GrantSet:
        self._probe("read_grants")
        return super().read_grants(entitlements)

    def read_snapshot(self, entitlements: Collection[str]) -> Snapshot:
        self._probe("read_snapshot")
        return super().read_snapshot(entitlements)

    def apply(self, adds: Iterable[Grant], removes: Iterable[Grant], *, batch_size: int = 500,
              on_batch: ProgressCallback | None = None) -> ApplyResult:
        self._probe("apply")
        return super().apply(adds, removes, batch_size=batch_size, on_batch=on_batch)


class DownAtBatch(Wrapped):
    """Applies batches until batch `index`, then fails as a target that went away."""

    def __init__(self, inner: Target, index: int, label: str = "SCIM target http://x") -> None:
        super().__init__(inner)
        self.index, self.label = index, label

    def apply(self, adds: Iterable[Grant], removes: Iterable[Grant], *, batch_size: int = 500,
              on_batch: ProgressCallback | None = None) -> ApplyResult:
        count = 0

        def counting(batch: BatchResult) -> None:
            nonlocal count
            count += 1
            if on_batch:
                on_batch(batch)
            if count == self.index:
                raise TargetUnavailable("connection refused (password=hunter2 token=abc)",
                                        target=self.label, batch=self.index)

        return super().apply(adds, removes, batch_size=batch_size, on_batch=counting)


class DropsWrites(Wrapped):
    """Silently drops adds of `drop` (the target says it wrote them): `times` applies."""

    def __init__(self, inner: Target, drop: set[Grant], times: int = 10**9) -> None:
        super().__init__(inner)
        self.drop, self.times = drop, times
        self.dropped = 0

    def _filter(self, adds: Iterable[Grant]) -> list[Grant]:
        adds = list(adds)
        if self.times <= 0:
            return adds
        kept = [g for g in adds if g not in self.drop]
        if len(kept) != len(adds):
            self.times -= 1
            self.dropped += len(adds) - len(kept)
        return kept

    def apply(self, adds: Iterable[Grant], removes: Iterable[Grant], *, batch_size: int = 500,
              on_batch: ProgressCallback | None = None) -> ApplyResult:
        return super().apply(self._filter(adds), removes, batch_size=batch_size,
                             on_batch=on_batch)

    def apply_verbatim(self, adds: Iterable[Grant], removes: Iterable[Grant],
                       stored: Mapping[Grant, str], *, batch_size: int = 500,
                       on_batch: ProgressCallback | None = None) -> ApplyResult:
        return super().apply_verbatim(self._filter(adds), removes, stored,
                                      batch_size=batch_size, on_batch=on_batch)
