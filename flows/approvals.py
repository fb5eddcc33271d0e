"""Approval deadlines (every 15 minutes): remind owners, escalate to delegates, time out."""

from __future__ import annotations

from datetime import datetime

from prefect import flow

from wavekit.domain.clock import as_utc
from wavekit.workflow import maintenance
from wavekit.workflow.runtime import current_runtime


@flow(name="approval-deadlines", log_prints=True)
def approval_deadlines(as_of: datetime | None = None) -> int:
    """Send reminders and escalations; hold handoffs past their deadline. Returns timeouts."""
    with current_runtime() as rt:
        return maintenance.sweep_approval_deadlines(rt, as_utc(as_of) if as_of else rt.clock.now())
