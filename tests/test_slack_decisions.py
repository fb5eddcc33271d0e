"""Who may decide an owner handoff, and when: the pure rule, table by table."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from wavekit.domain.decisions import (
    ApprovalFacts,
    Click,
    IssuedCode,
    Ruling,
    code_digest,
    decide,
)

NOW = datetime(2026, 4, 8, 12, 0, tzinfo=UTC)
OWNER, DELEGATE, STRANGER, MANAGER = "UFINOWNER1", "UFINDELEG1", "USTRANGER1", "URELMGR01"

FACTS = ApprovalFacts(
    approval_id=7,
    approvers=frozenset({OWNER, DELEGATE}),
    names={OWNER: "Finance Shared Services", DELEGATE: "Priya Patel"},
    owner_name="Finance Shared Services",
    triggered_by=MANAGER,
    deadline=NOW + timedelta(hours=12),
)

CASES = [
    # (case, click, facts changes, verdict, reason contains)
    ("owner approves", Click(OWNER, "approve"), {}, Ruling.ACCEPT, ""),
    ("delegate approves", Click(DELEGATE, "approve"), {}, Ruling.ACCEPT, ""),
    ("owner rejects with a reason", Click(OWNER, "reject", comment="not this week"), {},
     Ruling.ACCEPT, ""),
    ("stranger approves", Click(STRANGER, "approve"), {}, Ruling.REFUSE,
     "only Finance Shared Services or a declared delegate"),
    ("stranger rejects", Click(STRANGER, "reject", comment="no"), {}, Ruling.REFUSE,
     "declared delegate"),
    ("triggerer (an approver) approves own wave", Click(DELEGATE, "approve"),
     {"triggered_by": DELEGATE}, Ruling.REFUSE, "separation of duties"),
    ("triggerer named by catalog name", Click(DELEGATE, "approve"),
     {"triggered_by": "priya patel"}, Ruling.REFUSE, "cannot decide your own release"),
    ("triggerer named by Slack username", Click(DELEGATE, "approve", user_name="priya.p"),
     {"triggered_by": "@priya.p"}, Ruling.REFUSE, "separation of duties"),
    ("triggerer as a Slack mention", Click(OWNER, "approve"),
     {"triggered_by": f"<@{OWNER}>"}, Ruling.REFUSE, "separation of duties"),
    ("the requester never decides, not even a reject",
     Click(DELEGATE, "reject", comment="found a problem"), {"triggered_by": DELEGATE},
     Ruling.REFUSE, "separation of duties"),
    ("another approver may approve what the triggerer started", Click(OWNER, "approve"),
     {"triggered_by": DELEGATE}, Ruling.ACCEPT, ""),
    ("rejection without a reason", Click(OWNER, "reject", comment="  "), {}, Ruling.REFUSE,
     "needs a reason"),
    ("past the deadline", Click(OWNER, "approve"), {"deadline": NOW - timedelta(seconds=1)},
     Ruling.REFUSE, "deadline passed at 2026-04-08 11:59 UTC"),
    ("exactly at the deadline (the sweep times it out then)", Click(OWNER, "approve"),
     {"deadline": NOW}, Ruling.REFUSE, "deadline passed"),
    ("just before the deadline", Click(OWNER, "approve"),
     {"deadline": NOW + timedelta(seconds=1)}, Ruling.ACCEPT, ""),
    ("naive deadline from SQLite", Click(OWNER, "approve"),
     {"deadline": (NOW - timedelta(hours=1)).replace(tzinfo=None)}, Ruling.REFUSE,
     "deadline passed"),
    ("no deadline", Click(OWNER, "approve"), {"deadline": None}, Ruling.ACCEPT, ""),
    ("already approved", Click(DELEGATE, "approve"),
     {"decided_at": NOW, "decision": "approved", "decided_by": OWNER},
     Ruling.ALREADY_DECIDED, "already approved by Finance Shared Services"),
    ("already rejected, stranger clicks", Click(STRANGER, "approve"),
     {"decided_at": NOW, "decision": "rejected", "decided_by": DELEGATE},
     Ruling.ALREADY_DECIDED, "already rejected by Priya Patel"),
    ("already timed out", Click(OWNER, "approve"),
     {"decided_at": NOW, "decision": "timeout", "decided_by": "wavekit"},
     Ruling.ALREADY_DECIDED, "timed out"),
    ("package without reachable approvers", Click(OWNER, "approve"),
     {"approvers": frozenset()}, Ruling.REFUSE, "names no owner or delegate"),
    ("blank approver", Click("  ", "approve"), {}, Ruling.REFUSE, "approver's id is required"),
    ("no decision", Click(OWNER, ""), {}, Ruling.REFUSE, "must be approve or reject"),
    ("package not awaiting this handoff", Click(OWNER, "approve"), {"awaiting": False},
     Ruling.REFUSE, "not awaiting this handoff"),
    ("locked after wrong codes", Click(OWNER, "approve"), {"locked": True}, Ruling.REFUSE,
     "locked after 5 wrong codes"),
    ("four eyes: the first approval is accepted, not final", Click(OWNER, "approve"),
     {"required": 2}, Ruling.ACCEPT, ""),
    ("four eyes: the same person twice does not count", Click(OWNER, "approve"),
     {"required": 2, "approved_by": frozenset({OWNER})}, Ruling.REFUSE,
     "2 different approvers are needed"),
]


@pytest.mark.parametrize(("click", "changes", "verdict", "reason"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(click: Click, changes: dict, verdict: Ruling, reason: str) -> None:
    outcome = decide(click, replace(FACTS, **changes), NOW)
    assert outcome.verdict is verdict
    assert reason in outcome.reason
    if verdict is Ruling.ACCEPT:
        assert outcome.decision == click.action and outcome.reason == ""
        facts = replace(FACTS, **changes)
        assert outcome.final == (click.action == "reject" or facts.required == 1)
    else:
        assert outcome.reason  # every refusal says why


def test_reject_button_is_checked_before_the_reason_is_asked() -> None:
    assert decide(Click(OWNER, "reject"), FACTS, NOW, need_reason=False).accepted
    assert not decide(Click(STRANGER, "reject"), FACTS, NOW, need_reason=False).accepted


def test_four_eyes_second_distinct_approver_completes_it() -> None:
    facts = replace(FACTS, required=2, approved_by=frozenset({OWNER}))
    outcome = decide(Click(DELEGATE, "approve"), facts, NOW)
    assert outcome.accepted and outcome.final


def test_any_rejection_is_final_even_after_an_approval() -> None:
    facts = replace(FACTS, required=2, approved_by=frozenset({OWNER}))
    assert decide(Click(DELEGATE, "reject", comment="no"), facts, NOW).final


# ---------------------------------------------------------------- one-time codes (UI path)

SALT = "s1"
CODES = (IssuedCode(OWNER, SALT, code_digest("ABCD-2345", SALT), NOW + timedelta(hours=1)),
         IssuedCode(DELEGATE, "s2", code_digest("WXYZ-6789", "s2"), NOW + timedelta(hours=1)))
CODE_CASES = [
    ("own code", Click(OWNER, "approve", code="abcd 2345"), {}, Ruling.ACCEPT, "", False),
    ("no code", Click(OWNER, "approve"), {}, Ruling.REFUSE, "code is required", False),
    ("wrong code", Click(OWNER, "approve", code="AAAA-0000"), {}, Ruling.REFUSE,
     "wrong approval code", True),
    ("someone else's code", Click(OWNER, "approve", code="WXYZ-6789"), {}, Ruling.REFUSE,
     "sent to someone else", True),
    ("reused code", Click(OWNER, "approve", code="ABCD-2345"),
     {"codes": (replace(CODES[0], used_at=NOW), CODES[1])}, Ruling.REFUSE,
     "already used", True),
    ("expired code", Click(OWNER, "approve", code="ABCD-2345"),
     {"codes": (replace(CODES[0], expires_at=NOW - timedelta(seconds=1)), CODES[1])},
     Ruling.REFUSE, "expired at", False),
    ("requester with their own valid code", Click(DELEGATE, "approve", code="WXYZ-6789"),
     {"triggered_by": DELEGATE}, Ruling.REFUSE, "separation of duties", False),
    ("stranger with a stolen code", Click(STRANGER, "approve", code="ABCD-2345"), {},
     Ruling.REFUSE, "declared delegate", False),
]


@pytest.mark.parametrize(("click", "changes", "verdict", "reason", "counted"),
                         [c[1:] for c in CODE_CASES], ids=[c[0] for c in CODE_CASES])
def test_decide_with_a_code(click: Click, changes: dict, verdict: Ruling, reason: str,
                            counted: bool) -> None:
    outcome = decide(click, replace(FACTS, **{"codes": CODES, **changes}), NOW, proof="code")
    assert outcome.verdict is verdict
    assert reason in outcome.reason
    assert outcome.wrong_code is counted
    if verdict is Ruling.ACCEPT:
        assert outcome.code_used == CODES[0]


def test_unverified_mode_needs_no_code() -> None:
    assert decide(Click(OWNER, "approve"), FACTS, NOW, proof="unverified").accepted
