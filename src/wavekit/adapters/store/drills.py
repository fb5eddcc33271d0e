"""Rollback drills in the store: the drill rows as domain records, and a drill's bundle."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, insert
from sqlmodel import Session, col, select

from wavekit.adapters.store.models import DrillGrant, DrillRun
from wavekit.domain.drills import DrillRecord
from wavekit.domain.grants import Grant
from wavekit.domain.planning import Plan

_KINDS = ("prior", "add", "remove", "retire")


def as_record(run: DrillRun) -> DrillRecord:
    return DrillRecord(
        package_key=run.package_key, kind=run.kind, passed=run.passed,
        finished_at=run.finished_at, id=run.id, target=run.target, signed_by=run.signed_by,
        duration_seconds=run.duration_seconds, objective_minutes=run.objective_minutes,
        failure=run.failure)


def drill_records(session: Session, package_keys: Iterable[str] | None = None
                  ) -> dict[str, tuple[DrillRecord, ...]]:
    """Every drill by package key (oldest first), of `package_keys` or of every package."""
    q = select(DrillRun).order_by(col(DrillRun.id))
    if package_keys is not None:
        q = q.where(col(DrillRun.package_key).in_(list(package_keys)))
    out: dict[str, list[DrillRecord]] = {}
    for run in session.exec(q):
        out.setdefault(run.package_key, []).append(as_record(run))
    return {k: tuple(v) for k, v in out.items()}


def record_drill_bundle(session: Session, drill_id: int, plan: Plan) -> None:
    """Store the plan a drill applied on its drill target and the prior grants it restores."""
    session.exec(delete(DrillGrant).where(col(DrillGrant.drill_id) == drill_id))
    rows = [{"drill_id": drill_id, "kind": kind, "identity": g.identity,
             "entitlement": g.entitlement}
            for kind, grants in zip(_KINDS, (plan.prior, plan.adds, plan.removes,
                                             plan.retirements), strict=True)
            for g in grants]
    if rows:
        session.execute(insert(DrillGrant), rows)


def load_drill_bundle(session: Session, run: DrillRun) -> Plan:
    """A drill's stored plan over its scope (empty before the drill deployed)."""
    assert run.id is not None
    by_kind: dict[str, set[Grant]] = {k: set() for k in _KINDS}
    for kind, identity, entitlement in session.exec(
            select(DrillGrant.kind, DrillGrant.identity, DrillGrant.entitlement)
            .where(DrillGrant.drill_id == run.id)):
        by_kind[kind].add(Grant(identity, entitlement))
    return Plan(package_key=run.package_key, scope=frozenset(run.scope),
                adds=frozenset(by_kind["add"]), removes=frozenset(by_kind["remove"]),
                retirements=frozenset(by_kind["retire"]), prior=frozenset(by_kind["prior"]))
