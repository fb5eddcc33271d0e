"""Stepped releases in the store: the progress row and the members each step took up."""

from __future__ import annotations

from sqlalchemy import insert
from sqlmodel import Session, col, select

from wavekit.adapters.store.models import CohortMember, CohortProgress, Identity


def progress(session: Session, release_id: int) -> CohortProgress | None:
    """The release's step progress, or None for a release without steps."""
    return session.get(CohortProgress, release_id)


def granted_members(session: Session, release_id: int) -> frozenset[str] | None:
    """Every member the release's steps took up so far; None for a release without steps."""
    if session.get(CohortProgress, release_id) is None:
        return None
    return frozenset(session.exec(select(CohortMember.identity)
                                  .where(CohortMember.release_id == release_id)))


def add_members(session: Session, release_id: int, step: int, members: frozenset[str]
                ) -> None:
    """Record the members step `step` takes up (those not taken up by an earlier step)."""
    have = granted_members(session, release_id) or frozenset()
    rows = [{"release_id": release_id, "identity": m, "step": step}
            for m in sorted(members - have)]
    if rows:
        session.execute(insert(CohortMember), rows)


def strata(session: Session, column: str, members: frozenset[str]) -> dict[str, str]:
    """identity -> its value of `column` (an identities.csv column; empty when unset)."""
    attr = getattr(Identity, column)
    rows = session.exec(select(Identity.id, attr).where(
        col(Identity.id).in_(sorted(members))))
    return {i: (v or "") for i, v in rows}
