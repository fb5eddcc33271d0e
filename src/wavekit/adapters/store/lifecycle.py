"""Moving a package between states: checked by the state machine, stamped, audited."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from wavekit.adapters.store import audit
from wavekit.adapters.store.models import RolePackage
from wavekit.domain.clock import utcnow
from wavekit.domain.states import PackageState, check_transition


def transition(
    session: Session,
    package: RolePackage,
    new_state: PackageState,
    reason: str = "",
    *,
    actor: str = "wavekit",
    release_id: int | None = None,
    at: datetime | None = None,
) -> None:
    """Change a package's state (raising IllegalTransition if not allowed) and audit it."""
    old = PackageState(package.state)
    check_transition(old, new_state)
    package.state = new_state
    package.state_reason = reason
    package.state_changed_at = at or utcnow()
    session.add(package)
    audit.record(
        session, "state_changed", actor=actor, package_key=package.key, wave=package.wave,
        release_id=release_id, at=at, from_state=old.value, to_state=new_state.value,
        reason=reason,
    )
