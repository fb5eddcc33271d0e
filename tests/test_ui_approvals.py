"""The Prefect UI path: decisions typed in the form, through the real `resume_flow_run`.

No Slack here: each approver's one-time code is e-mailed over SMTP to a real aiosmtpd server
on loopback, read from the mailbox, and typed in the (resumed) form. Every refused input
leaves the run paused, the package Awaiting handoff and the target untouched; the refusal is
audited with its reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlmodel import select

from flows.wave import release_wave
from tests.support.smtp import Mailbox
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, ApprovalCode, Release, RolePackage
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.grants import GrantSet
from wavekit.examples import seed_target
from wavekit.workflow.approvals import ApprovalInput
from wavekit.workflow.runtime import build_runtime, runtime_override

pytestmark = pytest.mark.usefixtures("prefect_harness")
FIN = "finance-month-end-operator"
OWNER, REQUESTER, DELEGATE = "UFINOWNER1", "UFINDELEG1", "UFINDELEG2"
OWNER_MAIL, DELEGATE_MAIL = "fss-lead@example.com", "omar@example.com"


def wait_until(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class UiWorld:
    url: str
    target: SandboxTarget
    mailbox: Mailbox
    seeded: GrantSet
    result: list[dict[str, str]] = field(default_factory=list)
    thread: threading.Thread | None = None

    def approval(self) -> Approval:
        with session_scope(self.url) as s:
            return s.exec(select(Approval).where(Approval.package_key == FIN)
                          .order_by(Approval.id.desc())).first()  # type: ignore[union-attr]

    def state(self) -> str:
        with session_scope(self.url) as s:
            return s.get(RolePackage, FIN).state

    def grants(self) -> GrantSet:
        with session_scope(self.url) as s:
            from wavekit.adapters.store.models import Entitlement
            ents = list(s.exec(select(Entitlement.key)))
        return self.target.read_grants(ents)

    def paused(self, attempt: int) -> Approval:
        """The run, paused for its `attempt`-th form input (every earlier one judged)."""
        from prefect.client.orchestration import get_client

        def ready() -> Approval | None:
            a = self.approval()
            if a is None or a.flow_run_id is None or a.form_inputs != attempt:
                return None
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(a.flow_run_id)
            key = (run.state.state_details.pause_key if run.state else None)
            return a if run.state and run.state.is_paused() and key == \
                f"approval-{a.id}-{attempt}" else None
        return wait_until(ready, f"the run to pause for input #{attempt}")

    def submit(self, attempt: int, **form: str) -> None:
        """Type `form` into the paused run's form (the UI calls the same resume endpoint)."""
        from prefect.flow_runs import resume_flow_run

        approval = self.paused(attempt)
        resume_flow_run(approval.flow_run_id, run_input={"comment": "", **form})

    def refused(self, attempt: int, reason: str) -> None:
        """Input #attempt was refused for `reason`: nothing changed, the run waits again."""
        approval = self.paused(attempt + 1)
        assert approval.decided_at is None
        assert self.state() == "awaiting_handoff"
        assert self.grants() == self.seeded
        with session_scope(self.url) as s:
            last = audit.events(s, action="approval_refused")[-1]
        assert reason in last.detail["reason"], last.detail
        assert last.detail["channel"] == "prefect-ui"
        assert last.detail["requested_by"] == REQUESTER
        # ... and answered on its channel: the next form and the run's log say why.
        assert f"Your last input was refused: {last.detail['reason']}" in \
            self.form_description(approval), self.form_description(approval)
        wait_until(lambda: any(last.detail["reason"] in m for m in self.warnings(approval)),
                   f"a warning in the run's log saying {reason!r}")

    def form_description(self, approval: Approval) -> str:
        """The text the paused run's form shows (what the Prefect UI renders above it)."""
        from prefect.client.orchestration import get_client
        from prefect.input.run_input import read_flow_run_input

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(approval.flow_run_id)
        keyset = run.state.state_details.run_input_keyset
        return str(read_flow_run_input(keyset["description"], approval.flow_run_id))

    def warnings(self, approval: Approval) -> list[str]:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            LogFilter,
            LogFilterFlowRunId,
            LogFilterLevel,
        )

        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[approval.flow_run_id]),
                level=LogFilterLevel(ge_=30)))
        return [log.message for log in logs]

    def finish(self) -> dict[str, str]:
        assert self.thread is not None
        self.thread.join(timeout=120)
        assert not self.thread.is_alive()
        return self.result[0]


