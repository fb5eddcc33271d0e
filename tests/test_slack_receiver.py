"""The interactivity receiver end to end: signed HTTP requests in, store + resume + Slack out.

The receiver runs under uvicorn on loopback; it talks to the Slack double through the real
slack_sdk WebClient; the store is SQLite with the example catalog.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.slack_double import (
    BOT_TOKEN,
    CHANNEL,
    SIGNING_SECRET,
    SlackDouble,
    block_actions,
    serve_asgi,
    signed_request,
    view_submission,
)
from wavekit.adapters.slack.notifier import SlackNotifier, announce_handoff, make_web_client
from wavekit.adapters.slack.receiver import create_receiver_app
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, Release, RolePackage
from wavekit.domain.clock import ManualClock, as_utc

pytest_plugins = ["tests.support.slack_double"]

NOW = datetime(2026, 4, 8, 9, 0, tzinfo=UTC)
PACKAGE = "finance-month-end-operator"
OWNER, DELEGATE, STRANGER, MANAGER = "UFINOWNER1", "UFINDELEG1", "USTRANGER1", "URELMGR01"


@dataclass
class World:
    url: str
    double: SlackDouble
    clock: ManualClock
    base: str
    approval_id: int
    flow_run_id: str
    channel: str
    ts: str
    resumed: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def send(self, payload: dict[str, Any]) -> httpx.Response:
        body, headers = signed_request(payload, int(self.clock.now().timestamp()))
        return httpx.post(f"{self.base}/slack/interactivity", content=body, headers=headers)

    def click(self, user: str, action: str, **kw: Any) -> httpx.Response:
        return self.send(block_actions(user, action, str(self.approval_id), channel=self.channel,
                                       message_ts=self.ts, **kw))

    def approval(self) -> Approval:
        with session_scope(self.url) as s:
            row = s.get(Approval, self.approval_id)
            assert row is not None
            return row

    def events(self, action: str) -> list[Any]:
        with session_scope(self.url) as s:
            return audit.events(s, action=action)

    def ephemerals(self) -> list[dict[str, Any]]:
        return [c.params for c in self.double.calls_to("chat.postEphemeral")]


def _make_world(loaded_store: str, double: SlackDouble, triggered_by: str = MANAGER,
                resume_fails: bool = False) -> Iterator[World]:
    clock = ManualClock(NOW)
    flow_run_id = str(uuid.uuid4())
    with session_scope(loaded_store) as s:
        release = Release(package_key=PACKAGE, wave=1, flow_run_id=flow_run_id,
                          triggered_by=triggered_by, adds=250, removes=12, started_at=NOW)
        s.add(release)
        s.flush()
        approval = Approval(release_id=release.id, package_key=PACKAGE, flow_run_id=flow_run_id,
                            requested_at=NOW, deadline=NOW + timedelta(hours=24))
        s.add(approval)
        s.flush()
        approval_id = approval.id
        # The package waits on this handoff: a decision is for a package awaiting it.
        s.get(RolePackage, PACKAGE).state = "awaiting_handoff"
    client = make_web_client(BOT_TOKEN, base_url=double.base_url)
    posted = announce_handoff(loaded_store, approval_id, SlackNotifier(client, CHANNEL),
                              gates=[("owner named", True, "")], flow_run_url="http://ui/run")
    assert posted is not None
    double.calls.clear()  # the tests look at what the receiver does
    resumed: list[tuple[str, dict[str, Any]]] = []

    def resume(run_id: str, run_input: dict[str, Any]) -> None:
        if resume_fails:
            raise RuntimeError("Cannot resume a run that isn't paused!")
        resumed.append((run_id, run_input))

    app = create_receiver_app(loaded_store, SIGNING_SECRET, client, resume, clock=clock,
                              ui_url="http://127.0.0.1:4200")
    with serve_asgi(app) as base:
        yield World(loaded_store, double, clock, base, approval_id, flow_run_id, *posted,
                    resumed=resumed)


@pytest.fixture
def world(loaded_store: str, slack_double: SlackDouble) -> Iterator[World]:
    yield from _make_world(loaded_store, slack_double)


def _blocks_text(message: dict[str, Any]) -> str:
    return message["text"] + json.dumps(message["blocks"], ensure_ascii=False)


def test_healthz(world: World) -> None:
    assert httpx.get(f"{world.base}/healthz").json() == {"ok": True, "refused": {
        "unauthenticated": 0, "rate_limited": 0, "too_large": 0, "malformed": 0, "errors": 0}}


def test_owner_approves(world: World) -> None:
    assert world.click(OWNER, "wavekit_approve").status_code == 200

    row = world.approval()
    assert (row.decision, row.approver, as_utc(row.decided_at)) == ("approved", OWNER, NOW)
    assert world.resumed == [(world.flow_run_id, {"decision": "approve", "approver": OWNER,
                                                  "code": "", "comment": ""})]
    (decided,) = world.events("approval_decided")
    assert decided.actor == OWNER and decided.detail["decision"] == "approved"
    assert decided.detail["approver_name"] == "Finance Shared Services"

    (update,) = world.double.calls_to("chat.update")
    assert (update.params["channel"], update.params["ts"]) == (world.channel, world.ts)
    message = world.double.message(world.channel, world.ts)
    assert not [b for b in message["blocks"] if b["type"] == "actions"]  # buttons gone
    text = _blocks_text(message)
    assert "Approved" in text and f"<@{OWNER}>" in text and "2026-04-08 09:00 UTC" in text
    assert f"http://127.0.0.1:4200/runs/flow-run/{world.flow_run_id}" in text
    assert world.ephemerals() == []


def test_a_delegate_can_approve(world: World) -> None:
    world.click(DELEGATE, "wavekit_approve")
    assert world.approval().approver == DELEGATE
    assert [r[1]["approver"] for r in world.resumed] == [DELEGATE]


def test_a_stranger_is_refused_in_slack_and_in_the_audit_log(world: World) -> None:
    assert world.click(STRANGER, "wavekit_approve").status_code == 200

    assert world.approval().decided_at is None
    assert world.resumed == []
    assert world.double.calls_to("chat.update") == []
    (answer,) = world.ephemerals()
    assert answer["user"] == STRANGER and answer["channel"] == world.channel
    assert "only Finance Shared Services or a declared delegate" in answer["text"]
    (refused,) = world.events("approval_refused")
    assert refused.actor == STRANGER and refused.package_key == PACKAGE
    assert "declared delegate" in refused.detail["reason"]


def test_the_triggerer_cannot_approve_their_own_wave(loaded_store: str,
                                                     slack_double: SlackDouble) -> None:
    for world in _make_world(loaded_store, slack_double, triggered_by=OWNER):
        world.click(OWNER, "wavekit_approve")
        assert world.approval().decided_at is None and world.resumed == []
        (answer,) = world.ephemerals()
        assert "separation of duties" in answer["text"]
        (refused,) = world.events("approval_refused")
        assert "separation of duties" in refused.detail["reason"]
        # The delegate may approve it instead.
        world.click(DELEGATE, "wavekit_approve")
        assert world.approval().approver == DELEGATE


def test_a_second_click_is_harmless(world: World) -> None:
    world.click(OWNER, "wavekit_approve")
    world.click(DELEGATE, "wavekit_approve")
    world.click(OWNER, "wavekit_reject")

    row = world.approval()
    assert (row.decision, row.approver) == ("approved", OWNER)
    assert len(world.resumed) == 1
    assert len(world.double.calls_to("chat.update")) == 1
    assert world.double.calls_to("views.open") == []
    answers = [e["text"] for e in world.ephemerals()]
    assert answers == ["Already approved by Finance Shared Services."] * 2
    assert len(world.events("approval_decided")) == 1


def test_reject_opens_a_modal_and_its_reason_rejects(world: World) -> None:
    world.click(DELEGATE, "wavekit_reject")
    assert world.approval().decided_at is None and world.resumed == []
    (opened,) = world.double.calls_to("views.open")
    view = opened.params["view"]
    assert opened.params["trigger_id"]
    assert view["callback_id"] == "wavekit_reject_reason"

    world.clock.advance(timedelta(minutes=2))
    response = world.send(view_submission(DELEGATE, view["private_metadata"],
                                          "Quarter close is this week"))
    assert response.status_code == 200 and response.content == b""  # closes the modal

    row = world.approval()
    assert (row.decision, row.approver, row.comment) == ("rejected", DELEGATE,
                                                         "Quarter close is this week")
    assert world.resumed == [(world.flow_run_id, {
        "decision": "reject", "approver": DELEGATE, "code": "",
        "comment": "Quarter close is this week"})]
    text = _blocks_text(world.double.message(world.channel, world.ts))
    assert "Rejected" in text and "Quarter close is this week" in text
    assert "2026-04-08 09:02 UTC" in text


def test_a_stranger_cannot_even_open_the_reject_modal(world: World) -> None:
    world.click(STRANGER, "wavekit_reject")
    assert world.double.calls_to("views.open") == []
    assert "declared delegate" in world.ephemerals()[0]["text"]
    assert len(world.events("approval_refused")) == 1


def test_a_refused_modal_submission_shows_the_error_in_the_modal(world: World) -> None:
    meta = json.dumps({"approval_id": world.approval_id, "channel": world.channel})
    response = world.send(view_submission(STRANGER, meta, "I just don't like it"))
    assert response.json() == {"response_action": "errors", "errors": {
        "reason": "only Finance Shared Services or a declared delegate can decide this release"}}
    assert world.approval().decided_at is None and world.resumed == []
    assert len(world.events("approval_refused")) == 1


def test_a_click_after_the_deadline_is_refused(world: World) -> None:
    world.clock.advance(timedelta(hours=25))
    world.click(OWNER, "wavekit_approve")
    assert world.approval().decided_at is None and world.resumed == []
    assert "deadline passed" in world.ephemerals()[0]["text"]
    assert "deadline passed" in world.events("approval_refused")[0].detail["reason"]


def test_unsigned_or_replayed_requests_get_401_and_change_nothing(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    payload = block_actions(OWNER, "wavekit_approve", str(world.approval_id),
                            channel=world.channel, message_ts=world.ts)
    body, headers = signed_request(payload, int(world.clock.now().timestamp()),
                                   secret="forged")
    forged = httpx.post(f"{world.base}/slack/interactivity", content=body, headers=headers)
    assert forged.status_code == 401

    body, headers = signed_request(payload, int(world.clock.now().timestamp()))
    url = f"{world.base}/slack/interactivity"
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    assert httpx.post(url, content=body, headers=headers).status_code == 401
    assert len(world.resumed) == 1
    # Anyone can send these: counted and logged, not audited.
    assert world.events("slack_request_refused") == []
    assert httpx.get(f"{world.base}/healthz").json()["refused"]["unauthenticated"] == 2
    logged = [r.getMessage() for r in caplog.records]
    assert [m.rsplit(": ", 1)[1] for m in logged if "refused a Slack request" in m] == [
        "signature does not match", "replayed request (signature already seen)"]


def test_a_failed_resume_keeps_the_decision_and_says_so(loaded_store: str,
                                                        slack_double: SlackDouble) -> None:
    for world in _make_world(loaded_store, slack_double, resume_fails=True):
        world.click(OWNER, "wavekit_approve")
        assert world.approval().decision == "approved"
        (failed,) = world.events("approval_resume_failed")
        assert "isn't paused" in failed.detail["error"]
        assert "could not be resumed" in world.ephemerals()[0]["text"]
        assert len(world.double.calls_to("chat.update")) == 1


def test_no_secret_reaches_slack_the_audit_log_or_the_logs(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    world.click(STRANGER, "wavekit_approve")
    world.click(OWNER, "wavekit_reject")
    meta = json.dumps({"approval_id": world.approval_id, "channel": world.channel})
    world.send(view_submission(OWNER, meta, "wait for the audit"))
    world.click(DELEGATE, "wavekit_approve")
    body, headers = signed_request({"type": "block_actions"}, 1, secret="x")
    httpx.post(f"{world.base}/slack/interactivity", content=body, headers=headers)

    with session_scope(world.url) as s:
        audit_text = repr([(e.actor, e.action, e.detail) for e in audit.events(s)])
    slack_text = "".join(c.text() for c in world.double.calls)
    assert world.double.calls and "approval_refused" in audit_text
    assert "chat.postEphemeral" in caplog.text  # slack_sdk's debug logs were captured too
    for secret in (BOT_TOKEN, SIGNING_SECRET):
        assert secret not in slack_text
        assert secret not in audit_text
        assert secret not in caplog.text


def test_the_requester_who_is_a_delegate_cannot_approve(loaded_store: str,
                                                        slack_double: SlackDouble) -> None:
    for world in _make_world(loaded_store, slack_double, triggered_by=DELEGATE):
        world.click(DELEGATE, "wavekit_approve")
        assert world.approval().decided_at is None and world.resumed == []
        (refused,) = world.events("approval_refused")
        assert "separation of duties" in refused.detail["reason"]
        assert refused.detail["requested_by"] == DELEGATE


def test_a_package_not_awaiting_its_handoff_takes_no_decision(world: World) -> None:
    with session_scope(world.url) as s:
        s.get(RolePackage, PACKAGE).state = "held"
    world.click(OWNER, "wavekit_approve")
    assert world.approval().decided_at is None and world.resumed == []
    (refused,) = world.events("approval_refused")
    assert "not awaiting this handoff" in refused.detail["reason"]


def test_four_eyes_need_two_distinct_approvers_in_slack(world: World) -> None:
    with session_scope(world.url) as s:
        s.get(Approval, world.approval_id).required = 2
    world.click(OWNER, "wavekit_approve")
    assert world.approval().decided_at is None and world.resumed == []  # waits for another
    assert "2 different approvers" in world.ephemerals()[-1]["text"]
    world.clock.set(NOW + timedelta(seconds=5))  # a new click, not a replay of the first
    world.click(OWNER, "wavekit_approve")  # the same person twice does not count
    assert world.approval().decided_at is None and world.resumed == []
    assert "already approved" in world.events("approval_refused")[-1].detail["reason"]
    world.click(DELEGATE, "wavekit_approve")
    row = world.approval()
    assert (row.decision, row.approver, row.proof) == ("approved", f"{DELEGATE},{OWNER}", "slack")
    assert len(world.resumed) == 1
    (signed,) = world.events("approval_signed")
    assert (signed.detail["approver"], signed.detail["approvals"]) == (OWNER, 1)
    (decided,) = world.events("approval_decided")
    assert decided.detail["approvers"] == [DELEGATE, OWNER]


def test_a_click_without_a_user_id_is_refused_and_decides_nothing(world: World) -> None:
    assert world.click("", "wavekit_approve").status_code == 400
    assert world.approval().decided_at is None and world.resumed == []
