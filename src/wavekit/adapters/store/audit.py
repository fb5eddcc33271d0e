"""The audit log: every decision, state change and write to a target leaves one event."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from wavekit.adapters.store.models import AuditEvent
from wavekit.domain.clock import utcnow


def record(
    session: Session,
    action: str,
    *,
    actor: str = "wavekit",
    package_key: str | None = None,
    wave: int | None = None,
    release_id: int | None = None,
    flow_run_id: str | None = None,
    at=None,
    **detail: Any,
) -> AuditEvent:
    """Add one audit event to the session (committed with the change it describes)."""
    event = AuditEvent(
        at=at or utcnow(), actor=actor, action=action, package_key=package_key, wave=wave,
        release_id=release_id, flow_run_id=flow_run_id, detail=detail,
    )
    session.add(event)
    return event


def events(session: Session, *, package_key: str | None = None, action: str | None = None
           ) -> list[AuditEvent]:
    """Audit events in time order, optionally for one package or action."""
    q = select(AuditEvent).order_by(AuditEvent.id)
    if package_key:
        q = q.where(AuditEvent.package_key == package_key)
    if action:
        q = q.where(AuditEvent.action == action)
    return list(session.exec(q))
