"""The production path of the UI form: a package run of a served deployment suspends at its
handoff (no process waits); a refused input resumes it, is judged, and it suspends again;
the owner's code finally deploys. One `prefect server start` and one `wavekit serve`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlmodel import select

from tests.support.smtp import Mailbox
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, RolePackage

pytest_plugins = ["tests.support.prefect_server"]
pytestmark = pytest.mark.slow
FIN = "finance-month-end-operator"


def _wait(check: Callable[[], Any], what: str, timeout: float = 240) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_suspended_run_refuses_a_wrong_code_suspends_again_and_the_owner_deploys(
        prefect_server: Any, wavekit_serve: Any, loaded_store: str,
        smtp: tuple[Mailbox, int]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    box, port = smtp
    served = wavekit_serve(loaded_store, WAVEKIT_APPROVALS_UNVERIFIED="false",
                           WAVEKIT_SMTP_HOST="127.0.0.1", WAVEKIT_SMTP_PORT=str(port))
    api = prefect_server.api

    def registered() -> bool:
        assert served.poll() is None, "wavekit serve exited"
        return httpx.get(f"{api}/deployments/name/roll-out-package/roll-out-package",
                         timeout=5).status_code == 200
    _wait(registered, "the served deployments")

    def approval() -> Approval | None:
        with session_scope(loaded_store) as s:
            return s.exec(select(Approval).where(Approval.package_key == FIN,
                                                 Approval.flow_run_id.is_not(None))).first()  # type: ignore[union-attr]

    with temporary_settings(updates={PREFECT_API_URL: api}), \
            get_client(sync_client=True) as client:
        run_deployment("release-wave/release-wave", timeout=0,
                       parameters={"wave": 1, "packages": [FIN], "requested_by": "rm-alex"})

        def suspended(attempt: int) -> Approval | None:
            a = approval()
            if a is None or a.form_inputs != attempt:
                return None
            state = client.read_flow_run(a.flow_run_id).state
            ok = (state is not None and state.is_paused() and state.name == "Suspended"
                  and state.state_details.pause_key == f"approval-{a.id}-{attempt}")
            return a if ok else None

        a = _wait(lambda: suspended(0), "the package run to suspend at its handoff")
        code = box.code_for("fss-lead@example.com")
        resume_flow_run(a.flow_run_id, run_input={"decision": "approve",
                                                  "approver": "UFINOWNER1",
                                                  "code": "WRONG-22222", "comment": ""})
        a = _wait(lambda: suspended(1), "the run to suspend again after the refusal")
        with session_scope(loaded_store) as s:
            assert s.get(RolePackage, FIN).state == "awaiting_handoff"
            (refused,) = audit.events(s, action="approval_refused")
            assert "wrong approval code" in refused.detail["reason"]
        resume_flow_run(a.flow_run_id, run_input={"decision": "approve",
                                                  "approver": "UFINOWNER1", "code": code,
                                                  "comment": "ok"})

        def finished() -> bool:
            state = client.read_flow_run(a.flow_run_id).state
            return state is not None and state.is_final()
        _wait(finished, "the package run to finish")
        assert client.read_flow_run(a.flow_run_id).state.is_completed()
    with session_scope(loaded_store) as s:
        assert s.get(RolePackage, FIN).state == "watching"
        decided = s.get(Approval, a.id)
        assert (decided.decision, decided.approver, decided.proof) == (
            "approved", "UFINOWNER1", "code")
