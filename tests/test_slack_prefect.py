"""A Slack click resumes a really paused Prefect flow run with the typed ApprovalInput."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

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
from wavekit.adapters.slack.notifier import make_web_client
from wavekit.adapters.slack.receiver import create_receiver_app, prefect_resumer
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, Release, RolePackage
from wavekit.domain.clock import utcnow

pytest_plugins = ["tests.support.slack_double"]


@pytest.mark.slow
def test_owner_click_resumes_the_paused_run(prefect_harness: None, loaded_store: str,
                                            slack_double: SlackDouble) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import pause_flow_run
    from prefect.runtime import flow_run

    from wavekit.workflow.approvals import ApprovalInput

    run_ids: list[str] = []

    @flow(name="slack-handoff-probe")
    def handoff() -> dict[str, Any]:
        run_ids.append(str(flow_run.id))
        decision = pause_flow_run(wait_for_input=ApprovalInput, timeout=120, poll_interval=1)
        return decision.model_dump()

    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(handoff()), daemon=True)
    thread.start()
    wait_until(lambda: bool(run_ids), timeout=60, what="flow run")

    def paused() -> bool:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(uuid.UUID(run_ids[0])).state
            return bool(state and state.is_paused())

    wait_until(paused, timeout=60, what="paused flow run")

    with session_scope(loaded_store) as s:
        release = Release(package_key="finance-month-end-operator", wave=1,
                          flow_run_id=run_ids[0], triggered_by="URELMGR01")
        s.add(release)
        s.flush()
        approval = Approval(release_id=release.id, package_key=release.package_key,
                            flow_run_id=run_ids[0], deadline=utcnow() + timedelta(hours=1))
        s.add(approval)
        s.flush()
        s.get(RolePackage, release.package_key).state = "awaiting_handoff"
        approval_id = approval.id

    client = make_web_client(BOT_TOKEN, base_url=slack_double.base_url)
    app = create_receiver_app(loaded_store, SIGNING_SECRET, client, prefect_resumer)
    with serve_asgi(app) as base:
        body, headers = signed_request(
            block_actions("UFINOWNER1", "wavekit_approve", str(approval_id), channel=CHANNEL),
            int(utcnow().timestamp()))
        assert httpx.post(f"{base}/slack/interactivity", content=body,
                          headers=headers).status_code == 200

    thread.join(timeout=60)
    assert result == [{"decision": "approve", "approver": "UFINOWNER1", "code": "",
                       "comment": ""}]
