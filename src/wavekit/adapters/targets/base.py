"""The one target interface. Sandbox, SCIM and LDAP implement it; flows only see this."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Protocol, Self, runtime_checkable

from wavekit.domain.grants import Grant, GrantSet

# Grants per batch unless WAVEKIT_BATCH_SIZE says otherwise: a batch holds whole groups where
# they fit (`batched`), so most groups are read and written once.
BATCH_SIZE = 5000


class TargetError(RuntimeError):
    """A target refused or failed a request; what was applied before it stays applied.

    The message is one line meant for a person: it names the target (`target`, e.g.
    "LDAP target ldap://127.0.0.1:389") and, when it happened inside apply(), the batch.
    No credential ever appears in it.
    """

    def __init__(self, message: str, *, target: str | None = None,
                 batch: int | None = None) -> None:
        super().__init__(message)
        self.message = " ".join(str(message).split())  # one line, whatever the server said
        self.target = target
        self.batch = batch

    def __str__(self) -> str:
        text = self.message
        if self.target and not text.startswith(self.target):
            text = f"{self.target}: {text}"
        if self.batch is not None:
            text += f" (batch {self.batch})"
        return text


class TargetUnavailable(TargetError):
    """The target did not answer, or kept failing, after every retry: try again later."""


class TargetAuthError(TargetError):
    """The target refused wavekit's credentials (wrong password, token, or rights)."""


class TargetRefused(TargetError):
    """The target answered and refused the request (unknown user or group, bad request)."""


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
        batch_size: int = BATCH_SIZE,
        on_batch: ProgressCallback | None = None,
    ) -> ApplyResult:
        """Make `adds` present and `removes` absent, in batches; idempotent."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def __enter__(self) -> Self:
        ...

    def __exit__(self, *exc: object) -> None:
        """Close the target."""
        ...


class ClosesOnExit:
    """What makes a target a context manager: `with target:` closes it at the block's end."""

    def close(self) -> None:
        """Nothing to release unless the target says otherwise."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Snapshot:
    """Grants as read, with the value each is stored as where the target keeps its own form
    (an LDAP member DN as written, e.g. uid=a,ou=People,dc=Example). Rollback writes a
    removed grant back with exactly that value."""

    grants: GrantSet
    stored: Mapping[Grant, str] = field(default_factory=dict)


@runtime_checkable
class KeepsStoredValues(Protocol):
    """A target whose grants have a stored form worth restoring verbatim."""

    def read_snapshot(self, entitlements: Collection[str]) -> Snapshot:
        """Like read_grants, with each grant's stored value."""
        ...

    def apply_verbatim(self, adds: Iterable[Grant], removes: Iterable[Grant],
                       stored: Mapping[Grant, str], *, batch_size: int = BATCH_SIZE,
                       on_batch: ProgressCallback | None = None) -> ApplyResult:
        """Like apply, writing each add whose stored value is known as exactly that value."""
        ...


def read_snapshot(target: Target, entitlements: Collection[str]) -> Snapshot:
    """The target's grants of `entitlements`, with stored values when it keeps them."""
    if isinstance(target, KeepsStoredValues):
        return target.read_snapshot(entitlements)
    return Snapshot(target.read_grants(entitlements))


def apply_restoring(target: Target, adds: Iterable[Grant], removes: Iterable[Grant],
                    stored: Mapping[Grant, str], *, batch_size: int = BATCH_SIZE,
                    on_batch: ProgressCallback | None = None) -> ApplyResult:
    """apply(), re-adding grants in their stored form on targets that keep one."""
    if stored and isinstance(target, KeepsStoredValues):
        return target.apply_verbatim(adds, removes, stored, batch_size=batch_size,
                                     on_batch=on_batch)
    return target.apply(adds, removes, batch_size=batch_size, on_batch=on_batch)


def batched(items: Iterable[Grant], size: int) -> Iterator[list[Grant]]:
    """Split grants into batches of whole entitlements, so each group is read and written
    once per batch (a raw script's one write per group): small entitlements share a batch up
    to `size` grants; one larger than `size` is cut into batches of `size`. The order is
    stable so a re-run batches the same way."""
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    batch: list[Grant] = []
    for _, group in groupby(sorted(items, key=lambda g: (g.entitlement, g.identity)),
                            key=attrgetter("entitlement")):
        grants = list(group)
        if batch and len(batch) + len(grants) > size:
            yield batch
            batch = []
        while len(grants) > size:
            yield grants[:size]
            grants = grants[size:]
        batch.extend(grants)
    if batch:
        yield batch


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
        try:
            batch = apply_batch(index, add, remove)
        except TargetError as exc:
            if exc.batch is None:
                exc.batch = index  # the caller learns where it stopped; earlier batches stand
            raise
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
