"""End to end: a wave pauses at handoff, the owner's signed Slack click resumes it, it deploys."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from sqlmodel import select

from flows.wave import release_wave
from tests.support.servers import wait_until
from tests.support.slack_double import (
    BOT_TOKEN,
    CHANNEL,
    SIGNING_SECRET,
    SlackDouble,
    block_actions,
    serve_asgi,
    signed_request,
)
from wavekit.adapters.settings import load_settings
from wavekit.adapters.slack.notifier import SlackNotifier, make_web_client
from wavekit.adapters.slack.receiver import create_receiver_app, prefect_resumer
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, RolePackage
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.clock import utcnow
from wavekit.examples import seed_target
from wavekit.workflow.runtime import build_runtime, runtime_override

FIN = "finance-month-end-operator"


@pytest.mark.slow
def test_owner_approves_in_slack_and_the_wave_deploys(prefect_harness: None, loaded_store: str,
                                                      slack_double: SlackDouble,
                                                      monkeypatch) -> None:
    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    target = SandboxTarget(loaded_store)
    seed_target(target)
    client = make_web_client(BOT_TOKEN, base_url=slack_double.base_url)
    settings = load_settings(database_url=loaded_store)
    result: list[Any] = []

    def run() -> None:
        with runtime_override(lambda: build_runtime(
                settings, target=target, notifier=SlackNotifier(client, CHANNEL))):
            # The requester is Finance's delegate: an eligible approver, but not of this wave.
            result.append(release_wave(wave=1, packages=[FIN],
                                       requested_by="UFINDELEG1"))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def posted() -> Approval | None:
        with session_scope(loaded_store) as s:
            return s.exec(select(Approval).where(Approval.slack_ts.is_not(None))).first()  # type: ignore[union-attr]

    wait_until(lambda: posted() is not None, timeout=90, what="handoff message")
    approval = posted()
    [post] = slack_double.calls_to("chat.postMessage")[:1]
    text = json.dumps(post.params)
    assert "Finance Month-End Operator" in text and "wavekit_approve" in text
    with session_scope(loaded_store) as s:
        assert s.get(RolePackage, FIN).state == "awaiting_handoff"

    app = create_receiver_app(loaded_store, SIGNING_SECRET, client, prefect_resumer)
    with serve_asgi(app) as base:
        # The delegate who requested the wave cannot approve it (separation of duties).
        ts = approval.slack_ts
        body, headers = signed_request(block_actions("UFINDELEG1", "wavekit_approve",
                                                     str(approval.id), message_ts=ts),
                                       int(utcnow().timestamp()))
        httpx.post(f"{base}/slack/interactivity", content=body, headers=headers)
        body, headers = signed_request(block_actions("UFINOWNER1", "wavekit_approve",
                                                     str(approval.id), message_ts=ts),
                                       int(utcnow().timestamp()))
        assert httpx.post(f"{base}/slack/interactivity", content=body,
                          headers=headers).status_code == 200
        thread.join(timeout=120)

    assert result == [{FIN: "watching"}]
    with session_scope(loaded_store) as s:
        a = s.get(Approval, approval.id)
        refused = audit.events(s, action="approval_refused")
    assert (a.decision, a.approver) == ("approved", "UFINOWNER1")
    # Slack configured: the owner's one-time code for the UI form came by DM; the requester
    # (a delegate) got none.
    dms = [c.params for c in slack_double.calls_to("chat.postMessage")
           if "one-time code" in c.params.get("text", "")]
    assert [d["channel"] for d in dms] == ["DFINOWNER1"]
    (refusal,) = refused
    assert refusal.detail["user"] == "UFINDELEG1"
    assert "separation of duties" in refusal.detail["reason"]
    assert refusal.detail["requested_by"] == "UFINDELEG1"
    update = slack_double.calls_to("chat.update")[-1]
    decided = json.dumps(update.params)
    assert "UFINOWNER1" in decided and "wavekit_approve" not in decided  # no buttons left
