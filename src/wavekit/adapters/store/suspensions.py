"""Containment bundles in the store: the grants a containment suspended, and their history."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import insert
from sqlmodel import Session, col, select

from wavekit.adapters.store.models import SuspendedGrant, Suspension
from wavekit.domain.containment import SuspensionRecord
from wavekit.domain.grants import Grant, GrantSet


def record_suspension(session: Session, *, release_id: int, package_key: str, reason: str,
                      scope: str, identities: Collection[str], checks: Collection[str],
                      from_state: str, grants: GrantSet, at: datetime) -> Suspension:
    """Store a containment and its grants (caller's transaction); the target is not written."""
    row = Suspension(release_id=release_id, package_key=package_key, reason=reason, scope=scope,
                     identities=sorted(identities), checks=sorted(checks),
                     from_state=from_state, suspended_at=at)
    session.add(row)
    session.flush()
    if grants:
        session.execute(insert(SuspendedGrant), [
            {"suspension_id": row.id, "identity": g.identity, "entitlement": g.entitlement}
            for g in sorted(grants)])
    return row


def suspended_grants(session: Session, suspension_id: int | None) -> GrantSet:
    if suspension_id is None:  # not flushed yet: nothing stored under it
        return frozenset()
    rows = session.exec(select(SuspendedGrant.identity, SuspendedGrant.entitlement)
                        .where(SuspendedGrant.suspension_id == suspension_id))
    return frozenset(Grant(i, e) for i, e in rows)


def suspensions(session: Session, release_id: int, *, active_only: bool = False
                ) -> list[Suspension]:
    """A release's containments, oldest first (only those not lifted, if asked)."""
    q = select(Suspension).where(Suspension.release_id == release_id)
    if active_only:
        q = q.where(Suspension.lifted_at == None)  # noqa: E711
    return list(session.exec(q.order_by(col(Suspension.id))))


def suspension_records(session: Session, release_id: int) -> list[SuspensionRecord]:
    """A release's containments as plain values, for reconstructing its grants at a time."""
    return [SuspensionRecord(grants=suspended_grants(session, r.id), suspended_at=r.suspended_at,
                             lifted_at=r.lifted_at)
            for r in suspensions(session, release_id)]


def lift(session: Session, release_id: int, *, by: str, reason: str, at: datetime
         ) -> list[Suspension]:
    """Mark every active containment of a release lifted; returns them."""
    rows = suspensions(session, release_id, active_only=True)
    for r in rows:
        r.lifted_at, r.lifted_by, r.lift_reason = at, by, reason
        session.add(r)
    return rows
