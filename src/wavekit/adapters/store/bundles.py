"""Bundles in the store: the plan a release applies and the prior grants rollback restores."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, insert
from sqlmodel import Session, col, select

from wavekit.adapters.store.models import BundleGrant, BundleScope
from wavekit.domain.grants import Grant, GrantSet
from wavekit.domain.planning import Plan

_KINDS = ("prior", "add", "remove", "retire")


def record_bundle(session: Session, release_id: int, plan: Plan,
                  stored: Mapping[Grant, str] | None = None) -> None:
    """Store `plan` and its prior snapshot for `release_id`, replacing an earlier staging.

    `stored` holds the target's own form of prior grants (an LDAP member DN as written):
    kept on the prior rows, so rollback writes a removed grant back verbatim.
    """
    session.exec(delete(BundleGrant).where(col(BundleGrant.release_id) == release_id))
    session.exec(delete(BundleScope).where(col(BundleScope.release_id) == release_id))
    stored = stored or {}
    rows = [{"release_id": release_id, "kind": kind, "identity": g.identity,
             "entitlement": g.entitlement,
             "stored_value": stored.get(g) if kind == "prior" else None}
            for kind, grants in zip(_KINDS, (plan.prior, plan.adds, plan.removes,
                                             plan.retirements), strict=True)
            for g in grants]
    if rows:
        session.execute(insert(BundleGrant), rows)
    session.execute(insert(BundleScope), [{"release_id": release_id, "entitlement": e}
                                          for e in sorted(plan.scope)])


def load_bundle(session: Session, release_id: int, package_key: str) -> Plan | None:
    """The stored plan of a release, or None if nothing was recorded."""
    scope = set(session.exec(select(BundleScope.entitlement)
                             .where(BundleScope.release_id == release_id)))
    if not scope:
        return None
    by_kind: dict[str, set[Grant]] = {k: set() for k in _KINDS}
    rows = session.exec(select(BundleGrant.kind, BundleGrant.identity, BundleGrant.entitlement)
                        .where(BundleGrant.release_id == release_id))
    for kind, identity, entitlement in rows:
        by_kind[kind].add(Grant(identity, entitlement))
    return Plan(package_key=package_key, scope=frozenset(scope),
                adds=frozenset(by_kind["add"]), removes=frozenset(by_kind["remove"]),
                retirements=frozenset(by_kind["retire"]), prior=frozenset(by_kind["prior"]))


def load_stored_values(session: Session, release_id: int) -> dict[Grant, str]:
    """The prior grants' stored values (only those the target reported)."""
    rows = session.exec(select(BundleGrant.identity, BundleGrant.entitlement,
                               BundleGrant.stored_value)
                        .where(BundleGrant.release_id == release_id,
                               BundleGrant.kind == "prior",
                               col(BundleGrant.stored_value).is_not(None)))
    return {Grant(i, e): v for i, e, v in rows if v is not None}


def restrict(grants: GrantSet, scope: frozenset[str]) -> GrantSet:
    return frozenset(g for g in grants if g.entitlement in scope)
