"""Owner approvals: the typed input a decision carries, and the rules for who may decide.

The same `ApprovalInput` arrives from the Prefect UI form (pause_flow_run's wait_for_input)
and from a Slack button click (resume_flow_run's run_input).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from prefect.input import RunInput
from sqlmodel import select

from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval
from wavekit.domain.decisions import STORED_DECISION

__all__ = ["STORED_DECISION", "ApprovalInput", "auto_approver"]


class ApprovalInput(RunInput):
    """Owner handoff decision. In the Prefect UI this renders as the approval form."""

    decision: Literal["approve", "reject"] = "approve"
    approver: str = ""
    comment: str = ""
    channel: str = "prefect-ui"


Decider = Callable[[Approval], "tuple[str, str, str] | None"]


def approve_all(_: Approval) -> tuple[str, str, str]:
    return ("approve", "demo auto-approval (not a real owner)", "approved by wavekit demo")


@contextmanager
def auto_approver(database_url: str, decide: Decider = approve_all,
                  poll_seconds: float = 0.5) -> Iterator[list[str]]:
    """Resume every paused owner handoff with `decide`'s answer (None leaves it paused).

    For the demo and tests only: a real release waits for its owner.
    """
    from prefect.flow_runs import resume_flow_run

    handled: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with session_scope(database_url) as s:
                pending = list(s.exec(select(Approval).where(
                    Approval.decided_at.is_(None),  # type: ignore[union-attr]
                    Approval.flow_run_id.is_not(None))))  # type: ignore[union-attr]
            for a in pending:
                key = f"{a.id}:{a.flow_run_id}"
                if key in handled or (choice := decide(a)) is None:
                    continue
                decision, who, comment = choice
                try:
                    resume_flow_run(a.flow_run_id, run_input={
                        "decision": decision, "approver": who, "comment": comment})
                    handled.append(key)
                except Exception:
                    pass
            stop.wait(poll_seconds)

    thread = threading.Thread(target=loop, daemon=True, name="auto-approver")
    thread.start()
    try:
        yield handled
    finally:
        stop.set()
        thread.join(timeout=5)
