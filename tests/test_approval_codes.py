"""One-time approval codes and local mode, against the store and a real SMTP server (no
Prefect): who gets a code, what is stored, what a failed send leaves, what reports say."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from tests.support.servers import free_port
from tests.support.smtp import Mailbox
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import ApprovalCode, Release
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.present.reports import render_dashboard, render_wave_report
from wavekit.workflow import rollout
from wavekit.workflow.approval_codes import issue_codes
from wavekit.workflow.runtime import Runtime, build_runtime

FIN = "finance-month-end-operator"


def _handoff(url: str, requested_by: str, **settings: Any) -> tuple[Runtime, int]:
    rt = build_runtime(load_settings(database_url=url, **settings), target=SandboxTarget(url),
                       notifier=None)
    rt.notifier = None  # no Slack: codes go by e-mail
    staged = rollout.stage_package(rt, FIN, wave=1, triggered_by=requested_by)
    assert staged.release_id is not None and not staged.held, staged
    return rt, rollout.request_handoff(rt, staged.release_id).approval_id


def test_each_approver_but_the_requester_is_mailed_a_code_once(
        loaded_store: str, smtp: tuple[Mailbox, int]) -> None:
    box, port = smtp
    rt, approval_id = _handoff(loaded_store, "UFINOWNER1", smtp_host="127.0.0.1",
                               smtp_port=port)
    # The owner requested it; the delegate has no e-mail: nobody is mailed, and that is said.
    assert issue_codes(rt, approval_id) == []
    with session_scope(loaded_store) as s:
        (unreachable,) = audit.events(s, action="approval_code_unreachable")
        assert unreachable.detail["approver"] == "UFINDELEG1"

    rt, approval_id = _handoff(loaded_store, "rm-alex", smtp_host="127.0.0.1", smtp_port=port)
    assert issue_codes(rt, approval_id) == ["UFINOWNER1"]
    code = box.code_for("fss-lead@example.com")
    assert issue_codes(rt, approval_id) == []  # once per approver
    with session_scope(loaded_store) as s:
        (row,) = s.exec(select(ApprovalCode).where(ApprovalCode.approval_id == approval_id))
        assert row.sent_via == "email" and row.expires_at is not None
        assert code not in row.digest and code.replace("-", "") not in row.digest


def test_a_failed_send_keeps_no_code_and_the_next_run_retries(
        loaded_store: str, smtp: tuple[Mailbox, int]) -> None:
    _, port = smtp

    rt, approval_id = _handoff(loaded_store, "rm-alex", smtp_host="127.0.0.1",
                               smtp_port=free_port())  # nothing listens there
    assert issue_codes(rt, approval_id) == []
    with session_scope(loaded_store) as s:
        assert s.exec(select(ApprovalCode)).all() == []
        assert audit.events(s, action="approval_code_failed")
    rt.settings.smtp_port = port
    assert issue_codes(rt, approval_id) == ["UFINOWNER1"]


def test_local_mode_decisions_are_marked_unverified_in_audit_and_report(
        loaded_store: str) -> None:
    rt, approval_id = _handoff(loaded_store, "rm-alex", approvals_unverified=True)
    assert issue_codes(rt, approval_id) == []  # local mode sends no code
    assert rollout.record_decision(rt, approval_id, "approve", "UFINOWNER1") == "approved"
    with session_scope(loaded_store) as s:
        (decided,) = audit.events(s, action="approval_decided")
        assert decided.detail["proof"] == "unverified" and not decided.detail["verified"]
        assert decided.detail["requested_by"] == "rm-alex"
        assert s.exec(select(Release)).one().approved_by == "UFINOWNER1"
    assert "UNVERIFIED" in render_wave_report(loaded_store, 1)
    assert 'data-testid="unverified-approvals">1 approval taken in local mode' in \
        render_dashboard(loaded_store)


def test_without_local_mode_a_decision_needs_a_code(loaded_store: str) -> None:
    rt, approval_id = _handoff(loaded_store, "rm-alex")
    assert rollout.record_decision(rt, approval_id, "approve", "UFINOWNER1") is None
    with session_scope(loaded_store) as s:
        (refused,) = audit.events(s, action="approval_refused")
        assert "code is required" in refused.detail["reason"]
