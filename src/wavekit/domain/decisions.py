"""Who may decide an owner handoff, and when: one pure function every channel calls.

Slack clicks, the Prefect UI form and the deadline sweep all go through `decide`. Rules, in
order (the first that applies wins):

1. an approval already decided stays decided; a later decision is harmless;
2. an approval locked after too many wrong codes takes no more decisions;
3. the package must be awaiting this handoff (its release open, its state Awaiting handoff);
4. the decision is approve or reject, and names who decides;
5. only the package's eligible approvers (owner, declared delegates, and for four eyes the
   approvers the catalog names) may decide;
6. nobody may decide at or after the deadline (the package is held instead);
7. whoever requested the wave never decides it (separation of duties);
8. on the UI path, identity is proven by the decider's own one-time code: unused, not
   expired, bound to this approval and this approver (local mode skips this, and says so);
9. an approver counts once: four eyes need distinct people;
10. a rejection needs a reason.

An accepted approval is final once `required` distinct approvers have approved; an accepted
rejection is always final (any rejection holds the package).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from wavekit.domain.clock import as_utc

# How a decision is stored on Approval.decision and in the audit log, whatever the channel.
STORED_DECISION: dict[str, str] = {"approve": "approved", "reject": "rejected"}
DECISIONS = ("approved", "rejected", "timeout")

Action = Literal["approve", "reject"]
# How the decider's identity was established: a signed Slack request, a one-time code typed
# in the Prefect UI form, or nothing at all (local mode, recorded as unverified).
Proof = Literal["slack", "code", "unverified"]

MAX_WRONG_CODES = 5
_CODE_ITERATIONS = 50_000  # a stolen store must not give codes up to a quick brute force


class Ruling(StrEnum):
    """Accept the decision, refuse it, or note that the approval was already decided."""

    ACCEPT = "accept"
    REFUSE = "refuse"
    ALREADY_DECIDED = "already_decided"


@dataclass(frozen=True)
class Click:
    """Someone decided: Approve or Reject (with the reason, for a reject), and on the UI
    path the one-time code they were sent."""

    user_id: str
    action: str
    user_name: str = ""
    comment: str = ""
    code: str = ""


@dataclass(frozen=True)
class IssuedCode:
    """A one-time code as the store keeps it: only its salted hash."""

    approver: str
    salt: str
    digest: str
    expires_at: datetime | None = None
    used_at: datetime | None = None


@dataclass(frozen=True)
class ApprovalFacts:
    """What the rules need about one approval, read from the store."""

    approval_id: int
    approvers: frozenset[str]
    names: Mapping[str, str] = field(default_factory=dict)  # approver id -> catalog name
    owner_name: str = ""
    triggered_by: str | None = None  # who requested the wave
    deadline: datetime | None = None
    decided_at: datetime | None = None
    decision: str | None = None  # approved | rejected | timeout
    decided_by: str | None = None
    awaiting: bool = True  # the package is Awaiting handoff on this approval's open release
    required: int = 1  # distinct approvals needed (four eyes: 2)
    approved_by: frozenset[str] = frozenset()  # who has approved so far (not yet final)
    codes: tuple[IssuedCode, ...] = ()
    locked: bool = False  # too many wrong codes


@dataclass(frozen=True)
class Outcome:
    """The verdict on a decision, with a reason a person can read."""

    verdict: Ruling
    reason: str = ""
    decision: str | None = None  # approve | reject when accepted; the stored one if decided
    final: bool = False  # accepted, and it decides the approval (not one of several sign-offs)
    wrong_code: bool = False  # refused for a code that is not the decider's valid one
    code_used: IssuedCode | None = None  # the code an accepted UI decision spends

    @property
    def accepted(self) -> bool:
        return self.verdict is Ruling.ACCEPT


def normalize_code(code: str) -> str:
    """Codes are typed by people: case, spaces and dashes do not matter."""
    return "".join(c for c in code.upper() if c.isalnum())


def code_digest(code: str, salt: str) -> str:
    """The salted, slow hash a code is stored as (never the code itself)."""
    return hashlib.pbkdf2_hmac("sha256", normalize_code(code).encode(), salt.encode(),
                               _CODE_ITERATIONS).hex()


def _norm(value: str | None) -> str:
    """Compare ids and names loosely: "<@U1>", "@u1" and "U1" are the same person."""
    v = (value or "").strip()
    if v.startswith("<@") and v.endswith(">"):
        v = v[2:-1].split("|", 1)[0]
    return v.lstrip("@").casefold()


def is_triggerer(click: Click, facts: ApprovalFacts) -> bool:
    """Whether the decider is who requested the wave (by id, username or catalog name)."""
    trigger = _norm(facts.triggered_by)
    if not trigger:
        return False
    aliases = {click.user_id, click.user_name, facts.names.get(click.user_id, "")}
    return trigger in {_norm(a) for a in aliases if a}


def deadline_passed(deadline: datetime | None, now: datetime) -> bool:
    """At or after the deadline nobody decides; the sweep and a timed-out pause hold it.

    The one deadline rule: `decide`, the deadline sweep and the run's pause timeout use it.
    """
    return deadline is not None and as_utc(now) >= as_utc(deadline)


def _check_code(click: Click, facts: ApprovalFacts, now: datetime
                ) -> tuple[Outcome | None, IssuedCode | None]:
    """(a refusal, None) when the code is not the decider's own valid one, else (None, it)."""
    if not normalize_code(click.code):
        return Outcome(Ruling.REFUSE, "the one-time approval code is required (it was sent "
                                       "to you when the handoff opened)"), None
    match = next((c for c in facts.codes
                  if hmac.compare_digest(code_digest(click.code, c.salt), c.digest)), None)
    return _code_refusal(click, match, now), match


