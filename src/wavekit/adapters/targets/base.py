"""The one target interface. Sandbox, SCIM and LDAP implement it; flows only see this."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol, runtime_checkable

from wavekit.domain.grants import Grant, GrantSet


class TargetError(RuntimeError):
    """A target refused or failed a request; what was applied before it stays applied."""


@dataclass(frozen=True)
class BatchResult:
    """What one batch changed: a re-applied batch reports zero changes."""

    index: int
    added: int
    removed: int
    unchanged: int


@dataclass
class ApplyResult:
    """Totals over every batch of one apply()."""

    added: int = 0
    removed: int = 0
    unchanged: int = 0
    batches: list[BatchResult] = field(default_factory=list)

    def absorb(self, batch: BatchResult) -> None:
        self.added += batch.added
        self.removed += batch.removed
        self.unchanged += batch.unchanged
        self.batches.append(batch)

    @property
    def changed(self) -> int:
        return self.added + self.removed


ProgressCallback = Callable[[BatchResult], None]


@runtime_checkable
class Target(Protocol):
    """A system that holds grants. Identities and entitlements are named as the target knows them
    (identity id = SCIM userName / LDAP uid; entitlement key = SCIM group displayName / LDAP cn).
    """

    name: str

    def read_grants(self, entitlements: Collection[str]) -> GrantSet:
        """Every current grant of the given entitlements (complete, paged as needed)."""
        ...

    def apply(
        self,
        adds: Iterable[Grant],
        removes: Iterable[Grant],
        *,
        batch_size: int = 500,
        on_batch: ProgressCallback | None = None,
    ) -> ApplyResult:
        """Make `adds` present and `removes` absent, in batches; idempotent."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def batched(items: Iterable[Grant], size: int) -> Iterator[list[Grant]]:
    """Split grants into lists of at most `size`, entitlement by entitlement so a batch maps
    onto few target requests; the order is stable so a re-run batches the same way."""
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    ordered = iter(sorted(items, key=lambda g: (g.entitlement, g.identity)))
    while chunk := list(islice(ordered, size)):
        yield chunk


def apply_in_batches(
    apply_batch: Callable[[int, list[Grant], list[Grant]], BatchResult],
    adds: Iterable[Grant],
    removes: Iterable[Grant],
    batch_size: int,
    on_batch: ProgressCallback | None = None,
) -> ApplyResult:
    """The apply() every target shares: cut batches, apply each, report after each lands."""
    result = ApplyResult()
    for index, (add, remove) in enumerate(plan_batches(adds, removes, batch_size)):
        batch = apply_batch(index, add, remove)
        result.absorb(batch)
        if on_batch:
            on_batch(batch)
    return result


def plan_batches(
    adds: Iterable[Grant], removes: Iterable[Grant], size: int
) -> Iterator[tuple[list[Grant], list[Grant]]]:
    """Batches of (adds, removes): adds first, then removes, each at most `size` grants."""
    for chunk in batched(adds, size):
        yield chunk, []
    for chunk in batched(removes, size):
        yield [], chunk