def _world(loaded_store: str, smtp: tuple[Mailbox, int], monkeypatch: Any,
           risk: str = "low") -> UiWorld:
    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    box, port = smtp
    with session_scope(loaded_store) as s:
        pkg = s.get(RolePackage, FIN)
        # The requester is one of Finance's delegates; another delegate has an e-mail.
        pkg.delegates = [{"name": "Priya Patel", "slack_id": REQUESTER, "email": ""},
                         {"name": "Omar Haddad", "slack_id": DELEGATE, "email": DELEGATE_MAIL}]
        pkg.risk = risk
        if risk == "high":
            pkg.guards = []  # the risk gate asks nothing more of this test package
    settings = load_settings(database_url=loaded_store, smtp_host="127.0.0.1", smtp_port=port)
    target = SandboxTarget(loaded_store)
    seed_target(target)
    if risk == "high":  # the rollback_drill gate wants a recorded drill (catalog text is none)
        from wavekit.workflow.drills import record_manual_drill

        record_manual_drill(build_runtime(settings, target=target), FIN,
                            signed_by="Finance Shared Services", note="close revert rehearsed")
    world = UiWorld(loaded_store, target, box, frozenset())
    world.seeded = world.grants()

    def run() -> None:
        with runtime_override(lambda: build_runtime(settings, target=target)):
            world.result.append(release_wave(wave=1, packages=[FIN], requested_by=REQUESTER))

    world.thread = threading.Thread(target=run, daemon=True)
    world.thread.start()
    world.paused(0)
    return world


def test_ui_refuses_every_unproven_decision_and_the_owners_code_deploys(
        loaded_store: str, smtp: tuple[Mailbox, int], monkeypatch: Any) -> None:
    w = _world(loaded_store, smtp, monkeypatch)
    assert "refused" not in w.form_description(w.paused(0))  # nothing to answer yet
    owner_code, delegate_code = w.mailbox.code_for(OWNER_MAIL), w.mailbox.code_for(DELEGATE_MAIL)
    with session_scope(w.url) as s:  # only hashes are stored, and the requester got none
        rows = s.exec(select(ApprovalCode)).all()
        assert {r.approver for r in rows} == {OWNER, DELEGATE}
        assert all(owner_code not in (r.digest, r.salt) for r in rows)

    steps: list[tuple[dict[str, str], str]] = [
        ({"decision": "approve", "approver": "", "code": owner_code}, "approver's id is required"),
        ({"decision": "approve", "approver": OWNER, "code": "AAAAA-22222"}, "wrong approval code"),
        ({"decision": "approve", "approver": OWNER, "code": delegate_code}, "someone else"),
        ({"decision": "approve", "approver": REQUESTER, "code": owner_code},
         "separation of duties"),
        ({"decision": "approve", "approver": "USTRANGER1", "code": owner_code},
         "declared delegate"),
        ({"decision": "reject", "approver": OWNER, "code": owner_code}, "needs a reason"),
    ]
    attempt = 0
    for form, reason in steps:
        w.submit(attempt, **form)
        w.refused(attempt, reason)
        attempt += 1

    # An expired code (the deadline moved up while the code was out) is refused.
    with session_scope(w.url) as s:
        code = s.exec(select(ApprovalCode).where(ApprovalCode.approver == DELEGATE)).one()
        code.expires_at = code.sent_at
    w.submit(attempt, decision="approve", approver=DELEGATE, code=delegate_code)
    w.refused(attempt, "expired at")
    attempt += 1

    # A package that is not awaiting this handoff takes no decision.
    with session_scope(w.url) as s:
        s.get(RolePackage, FIN).state = "held"
    w.submit(attempt, decision="approve", approver=OWNER, code=owner_code)
    approval = w.paused(attempt + 1)
    assert approval.decided_at is None and w.grants() == w.seeded
    with session_scope(w.url) as s:
        assert "not awaiting" in audit.events(s, action="approval_refused")[-1].detail["reason"]
        s.get(RolePackage, FIN).state = "awaiting_handoff"
    attempt += 1

    # The owner's own code, typed as people type it, deploys.
    w.submit(attempt, decision="approve", approver=OWNER, code=owner_code.lower())
    assert w.finish() == {FIN: "watching"}
    with session_scope(w.url) as s:
        a = s.get(Approval, approval.id)
        assert (a.decision, a.approver, a.proof) == ("approved", OWNER, "code")
        release = s.get(Release, a.release_id)
        assert release.approved_by == OWNER and release.approved_at is not None
        assert release.triggered_by == REQUESTER
        (decided,) = audit.events(s, action="approval_decided")
        assert decided.detail["decision"] == "approved" and decided.detail["verified"]
        used = s.exec(select(ApprovalCode).where(ApprovalCode.approver == OWNER)).one()
        assert used.used_at is not None
    assert w.grants() != w.seeded