def _code_refusal(click: Click, match: IssuedCode | None, now: datetime) -> Outcome | None:
    if match is None:
        return Outcome(Ruling.REFUSE, "wrong approval code", wrong_code=True)
    if _norm(match.approver) != _norm(click.user_id):
        return Outcome(Ruling.REFUSE, "that approval code was sent to someone else; use your "
                                       "own", wrong_code=True)
    if match.used_at is not None:
        return Outcome(Ruling.REFUSE, "that approval code was already used", wrong_code=True)
    if match.expires_at is not None and as_utc(now) > as_utc(match.expires_at):
        return Outcome(Ruling.REFUSE, "that approval code expired at "
                                       f"{as_utc(match.expires_at):%Y-%m-%d %H:%M} UTC")
    return None


def decide(click: Click, facts: ApprovalFacts, now: datetime, *, need_reason: bool = True,
           proof: Proof = "slack") -> Outcome:
    """Judge one decision; `need_reason=False` checks a Reject before its reason is asked."""
    if facts.decided_at is not None:
        by = facts.names.get(facts.decided_by or "", facts.decided_by or "wavekit")
        label = {"approved": "approved", "rejected": "rejected",
                 "timeout": "timed out"}.get(facts.decision or "", facts.decision or "decided")
        reason = (f"this release already timed out at {as_utc(facts.decided_at):%Y-%m-%d %H:%M} "
                  "UTC" if facts.decision == "timeout" else f"already {label} by {by}")
        return Outcome(Ruling.ALREADY_DECIDED, reason, facts.decision)
    if facts.locked:
        return Outcome(Ruling.REFUSE, f"this approval is locked after {MAX_WRONG_CODES} wrong "
                                       "codes; the owner was told, and the wave must be run "
                                       "again")
    if not facts.awaiting:
        return Outcome(Ruling.REFUSE, "this package is not awaiting this handoff")
    if click.action not in STORED_DECISION:
        return Outcome(Ruling.REFUSE, "the decision must be approve or reject")
    if not click.user_id.strip():
        return Outcome(Ruling.REFUSE, "the approver's id is required")
    if not facts.approvers:
        return Outcome(Ruling.REFUSE, "this package names no owner or delegate who can be "
                                       "reached (a Slack id or an e-mail address)")
    if click.user_id not in facts.approvers:
        owner = facts.owner_name or "the package owner"
        return Outcome(Ruling.REFUSE, f"only {owner} or a declared delegate can decide this "
                                       "release")
    if facts.deadline is not None and deadline_passed(facts.deadline, now):
        return Outcome(Ruling.REFUSE, "the decision deadline passed at "
                                       f"{as_utc(facts.deadline):%Y-%m-%d %H:%M} UTC; the "
                                       "package is held until the wave is run again")
    if is_triggerer(click, facts):
        return Outcome(Ruling.REFUSE, "you requested this wave, so you cannot decide your own "
                                       "release (separation of duties); another owner or "
                                       "delegate must decide it")
    code_used: IssuedCode | None = None
    if proof == "code" and need_reason:
        refused, code_used = _check_code(click, facts, now)
        if refused is not None:
            return refused
    if click.action == "approve" and click.user_id in facts.approved_by:
        return Outcome(Ruling.REFUSE, "you have already approved; "
                                       f"{facts.required} different approvers are needed")
    if click.action == "reject" and need_reason and not click.comment.strip():
        return Outcome(Ruling.REFUSE, "a rejection needs a reason")
    final = click.action == "reject" or len(facts.approved_by | {click.user_id}) >= facts.required
    return Outcome(Ruling.ACCEPT, "", click.action, final=final, code_used=code_used)


class MissingRequester(ValueError):
    """A wave was started without saying who requests it."""


def requester(value: str | None) -> str:
    """Who requests a wave, required: "never the requester" cannot be applied to nobody."""
    who = (value or "").strip()
    if not who:
        raise MissingRequester("requested_by is required: who requests this wave (a Slack id "
                               "or name; they can never approve it)")
    return who


def same_person(a: str | None, b: str | None) -> bool:
    """Whether two ids name the same person, loosely ("<@U1>", "@u1", "U1"); blanks never."""
    return bool(_norm(a)) and _norm(a) == _norm(b)
