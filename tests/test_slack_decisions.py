"""Who may decide an owner handoff, and when: the pure rule, table by table."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from wavekit.domain.decisions import ApprovalFacts, Click, Verdict, decide

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
    ("owner approves", Click(OWNER, "approve"), {}, Verdict.ACCEPT, ""),
    ("delegate approves", Click(DELEGATE, "approve"), {}, Verdict.ACCEPT, ""),
    ("owner rejects with a reason", Click(OWNER, "reject", comment="not this week"), {},
     Verdict.ACCEPT, ""),
    ("stranger approves", Click(STRANGER, "approve"), {}, Verdict.REFUSE,
     "only Finance Shared Services or a declared delegate"),
    ("stranger rejects", Click(STRANGER, "reject", comment="no"), {}, Verdict.REFUSE,
     "declared delegate"),
    ("triggerer (an approver) approves own wave", Click(DELEGATE, "approve"),
     {"triggered_by": DELEGATE}, Verdict.REFUSE, "separation of duties"),
    ("triggerer named by catalog name", Click(DELEGATE, "approve"),
     {"triggered_by": "priya patel"}, Verdict.REFUSE, "cannot approve your own release"),
    ("triggerer named by Slack username", Click(DELEGATE, "approve", user_name="priya.p"),
     {"triggered_by": "@priya.p"}, Verdict.REFUSE, "separation of duties"),
    ("triggerer as a Slack mention", Click(OWNER, "approve"),
     {"triggered_by": f"<@{OWNER}>"}, Verdict.REFUSE, "separation of duties"),
    ("triggerer may still reject", Click(DELEGATE, "reject", comment="found a problem"),
     {"triggered_by": DELEGATE}, Verdict.ACCEPT, ""),
    ("another approver may approve what the triggerer started", Click(OWNER, "approve"),
     {"triggered_by": DELEGATE}, Verdict.ACCEPT, ""),
    ("rejection without a reason", Click(OWNER, "reject", comment="  "), {}, Verdict.REFUSE,
     "needs a reason"),
    ("past the deadline", Click(OWNER, "approve"), {"deadline": NOW - timedelta(seconds=1)},
     Verdict.REFUSE, "deadline passed at 2026-04-08 11:59 UTC"),
    ("exactly at the deadline", Click(OWNER, "approve"), {"deadline": NOW}, Verdict.ACCEPT, ""),
    ("naive deadline from SQLite", Click(OWNER, "approve"),
     {"deadline": (NOW - timedelta(hours=1)).replace(tzinfo=None)}, Verdict.REFUSE,
     "deadline passed"),
    ("no deadline", Click(OWNER, "approve"), {"deadline": None}, Verdict.ACCEPT, ""),
    ("already approved", Click(DELEGATE, "approve"),
     {"decided_at": NOW, "decision": "approved", "decided_by": OWNER},
     Verdict.ALREADY_DECIDED, "already approved by Finance Shared Services"),
    ("already rejected, stranger clicks", Click(STRANGER, "approve"),
     {"decided_at": NOW, "decision": "rejected", "decided_by": DELEGATE},
     Verdict.ALREADY_DECIDED, "already rejected by Priya Patel"),
    ("already timed out", Click(OWNER, "approve"),
     {"decided_at": NOW, "decision": "timeout", "decided_by": "wavekit"},
     Verdict.ALREADY_DECIDED, "timed out"),
    ("package without Slack approvers", Click(OWNER, "approve"), {"approvers": frozenset()},
     Verdict.REFUSE, "decide it in the Prefect UI"),
]


@pytest.mark.parametrize(("click", "changes", "verdict", "reason"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(click: Click, changes: dict, verdict: Verdict, reason: str) -> None:
    outcome = decide(click, replace(FACTS, **changes), NOW)
    assert outcome.verdict is verdict
    assert reason in outcome.reason
    if verdict is Verdict.ACCEPT:
        assert outcome.decision == click.action and outcome.reason == ""
    else:
        assert outcome.reason  # every refusal says why


def test_reject_button_is_checked_before_the_reason_is_asked() -> None:
    assert decide(Click(OWNER, "reject"), FACTS, NOW, need_reason=False).accepted
    assert not decide(Click(STRANGER, "reject"), FACTS, NOW, need_reason=False).accepted