def test_high_risk_needs_two_distinct_approvers_and_a_code_works_once(
        loaded_store: str, smtp: tuple[Mailbox, int], monkeypatch: Any) -> None:
    w = _world(loaded_store, smtp, monkeypatch, risk="high")
    assert w.approval().required == 2
    owner_code, delegate_code = w.mailbox.code_for(OWNER_MAIL), w.mailbox.code_for(DELEGATE_MAIL)
    w.submit(0, decision="approve", approver=OWNER, code=owner_code)
    a = w.paused(1)  # one approval in: still waiting, nothing deployed
    assert a.decided_at is None and w.state() == "awaiting_handoff" and w.grants() == w.seeded
    w.submit(1, decision="approve", approver=OWNER, code=owner_code)
    w.refused(1, "already used")  # the same code, the same person: neither counts twice
    w.submit(2, decision="approve", approver=DELEGATE, code=delegate_code)
    assert w.finish() == {FIN: "watching"}
    with session_scope(w.url) as s:
        a = s.get(Approval, a.id)
        assert (a.decision, a.approver) == ("approved", f"{DELEGATE},{OWNER}")
        assert s.get(Release, a.release_id).approved_by == f"{DELEGATE},{OWNER}"


def test_five_wrong_codes_lock_the_approval_and_tell_the_owner(
        loaded_store: str, smtp: tuple[Mailbox, int], monkeypatch: Any) -> None:
    w = _world(loaded_store, smtp, monkeypatch)
    for attempt in range(5):
        w.submit(attempt, decision="approve", approver=OWNER, code=f"WRONG-{attempt}2345")
        if attempt < 4:
            w.refused(attempt, "wrong approval code")
    assert w.finish() == {FIN: "held"}
    a = w.approval()
    assert a.locked_at is not None and a.wrong_codes == 5 and a.decision == "rejected"
    with session_scope(w.url) as s:
        assert s.get(Release, a.release_id).closed
        assert "locked after 5 wrong approval codes" in s.get(RolePackage, FIN).state_reason
    assert any("locked" in m["Subject"] for m in w.mailbox.to(OWNER_MAIL))
    assert w.grants() == w.seeded


def test_the_approval_form_decides_nothing_by_default_and_has_no_channel_field() -> None:
    """The schema the Prefect UI renders: no default decision, approver and code required,
    no internal field (such as the channel) a person could edit."""
    schema = ApprovalInput.model_json_schema()
    props = schema["properties"]
    assert set(props) == {"decision", "approver", "code", "comment"}
    assert set(schema["required"]) == {"decision", "approver", "code"}
    assert "default" not in props["decision"] and props["decision"]["enum"] == ["approve",
                                                                                "reject"]
    assert props["comment"].get("default") == ""  # the rule refuses a reject without one
