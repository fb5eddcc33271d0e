"""Grants and bundles: the (identity, entitlement) pairs a package touches on a target."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Grant(NamedTuple):
    """One identity holding one entitlement on a target (both as the target names them)."""

    identity: str
    entitlement: str


GrantSet = frozenset[Grant]


def grant_set(pairs: Iterable[tuple[str, str]]) -> GrantSet:
    """Build an immutable grant set from (identity, entitlement) pairs."""
    return frozenset(Grant(i, e) for i, e in pairs)


def by_entitlement(grants: Iterable[Grant]) -> dict[str, set[str]]:
    """Group grants as entitlement -> identities; targets write one request per entitlement."""
    out: dict[str, set[str]] = {}
    for g in grants:
        out.setdefault(g.entitlement, set()).add(g.identity)
    return out
