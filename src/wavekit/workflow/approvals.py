"""Owner approvals: the typed input a Prefect UI decision carries, and the demo's approver.

`ApprovalInput` renders as the form of a paused package run. Prefect's server cannot tell who
typed in it, so the form asks for the approver's id and the one-time code wavekit sent them
(wavekit.workflow.approval_codes); the run judges it with the same rule Slack clicks go
through (wavekit.adapters.store.approvals.settle) and, when it is refused, waits again.
Slack and the deadline sweep record their decision in the store first and resume the run
with an input that only has to fit the form: the run reads the decision from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal
from uuid import UUID

from prefect.input import RunInput
from pydantic import Field
from sqlmodel import col, select

from wavekit.adapters.polling import polling
from wavekit.adapters.store.approvals import load_context
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval
from wavekit.domain.decisions import STORED_DECISION, Click, is_triggerer

__all__ = ["STORED_DECISION", "ApprovalInput", "auto_approver"]


class ApprovalInput(RunInput):
    """Owner handoff decision. In the Prefect UI this renders as the approval form.

    No field has a default that decides anything: an empty comment is the only default, and
    the rule refuses a rejection without one.
    """

    decision: Literal["approve", "reject"] = Field(
        description="approve deploys (once enough approvers agree); reject holds the package")
    approver: str = Field(description="Your approver id: your Slack id (or e-mail) as the "
                                      "catalog names you")
    code: str = Field(description="The one-time approval code wavekit sent you")
    comment: str = Field("", description="Why (required to reject)")


# (decision, approver id or None for the next eligible approver, comment); None: leave it.
Decider = Callable[[Approval], "tuple[str, str | None, str] | None"]


def approve_all(_: Approval) -> tuple[str, str | None, str]:
    return ("approve", None, "demo auto-approval (not a real owner)")


def _next_approver(database_url: str, approval_id: int) -> str:
    """An eligible approver who has not signed yet and did not request the wave."""
    with session_scope(database_url) as s:
        ctx = load_context(s, approval_id)
    if ctx is None:
        return ""
    for person in ctx.people:
        if (person.id not in ctx.facts.approved_by
                and not is_triggerer(Click(person.id, "approve"), ctx.facts)):
            return person.id
    return ""


@contextmanager
def auto_approver(database_url: str, decide: Decider = approve_all,
                  poll_seconds: float = 0.5) -> Iterator[list[str]]:
    """Resume every paused owner handoff with `decide`'s answer (None leaves it paused).

    For the demo and tests only, in local mode (WAVEKIT_APPROVALS_UNVERIFIED): no code is
    typed, so every decision it makes is recorded as unverified. A real release waits for
    its owner.
    """
    from prefect.flow_runs import resume_flow_run

    handled: list[str] = []

    def poll() -> None:
        with session_scope(database_url) as s:
            pending = list(s.exec(select(Approval).where(
                col(Approval.decided_at).is_(None),
                col(Approval.flow_run_id).is_not(None))))
        for a in pending:
            key = f"{a.id}:{a.flow_run_id}:{a.form_inputs}"
            if key in handled or (choice := decide(a)) is None:
                continue
            decision, who, comment = choice
            assert a.id is not None and a.flow_run_id is not None, "selected with both set"
            try:
                resume_flow_run(UUID(a.flow_run_id), run_input={
                    "decision": decision, "code": "", "comment": comment,
                    "approver": who or _next_approver(database_url, a.id)})
                handled.append(key)
            except Exception:
                pass

    with polling(poll, poll_seconds, "auto-approver"):
        yield handled
