"""Bundles in the store: the plan a release applies and the prior grants rollback restores."""

from __future__ import annotations

from sqlalchemy import delete, insert
from sqlmodel import Session, select

from wavekit.adapters.store.models import BundleGrant, BundleScope
from wavekit.domain.grants import Grant, GrantSet
from wavekit.domain.planning import Plan

_KINDS = ("prior", "add", "remove", "retire")


def record_bundle(session: Session, release_id: int, plan: Plan) -> None:
    """Store `plan` and its prior snapshot for `release_id`, replacing an earlier staging."""
    session.exec(delete(BundleGrant).where(BundleGrant.release_id == release_id))
    session.exec(delete(BundleScope).where(BundleScope.release_id == release_id))
    rows = [{"release_id": release_id, "kind": kind, "identity": g.identity,
             "entitlement": g.entitlement}
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


def restrict(grants: GrantSet, scope: frozenset[str]) -> GrantSet:
    return frozenset(g for g in grants if g.entitlement in scope)
