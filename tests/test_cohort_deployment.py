"""Promote and abort a stepped package from the cohort-action deployment, served by `wavekit
serve` to a real `prefect server start` (the UI's Run → Custom run posts the same request)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from tests.support.servers import api_request, wait_until
from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import reset_store, session_scope
from wavekit.adapters.store.models import CohortMember, Entitlement, RolePackage
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.grants import GrantSet
from wavekit.examples import EXAMPLE_CATALOG, seed_target
from wavekit.workflow import rollout
from wavekit.workflow.runtime import build_runtime

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.support.prefect_server"]
FIN = "finance-month-end-operator"
STEPS = {"steps": [{"members": 10.0}, {"soak_hours": 48.0}, {"members": 50.0},
                   {"soak_hours": 24.0}, {"members": 100.0}], "cohort_by": None}


def _deployed_first_step(url: str) -> GrantSet:
    """The store with FIN's first cohort on the sandbox (the workflow steps, no Prefect);
    returns the sandbox's grants before the release."""
    reset_store(url)
    with session_scope(url) as s:
        write_catalog(s, load_catalog(EXAMPLE_CATALOG), source=str(EXAMPLE_CATALOG))
        s.get(RolePackage, FIN).rollout = STEPS
    target = SandboxTarget(url)
    seed_target(target)
    with session_scope(url) as s:
        before = target.read_grants(list(s.exec(select(Entitlement.key))))
    with build_runtime(load_settings(database_url=url, approvals_unverified=True),
                       target=target) as rt:
        rid = rollout.stage_package(rt, FIN, wave=1).release_id
        assert rid is not None
        request = rollout.request_handoff(rt, rid)
        assert rollout.record_decision(rt, request.approval_id, "approve", "UFINOWNER1",
                                       proof="unverified") == "approved"
        assert all(g.passed for g in rollout.enforce_gates(rt, rid))
        rollout.deploy_package(rt, rid)
    assert target.read_grants({g.entitlement for g in before}) != before
    return before


def _run(api: str, deployment_id: str, parameters: dict) -> dict:
    """Create a run of the deployment with typed parameters, wait for its final state."""
    r = api_request("POST", f"{api}/deployments/{deployment_id}/create_flow_run",
                    json={"parameters": parameters})
    r.raise_for_status()
    run_id = r.json()["id"]
    final: dict = {}

    def done() -> bool:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=5).json()
        final.update(run)
        return bool(run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED",
                                                               "CRASHED", "CANCELLED"))
    wait_until(done, timeout=300, what=f"cohort-action run {parameters}")
    return final


def test_promote_and_abort_from_the_served_deployment(prefect_server, wavekit_serve,
                                                      tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    before = _deployed_first_step(url)
    with session_scope(url) as s:
        ents = list(s.exec(select(Entitlement.key)))
    served = wavekit_serve(url, WAVEKIT_RELEASE_MANAGERS="rm-alex,rm-sam")
    api = prefect_server.api
    deployment: dict = {}

    def registered() -> bool:
        if served.poll() is not None:
            raise RuntimeError(f"wavekit serve exited with {served.returncode}")
        r = httpx.get(f"{api}/deployments/name/cohort-action/cohort-action", timeout=5)
        if r.status_code == 200:
            deployment.update(r.json())
        return r.status_code == 200
    wait_until(registered, timeout=240, what="cohort-action deployment")
    schema = deployment["parameter_openapi_schema"]
    assert "actor" in schema["required"]

    t0 = time.monotonic()
    promoted = _run(api, deployment["id"], {"package_key": FIN, "action": "promote",
                                            "actor": "rm-alex", "reason": "canary is fine"})
    assert promoted["state"]["type"] == "COMPLETED", promoted["state"]
    assert promoted["name"] == f"promote {FIN} (rm-alex)"
    with session_scope(url) as s:
        members = s.exec(select(CohortMember.identity)).all()
    assert len(members) == 21
    aborted = _run(api, deployment["id"], {"package_key": FIN, "action": "abort",
                                           "actor": "rm-sam"})
    assert aborted["state"]["type"] == "COMPLETED", aborted["state"]
    with session_scope(url) as s:
        assert s.get(RolePackage, FIN).state == "rolled_back"
        acts = [(e.action, e.actor) for e in audit.events(s, package_key=FIN)
                if e.action in ("cohort_promote", "cohort_abort", "rollback_started")]
    assert acts == [("cohort_promote", "rm-alex"), ("cohort_abort", "rm-sam"),
                    ("rollback_started", "rm-sam")]
    assert SandboxTarget(url).read_grants(ents) == before  # the prior access, exactly
    assert time.monotonic() - t0 < 600
