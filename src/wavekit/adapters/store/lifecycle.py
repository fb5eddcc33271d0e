"""Moving a package between states: checked by the state machine, stamped, audited; and
the states as of a past time, rebuilt from that audit trail."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlmodel import Session, col, select

from wavekit.adapters.store import audit
from wavekit.adapters.store.models import AuditEvent, RolePackage
from wavekit.domain.clock import as_utc, utcnow
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


def states_as_of(session: Session, as_of: datetime) -> dict[str, PackageState]:
    """Each package's state as of `as_of`, rebuilt from its audited state changes.

    The state is the to_state of the package's last `state_changed` event at or before
    `as_of`; before its first event it is that event's from_state (the state it was loaded
    with); a package with no state change keeps its stored state. Events at the same instant
    count in the order they were recorded. Two reads (the packages, the state changes), no
    per-package query.

    Limit: the store records no per-package load time (`catalog_loaded` names no packages),
    so a package loaded after `as_of` cannot be told apart and is reported with its loaded
    state; were a load time recorded, such a package would be left out here.
    """
    current = {key: PackageState(state)
               for key, state in session.exec(select(RolePackage.key, RolePackage.state))}
    rows = session.exec(select(AuditEvent.package_key, AuditEvent.at, AuditEvent.id,
                               AuditEvent.detail)
                        .where(AuditEvent.action == "state_changed",
                               col(AuditEvent.package_key).is_not(None))).all()
    if not rows:
        return current
    events = pd.DataFrame(rows, columns=["key", "at", "id", "detail"])
    events["at"] = pd.to_datetime(events["at"].map(as_utc), utc=True)
    events = events.sort_values(["at", "id"], kind="stable")
    cut = pd.Timestamp(as_utc(as_of))
    first_from = events.groupby("key")["detail"].first().map(lambda d: d.get("from_state"))
    last_to = (events[events["at"] <= cut].groupby("key")["detail"].last()
               .map(lambda d: d.get("to_state")))
    states = dict(current)
    for key, state in {**first_from.to_dict(), **last_to.to_dict()}.items():
        if key in current and state:  # a deleted package's history names no package now
            states[key] = PackageState(state)
    return states
