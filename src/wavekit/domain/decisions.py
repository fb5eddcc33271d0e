"""Who may decide an owner handoff, and when: one pure function both receivers call.

Rules, in order:
1. an approval already decided stays decided; a later click is harmless;
2. only the package owner or a declared delegate (by Slack id) may decide;
3. nobody may decide after the deadline (the package is held instead);
4. whoever triggered the wave may not approve it (separation of duties); they may reject;
5. a rejection needs a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from wavekit.domain.clock import as_utc

# How a decision is stored on Approval.decision, whichever channel it came from.
STORED_DECISION: dict[str, str] = {"approve": "approved", "reject": "rejected"}

Action = Literal["approve", "reject"]


class Verdict(StrEnum):
    """Accept the click, refuse it, or note that the approval was already decided."""

    ACCEPT = "accept"
    REFUSE = "refuse"
    ALREADY_DECIDED = "already_decided"


@dataclass(frozen=True)
class Click:
    """Someone pressed Approve or Reject (with the reason, for a reject)."""

    user_id: str
    action: Action
    user_name: str = ""
    comment: str = ""


@dataclass(frozen=True)
class ApprovalFacts:
    """What the rules need about one approval, read from the store."""

    approval_id: int
    approvers: frozenset[str]
    names: Mapping[str, str] = field(default_factory=dict)  # Slack id -> catalog name
    owner_name: str = ""
    triggered_by: str | None = None
    deadline: datetime | None = None
    decided_at: datetime | None = None
    decision: str | None = None  # approved | rejected | timeout
    decided_by: str | None = None


@dataclass(frozen=True)
class Outcome:
    """The verdict on a click, with a reason a person can read."""

    verdict: Verdict
    reason: str = ""
    decision: str | None = None  # approve | reject when accepted; the stored one if decided

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT


def _norm(value: str | None) -> str:
    """Compare Slack ids and names loosely: "<@U1>", "@u1" and "U1" are the same person."""
    v = (value or "").strip()
    if v.startswith("<@") and v.endswith(">"):
        v = v[2:-1].split("|", 1)[0]
    return v.lstrip("@").casefold()


def is_triggerer(click: Click, facts: ApprovalFacts) -> bool:
    """Whether the clicking user is who triggered the wave (by Slack id, username or name)."""
    trigger = _norm(facts.triggered_by)
    if not trigger:
        return False
    aliases = {click.user_id, click.user_name, facts.names.get(click.user_id, "")}
    return trigger in {_norm(a) for a in aliases if a}


def decide(click: Click, facts: ApprovalFacts, now: datetime, *,
           need_reason: bool = True) -> Outcome:
    """Judge one click; `need_reason=False` checks a Reject before its reason is asked for."""
    if facts.decided_at is not None:
        by = facts.names.get(facts.decided_by or "", facts.decided_by or "wavekit")
        label = {"approved": "approved", "rejected": "rejected",
                 "timeout": "timed out"}.get(facts.decision or "", facts.decision or "decided")
        reason = (f"this release already timed out at {as_utc(facts.decided_at):%Y-%m-%d %H:%M} "
                  "UTC" if facts.decision == "timeout" else f"already {label} by {by}")
        return Outcome(Verdict.ALREADY_DECIDED, reason, facts.decision)
    if not facts.approvers:
        return Outcome(Verdict.REFUSE, "this package names no owner or delegate with a Slack "
                                       "id; decide it in the Prefect UI")
    if click.user_id not in facts.approvers:
        owner = facts.owner_name or "the package owner"
        return Outcome(Verdict.REFUSE, f"only {owner} or a declared delegate can decide this "
                                       "release")
    if facts.deadline is not None and as_utc(now) > as_utc(facts.deadline):
        return Outcome(Verdict.REFUSE, "the decision deadline passed at "
                                       f"{as_utc(facts.deadline):%Y-%m-%d %H:%M} UTC; the "
                                       "package is held until the wave is run again")
    if click.action == "approve" and is_triggerer(click, facts):
        return Outcome(Verdict.REFUSE, "you triggered this wave, so you cannot approve your own "
                                       "release (separation of duties); another owner or "
                                       "delegate must approve it")
    if click.action == "reject" and need_reason and not click.comment.strip():
        return Outcome(Verdict.REFUSE, "a rejection needs a reason")
    return Outcome(Verdict.ACCEPT, "", click.action)
