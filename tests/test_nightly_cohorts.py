"""The nightly run measures a stepped release as the watch does: on the cohort granted so far."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.flows import owner_of
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import RolePackage
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.adapters.telemetry import TelemetryMetrics, ingest_frame
from wavekit.domain.clock import ManualClock
from wavekit.examples import seed_target
from wavekit.examples.synth_telemetry import generate_telemetry
from wavekit.workflow import cohorts, rollout, watch
from wavekit.workflow.maintenance import plan_from_store
from wavekit.workflow.runtime import build_runtime

FIN = "finance-month-end-operator"
D0 = datetime(2026, 4, 8, 9, tzinfo=UTC)
STEPS = {"steps": [{"members": 10.0}, {"soak_hours": 72.0}, {"members": 100.0}]}


def test_a_cohort_mid_soak_is_judged_on_its_cohort_by_the_watch_and_the_nightly_run(
        loaded_store: str) -> None:
    with session_scope(loaded_store) as s:
        s.get(RolePackage, FIN).rollout = STEPS
    target = SandboxTarget(loaded_store)
    seed_target(target)
    clock = ManualClock(D0)
    rt = build_runtime(load_settings(database_url=loaded_store), target=target, clock=clock,
                       metrics=TelemetryMetrics(loaded_store))
    frames = generate_telemetry(loaded_store, start=D0 - timedelta(days=28), deployed_at=D0,
                                days=30, seed=7, packages=[FIN])
    for kind, df in frames.items():
        ingest_frame(loaded_store, kind, df, source="test")
    staged = rollout.stage_package(rt, FIN, wave=1)
    assert staged.release_id and not staged.held, staged
    request = rollout.request_handoff(rt, staged.release_id)
    assert rollout.record_decision(rt, request.approval_id, "approve",
                                   owner_of(loaded_store, FIN), proof="unverified") == "approved"
    assert all(g.passed for g in rollout.enforce_gates(rt, staged.release_id))
    rollout.deploy_package(rt, staged.release_id)
    progress = cohorts.progress_view(rt, FIN)
    assert progress is not None and progress.granted < progress.total / 4, progress

    night = D0 + timedelta(days=1, hours=2)  # inside the first cohort's 72-hour soak
    clock.set(night)
    tick = watch.watch_tick(rt, staged.release_id, night, rt.metrics)
    assert tick.action == "continue", tick
    plan = plan_from_store(rt, night)
    # The 90% not granted yet hold nothing: no access drift to tune, nothing to contain.
    # (A drill item may open: the package has no recorded drill, which is not about the soak.)
    assert not [i.dedupe_key for i in plan.open
                if i.package_key == FIN and i.kind != "drill"], plan.open
    assert not plan.tune and not plan.contain and not plan.rollback
