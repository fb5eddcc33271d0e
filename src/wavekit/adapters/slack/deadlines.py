"""Approval deadlines: remind the owner, escalate to the delegates, then time out.

`deadline_actions` is the pure rule; `apply_deadlines` runs it over every pending approval
in the store (a scheduled tick, never a sleep). A timed-out approval is recorded as
decision "timeout" and its paused flow run is resumed with a reject, so the flow holds
the package instead of waiting forever.

    requested ──(4 h)──► remind owner ──(8 h)──► escalate to delegates ──(24 h)──► time out
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from slack_sdk.errors import SlackClientError
from sqlmodel import col, select

from wavekit.adapters.slack.notifier import Notifier
from wavekit.adapters.store import audit
from wavekit.adapters.store.approvals import TIMEOUT_APPROVER, time_out
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.clock import as_utc
from wavekit.domain.decisions import deadline_passed

log = logging.getLogger(__name__)

DEFAULT_REMINDER_AFTER = timedelta(hours=4)
DEFAULT_ESCALATE_AFTER = timedelta(hours=8)
DEFAULT_DEADLINE_AFTER = timedelta(hours=24)


class DeadlineAction(StrEnum):
    """What a pending approval is due for."""

    REMIND = "remind"
    ESCALATE = "escalate"
    TIME_OUT = "time_out"


def deadline_actions(
    requested_at: datetime,
    now: datetime,
    reminder_after: timedelta = DEFAULT_REMINDER_AFTER,
    escalate_after: timedelta = DEFAULT_ESCALATE_AFTER,
    deadline: datetime | None = None,
    reminded: bool = False,
    escalated: bool = False,
) -> list[DeadlineAction]:
    """What is due for a pending approval at `now`; no deadline given means 24 h after request."""
    requested_at, now = as_utc(requested_at), as_utc(now)
    due = as_utc(deadline) if deadline else requested_at + DEFAULT_DEADLINE_AFTER
    if deadline_passed(due, now):
        return [DeadlineAction.TIME_OUT]
    actions = []
    if not reminded and now >= requested_at + reminder_after:
        actions.append(DeadlineAction.REMIND)
    if not escalated and now >= requested_at + escalate_after:
        actions.append(DeadlineAction.ESCALATE)
    return actions


@dataclass(frozen=True)
class TimedOut:
    """An approval that timed out, and the input that resumes its run with a reject."""

    approval_id: int
    package_key: str
    flow_run_id: str | None
    run_input: dict[str, Any]


def timeout_input(deadline: datetime) -> dict[str, Any]:
    """The ApprovalInput a timed-out run is resumed with. The run reads the timeout from the
    store (recorded first); the input only has to fit the form."""
    return {"decision": "reject", "approver": TIMEOUT_APPROVER, "code": "",
            "comment": f"no decision by {as_utc(deadline):%Y-%m-%d %H:%M} UTC"}


def apply_deadlines(
    database_url: str,
    notifier: Notifier,
    now: datetime,
    *,
    reminder_after: timedelta = DEFAULT_REMINDER_AFTER,
    escalate_after: timedelta = DEFAULT_ESCALATE_AFTER,
    deadline_after: timedelta = DEFAULT_DEADLINE_AFTER,
    resume: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[TimedOut]:
    """Remind, escalate and time out every pending approval; the timed-out ones are returned.

    With `resume`, timed-out runs are also resumed here (failures are audited, not raised).
    """
    now = as_utc(now)
    with session_scope(database_url) as s:
        pending = list(s.exec(select(Approval).where(col(Approval.decided_at).is_(None))
                              .order_by(col(Approval.id))))
    timed_out = []
    for approval in pending:
        assert approval.id is not None
        deadline = as_utc(approval.deadline or as_utc(approval.requested_at) + deadline_after)
        actions = deadline_actions(approval.requested_at, now, reminder_after, escalate_after,
                                   deadline, approval.reminder_sent_at is not None,
                                   approval.escalated_at is not None)
        for action in actions:
            if action is DeadlineAction.TIME_OUT:
                done = _time_out(database_url, notifier, approval, deadline, now)
                if done:
                    timed_out.append(done)
            else:
                _nudge(database_url, notifier, approval, action, deadline, now)
    for done in timed_out:
        if resume and done.flow_run_id:
            try:
                resume(done.flow_run_id, done.run_input)
            except Exception as exc:  # one stuck run must not stop the others
                log.warning("could not resume timed-out flow run %s: %s", done.flow_run_id, exc)
                with session_scope(database_url) as s:
                    audit.record(s, "approval_resume_failed", package_key=done.package_key,
                                 flow_run_id=done.flow_run_id, at=now,
                                 approval_id=done.approval_id, error=str(exc)[:500])
    return timed_out


def _nudge(database_url: str, notifier: Notifier, approval: Approval, action: DeadlineAction,
           deadline: datetime, now: datetime) -> None:
    """Send a reminder or escalation, then stamp it (a failed post is retried next tick)."""
    with session_scope(database_url) as s:
        pkg = load_package_view(s, approval.package_key)
    delegates = [d["slack_id"] for d in pkg.delegates if d.get("slack_id")]
    try:
        if action is DeadlineAction.REMIND:
            notifier.remind(channel=approval.slack_channel, ts=approval.slack_ts,
                            package_name=pkg.name, wave=pkg.wave,
                            owner_slack_id=pkg.owner_slack_id, deadline=deadline)
        else:
            notifier.escalate(channel=approval.slack_channel, ts=approval.slack_ts,
                              package_name=pkg.name, wave=pkg.wave,
                              owner_slack_id=pkg.owner_slack_id, delegate_slack_ids=delegates,
                              deadline=deadline)
    except SlackClientError as exc:
        log.warning("could not %s for approval #%s: %s", action.value, approval.id, exc)
        return
    with session_scope(database_url) as s:
        row = s.get(Approval, approval.id)
        assert row is not None
        detail: dict[str, Any]  # audit detail: the owner, or the delegates
        if action is DeadlineAction.REMIND:
            row.reminder_sent_at = now
            event, detail = "approval_reminded", {"owner": pkg.owner_slack_id}
        else:
            row.escalated_at = now
            event, detail = "approval_escalated", {"delegates": delegates}
        s.add(row)
        audit.record(s, event, package_key=pkg.key, wave=pkg.wave,
                     release_id=approval.release_id, flow_run_id=approval.flow_run_id, at=now,
                     approval_id=approval.id, deadline=deadline.isoformat(), **detail)


def _time_out(database_url: str, notifier: Notifier, approval: Approval, deadline: datetime,
              now: datetime) -> TimedOut | None:
    """Record the timeout first (the store is the truth), then update the Slack message."""
    assert approval.id is not None, "approvals are listed from the store, with their ids"
    run_input = timeout_input(deadline)
    with session_scope(database_url) as s:
        pkg = load_package_view(s, approval.package_key)
        # Someone may have clicked since we listed the pending approvals: they win.
        if not time_out(s, approval.id, now):
            return None
    try:
        notifier.mark_decided(channel=approval.slack_channel, ts=approval.slack_ts,
                              package_name=pkg.name, wave=pkg.wave, decision="timeout",
                              approver=TIMEOUT_APPROVER, decided_at=deadline)
    except SlackClientError as exc:
        log.warning("could not update the Slack message of approval #%s: %s", approval.id, exc)
    return TimedOut(approval.id, pkg.key, approval.flow_run_id, run_input)
