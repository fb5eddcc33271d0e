"""The Socket Mode handler: same processing as the HTTP receiver, answered as an envelope ack."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from tests.support.slack_double import (
    BOT_TOKEN,
    CHANNEL,
    SlackDouble,
    block_actions,
    view_submission,
)
from wavekit.adapters.slack.notifier import make_web_client
from wavekit.adapters.slack.receiver import Interactions
from wavekit.adapters.slack.socket_mode import Handler, make_socket_handler
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, Release, RolePackage
from wavekit.domain.clock import ManualClock

pytest_plugins = ["tests.support.slack_double"]

NOW = datetime(2026, 4, 8, 9, 0, tzinfo=UTC)


class Acks:
    """Records what the handler sends back over the socket (stands in for the WebSocket)."""

    def __init__(self) -> None:
        self.sent: list[SocketModeResponse] = []

    def send_socket_mode_response(self, response: SocketModeResponse) -> None:
        self.sent.append(response)


Setup = tuple[Handler, int, list[tuple[str, dict[str, Any]]]]


@pytest.fixture
def setup(loaded_store: str, slack_double: SlackDouble) -> Setup:
    with session_scope(loaded_store) as s:
        release = Release(package_key="finance-month-end-operator", wave=1,
                          flow_run_id="run-1", triggered_by="URELMGR01")
        s.add(release)
        s.flush()
        approval = Approval(release_id=release.id, package_key=release.package_key,
                            flow_run_id="run-1", deadline=NOW + timedelta(hours=1))
        s.add(approval)
        s.flush()
        s.get(RolePackage, release.package_key).state = "awaiting_handoff"
        assert approval.id is not None
        approval_id = approval.id
    resumed: list[tuple[str, dict[str, Any]]] = []
    interactions = Interactions(loaded_store,
                                make_web_client(BOT_TOKEN, base_url=slack_double.base_url),
                                lambda r, i: resumed.append((r, i)), ManualClock(NOW))
    return make_socket_handler(interactions), approval_id, resumed


def test_a_click_over_socket_mode_is_decided_and_acked(setup: Setup, loaded_store: str) -> None:
    handler, approval_id, resumed = setup
    acks = Acks()
    req = SocketModeRequest(type="interactive", envelope_id="env-1",
                            payload=block_actions("UFINDELEG1", "wavekit_approve",
                                                  str(approval_id), channel=CHANNEL))
    handler(acks, req)
    assert [(a.envelope_id, a.payload) for a in acks.sent] == [("env-1", None)]
    assert resumed == [("run-1", {"decision": "approve", "approver": "UFINDELEG1",
                                  "code": "", "comment": ""})]
    with session_scope(loaded_store) as s:
        row = s.get(Approval, approval_id)
        assert row is not None and row.decision == "approved"


def test_a_refused_modal_submission_is_acked_with_the_field_error(setup: Setup) -> None:
    handler, approval_id, resumed = setup
    acks = Acks()
    meta = json.dumps({"approval_id": approval_id, "channel": CHANNEL})
    handler(acks, SocketModeRequest(type="interactive", envelope_id="env-2",
                                    payload=view_submission("USTRANGER1", meta, "no")))
    (ack,) = acks.sent
    assert ack.envelope_id == "env-2" and ack.payload is not None
    assert ack.payload["response_action"] == "errors"
    assert "declared delegate" in ack.payload["errors"]["reason"]
    assert resumed == []


def test_other_envelopes_are_acked_and_ignored(setup: Setup) -> None:
    handler, _, resumed = setup
    acks = Acks()
    handler(acks, SocketModeRequest(type="events_api", envelope_id="env-3",
                                    payload={"event": {"type": "app_mention"}}))
    assert [a.envelope_id for a in acks.sent] == ["env-3"] and resumed == []
