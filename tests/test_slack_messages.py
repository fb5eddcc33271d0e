"""Block Kit builders: what owners, delegates and operators read in Slack."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from wavekit.adapters.slack import messages as m

DEADLINE = datetime(2026, 4, 9, 10, 0, tzinfo=UTC)
URL = "http://127.0.0.1:4200/runs/flow-run/6a1f"


def _handoff(**over):
    args = dict(
        approval_id=42, package_key="finance-month-end-operator",
        package_name="Finance Month-End Operator", wave=1, owner_slack_id="UFINOWNER1",
        members=24, entitlements=11, risk="low",
        counts={"adds": 250, "removes": 12, "retirements": 0},
        gates=[("owner named", True, "Finance Shared Services"),
               ("fallback drilled", False, "drill pending")],
        flow_run_url=URL, deadline=DEADLINE, triggered_by="URELMGR01")
    args.update(over)
    return m.handoff_message(**args)


def _all_text(msg) -> str:
    return msg["text"] + json.dumps(msg["blocks"], ensure_ascii=False)


def test_handoff_shows_the_facts_an_owner_decides_on() -> None:
    msg = _handoff()
    text = _all_text(msg)
    for fact in ("Finance Month-End Operator", "wave 1", "*Members*\\n24",
                 "*Entitlements*\\n11", "Low", "250 adds", "12 removes", "0 retirements",
                 "owner named", "fallback drilled", "drill pending", URL, "<@UFINOWNER1>",
                 "Triggered by <@URELMGR01>", "2026-04-09 10:00 UTC"):
        assert fact in text, fact
    assert ":x: *fallback drilled*" in text and ":white_check_mark: *owner named*" in text


def test_handoff_buttons_identify_the_approval() -> None:
    actions = [b for b in _handoff()["blocks"] if b["type"] == "actions"]
    assert len(actions) == 1
    buttons = {e["action_id"]: e for e in actions[0]["elements"]}
    assert set(buttons) == {m.APPROVE_ACTION, m.REJECT_ACTION}
    assert buttons[m.APPROVE_ACTION]["value"] == "42" == buttons[m.REJECT_ACTION]["value"]
    assert buttons[m.APPROVE_ACTION]["text"]["text"] == "Approve"
    assert buttons[m.REJECT_ACTION]["text"]["text"] == "Reject"


def test_mrkdwn_control_characters_in_names_are_escaped() -> None:
    msg = _handoff(package_name="R&D <Ops>", gates=[("a<b", True, "x&y")])
    mrkdwn = msg["text"] + json.dumps([b for b in msg["blocks"] if b["type"] != "header"])
    assert "R&amp;D &lt;Ops&gt;" in mrkdwn and "a&lt;b" in mrkdwn and "x&amp;y" in mrkdwn
    assert "<Ops>" not in mrkdwn and "R&D" not in mrkdwn
    header = msg["blocks"][0]["text"]
    assert header == {"type": "plain_text", "text": "Approval needed: R&D <Ops>", "emoji": True}


def test_decided_message_has_no_buttons_and_says_who_what_when_why() -> None:
    msg = m.decided_message(package_name="Finance Month-End Operator", wave=1,
                            decision="rejected", approver="UFINDELEG1",
                            decided_at=datetime(2026, 4, 8, 9, 30, tzinfo=UTC),
                            comment="Quarter close is this week", flow_run_url=URL)
    assert not [b for b in msg["blocks"] if b["type"] == "actions"]
    text = _all_text(msg)
    for fact in ("Rejected", "<@UFINDELEG1>", "2026-04-08 09:30 UTC",
                 "Quarter close is this week", URL):
        assert fact in text, fact


def test_timed_out_message_says_nobody_decided() -> None:
    msg = m.decided_message(package_name="P", wave=2, decision="timeout", approver="wavekit",
                            decided_at=DEADLINE)
    assert "Timed out" in msg["text"] and "nobody decided" in _all_text(msg)
    assert "the package is held" in _all_text(msg)


def test_reminder_and_escalation_texts() -> None:
    reminder = _all_text(m.reminder_message(package_name="P", wave=1,
                                            owner_slack_id="UOWNER", deadline=DEADLINE))
    assert "Reminder" in reminder and "<@UOWNER>" in reminder and "2026-04-09 10:00" in reminder
    esc = _all_text(m.escalation_message(package_name="P", wave=1, owner_slack_id="UOWNER",
                                         delegate_slack_ids=["UDEL1", "UDEL2"],
                                         deadline=DEADLINE))
    assert "<@UDEL1>, <@UDEL2>" in esc and "delegate" in esc and "<@UOWNER>" in esc
    nobody = _all_text(m.escalation_message(package_name="P", wave=1, owner_slack_id="UOWNER",
                                            delegate_slack_ids=[], deadline=None))
    assert "No delegate is declared" in nobody


def test_rollback_notice_carries_the_read_back_proof() -> None:
    mismatches = [(f"user{i:02d}", "fin-gl-journal-post") for i in range(12)]
    msg = m.rollback_message(package_key="k", package_name="Finance", wave=1,
                             reason="access drift 7% > 5%", prior_count=310,
                             readback_count=298, equal=False, mismatches=mismatches,
                             owner_slack_id="UOWNER", flow_run_url=URL)
    text = _all_text(msg)
    for fact in ("access drift 7% &gt; 5%", "*Prior bundle*\\n310 grants",
                 "*Read back*\\n298 grants", "*Equal*\\nno", "*Mismatches*\\n12",
                 "`user00` → `fin-gl-journal-post`", "and 2 more", "NOT equal"):
        assert fact in text, fact
    ok = _all_text(m.rollback_message(package_key="k", package_name="Finance", wave=1,
                                      reason="r", prior_count=3, readback_count=3, equal=True))
    assert "*Equal*\\nyes" in ok and "*Mismatches*\\n0" in ok


def test_held_and_gate_failed_notices_give_the_reason() -> None:
    held = _all_text(m.held_message(package_key="k", package_name="Service Desk", wave=2,
                                    reason="rejected by UFOO: not yet"))
    assert "Held: Service Desk" in held and "rejected by UFOO: not yet" in held
    gates = [("fallback drilled", False, "drill pending"), ("owner named", True, "")]
    failed = m.gate_failed_message(package_key="k", package_name="Service Desk", wave=2,
                                   gates=gates)
    assert "fallback drilled: drill pending" in failed["text"]
    assert "Failed: fallback drilled." in _all_text(failed)


def test_reject_modal_requires_a_reason_and_carries_the_approval() -> None:
    view = m.reject_modal(approval_id=42, package_name="P", wave=1, channel="C1")
    assert view["callback_id"] == m.REJECT_CALLBACK
    assert json.loads(view["private_metadata"]) == {"approval_id": 42, "channel": "C1"}
    (field,) = [b for b in view["blocks"] if b["type"] == "input"]
    assert field["optional"] is False and field["block_id"] == m.REASON_BLOCK
    assert field["element"]["action_id"] == m.REASON_INPUT
    assert len(view["title"]["text"]) <= 24  # Slack's limit for modal titles


def test_flow_run_url_points_at_the_prefect_ui() -> None:
    assert m.flow_run_url("http://127.0.0.1:4200/", "abc") == \
        "http://127.0.0.1:4200/runs/flow-run/abc"
