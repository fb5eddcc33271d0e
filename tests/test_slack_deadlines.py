"""Approval deadlines: the pure schedule, then reminders, escalation and timeout in the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.slack_double import BOT_TOKEN, CHANNEL, SlackDouble
from wavekit.adapters.slack.deadlines import DeadlineAction, apply_deadlines, deadline_actions
from wavekit.adapters.slack.notifier import (
    NullNotifier,
    SlackNotifier,
    announce_handoff,
    make_web_client,
)
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, Release
from wavekit.domain.clock import as_utc

pytest_plugins = ["tests.support.slack_double"]

T0 = datetime(2026, 4, 8, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
R, E, T = DeadlineAction.REMIND, DeadlineAction.ESCALATE, DeadlineAction.TIME_OUT


@pytest.mark.parametrize(("elapsed", "reminded", "escalated", "expected"), [
    (0 * H, False, False, []),
    (3.9 * H, False, False, []),
    (4 * H, False, False, [R]),
    (5 * H, True, False, []),
    (8 * H, True, False, [E]),
    (9 * H, False, False, [R, E]),  # the ticker was down: both are due
    (9 * H, True, True, []),
    (24 * H, True, True, [T]),
    (30 * H, False, False, [T]),  # past the deadline nothing else matters
])
def test_deadline_schedule(elapsed: timedelta, reminded: bool, escalated: bool,
                           expected: list[DeadlineAction]) -> None:
    assert deadline_actions(T0, T0 + elapsed, reminded=reminded, escalated=escalated) == expected


def test_an_explicit_deadline_and_naive_times_are_honoured() -> None:
    naive = T0.replace(tzinfo=None)
    assert deadline_actions(naive, T0 + 2 * H, deadline=T0 + 2 * H) == [T]
    assert deadline_actions(T0, T0 + 47 * H, 4 * H, 8 * H, T0 + 48 * H, True, True) == []


def _pending(url: str, package: str = "finance-month-end-operator",
             flow_run_id: str = "run-fin") -> int:
    with session_scope(url) as s:
        release = Release(package_key=package, wave=1, flow_run_id=flow_run_id, adds=5)
        s.add(release)
        s.flush()
        approval = Approval(release_id=release.id, package_key=package, flow_run_id=flow_run_id,
                            requested_at=T0, deadline=T0 + 24 * H)
        s.add(approval)
        s.flush()
        assert approval.id is not None
        return approval.id


def test_reminder_then_escalation_then_timeout(loaded_store: str,
                                               slack_double: SlackDouble) -> None:
    notifier = SlackNotifier(make_web_client(BOT_TOKEN, base_url=slack_double.base_url),
                             CHANNEL)
    approval_id = _pending(loaded_store)
    channel, ts = announce_handoff(loaded_store, approval_id, notifier) or ("", "")
    resumed: list[tuple[str, dict[str, Any]]] = []

    def tick(at: datetime) -> list[str]:
        slack_double.calls.clear()
        apply_deadlines(loaded_store, notifier, at, resume=lambda r, i: resumed.append((r, i)))
        return [c.params["channel"] for c in slack_double.calls_to("chat.postMessage")]

    assert tick(T0 + 3 * H) == []
    assert tick(T0 + 4 * H) == [channel, "DFINOWNER1"]  # thread reply + owner DM
    assert "Reminder" in slack_double.calls_to("chat.postMessage")[1].params["text"]
    assert tick(T0 + 5 * H) == []  # reminded once only
    assert tick(T0 + 8 * H) == [channel, "DFINDELEG1"]  # broadcast + delegate DM
    assert "Priya" not in json.dumps(slack_double.calls[-1].params)  # mentions, not names
    assert "<@UFINDELEG1>" in json.dumps(slack_double.calls[-1].params["blocks"])
    assert tick(T0 + 9 * H) == [] and resumed == []

    assert tick(T0 + 24 * H) == []
    (update,) = slack_double.calls_to("chat.update")
    assert (update.params["channel"], update.params["ts"]) == (channel, ts)
    message = slack_double.message(channel, ts)
    assert message["text"].startswith("Timed out")
    assert not any(b["type"] == "actions" for b in message["blocks"])
    assert resumed == [("run-fin", {"decision": "reject", "approver": "wavekit", "code": "",
                                    "comment": "no decision by 2026-04-09 09:00 UTC"})]
    with session_scope(loaded_store) as s:
        row = s.get(Approval, approval_id)
        assert row is not None
        assert row.decision == "timeout" and as_utc(row.decided_at) == T0 + 24 * H
        assert as_utc(row.reminder_sent_at) == T0 + 4 * H
        assert as_utc(row.escalated_at) == T0 + 8 * H
        actions = [e.action for e in audit.events(s) if e.action.startswith("approval_")]
    assert actions == ["approval_posted", "approval_reminded", "approval_escalated",
                       "approval_timed_out"]

    assert tick(T0 + 25 * H) == [] and len(resumed) == 1  # decided: left alone


def test_decided_approvals_are_left_alone(loaded_store: str) -> None:
    approval_id = _pending(loaded_store)
    with session_scope(loaded_store) as s:
        row = s.get(Approval, approval_id)
        assert row is not None
        row.decided_at, row.decision, row.approver = T0 + H, "approved", "UFINOWNER1"
        s.add(row)
    assert apply_deadlines(loaded_store, NullNotifier(), T0 + 48 * H) == []


def test_timeouts_are_returned_and_resume_failures_audited(loaded_store: str) -> None:
    _pending(loaded_store, flow_run_id="run-a")
    _pending(loaded_store, package="hr-case-intake-specialist", flow_run_id="run-b")

    def broken(run_id: str, run_input: dict[str, Any]) -> None:
        raise RuntimeError("Prefect API unreachable")

    done = apply_deadlines(loaded_store, NullNotifier(), T0 + 24 * H, resume=broken)
    assert [(d.flow_run_id, d.run_input["decision"]) for d in done] == [("run-a", "reject"),
                                                                       ("run-b", "reject")]
    with session_scope(loaded_store) as s:
        failures = audit.events(s, action="approval_resume_failed")
    assert [f.flow_run_id for f in failures] == ["run-a", "run-b"]


def test_a_failed_reminder_is_retried_on_the_next_tick(loaded_store: str,
                                                       slack_double: SlackDouble) -> None:
    notifier = SlackNotifier(make_web_client("xoxb-revoked", base_url=slack_double.base_url),
                             CHANNEL)
    approval_id = _pending(loaded_store)
    apply_deadlines(loaded_store, notifier, T0 + 4 * H)
    with session_scope(loaded_store) as s:
        row = s.get(Approval, approval_id)
        assert row is not None and row.reminder_sent_at is None
