"""Owner approvals: the typed input a decision carries, and the rules for who may decide.

The same `ApprovalInput` arrives from the Prefect UI form (pause_flow_run's wait_for_input)
and from a Slack button click (resume_flow_run's run_input).
"""

from __future__ import annotations

from typing import Literal

from prefect.input import RunInput


class ApprovalInput(RunInput):
    """Owner handoff decision. In the Prefect UI this renders as the approval form."""

    decision: Literal["approve", "reject"] = "approve"
    approver: str = ""
    comment: str = ""
    channel: str = "prefect-ui"
