"""The wave DAG on Prefect. Orchestration only: every decision lives in src/wavekit.

release_wave(wave)                     one flow run per wave
 └─ roll_out_package(pkg) x N          a subflow per package; dependents wait for their deps
     stage → owner_handoff → dependency_checks → deploy → watch → retire_legacy (launch window)
     a failed health check → rollback_package(pkg): restore, verify, record
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger, pause_flow_run, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.task_runners import ThreadPoolTaskRunner

from wavekit import notices, rollout, watch
from wavekit import rollback as rollback_domain
from wavekit.approvals import ApprovalInput
from wavekit.reports import artifact_key, render_rollback_report, render_wave_report
from wavekit.runtime import Runtime, current_runtime
from wavekit.slack import flow_run_url
from wavekit.slack.notifier import announce_handoff
from wavekit.targets.base import BatchResult
from wavekit.waves import plan_wave_order

MAX_PARALLEL_PACKAGES = 4


def _flow_run_id() -> str | None:
    # Inside a task this is the enclosing (sub)flow run: the one owner handoff pauses.
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def _run_url(rt: Runtime) -> str | None:
    run_id = _flow_run_id()
    return flow_run_url(rt.settings.prefect_ui_url, run_id) if run_id else None


@task(name="stage", cache_policy=NO_CACHE)
def stage(rt: Runtime, package_key: str, wave: int | None, triggered_by: str | None
          ) -> rollout.StageOutcome:
    """Compute the plan, snapshot the prior bundle, publish the plan."""
    outcome = rollout.stage_package(rt, package_key, wave=wave, flow_run_id=_flow_run_id(),
                                    triggered_by=triggered_by)
    if outcome.release_id:
        create_table_artifact(
            key=artifact_key("plan", package_key),
            table=[{"change": k, "grants": v} for k, v in outcome.counts.items()]
            + [{"change": f"gate {g.name}", "grants": "pass" if g.passed else "FAIL: " + g.reason}
               for g in outcome.gates],
            description=f"Plan for {package_key} (wave {wave}) on {rt.target.name}",
        )
    return outcome


@task(name="owner_handoff", cache_policy=NO_CACHE)
def open_handoff(rt: Runtime, outcome: rollout.StageOutcome) -> rollout.HandoffRequest:
    """Ask the owner (or a delegate) to approve; Slack when configured, else the UI form."""
    request = rollout.request_handoff(rt, outcome.release_id)
    if request.decided is None and rt.notifier is not None:
        announce_handoff(rt.database_url, request.approval_id, rt.notifier,
                         gates=[(g.name, g.passed, g.reason) for g in outcome.gates],
                         flow_run_url=_run_url(rt),
                         counts=outcome.counts)
    return request


@task(name="record_decision", cache_policy=NO_CACHE)
def record_decision(rt: Runtime, approval_id: int, decision: ApprovalInput | None) -> str:
    if decision is None:
        return rollout.record_decision(rt, approval_id, "timeout", "wavekit",
                                       "approval deadline passed", channel="deadline")
    return rollout.record_decision(rt, approval_id, decision.decision, decision.approver,
                                   decision.comment, decision.channel)


@task(name="dependency_checks", cache_policy=NO_CACHE)
def dependency_checks(rt: Runtime, release_id: int) -> bool:
    """Policy gates against the current state; a failure holds only this package."""
    results = rollout.enforce_gates(rt, release_id)
    return all(r.passed for r in results)


@task(name="deploy", cache_policy=NO_CACHE, tags=["wavekit-deploy"])
def deploy(rt: Runtime, release_id: int, package_key: str, planned: int
           ) -> rollout.DeployOutcome:
    """Apply the plan in batches through the target, with a progress artifact."""
    progress = create_progress_artifact(progress=0.0, key=artifact_key("deploy", package_key),
                                        description=f"Deploying {package_key}")
    done = 0

    def on_batch(batch: BatchResult) -> None:
        nonlocal done
        done += batch.added + batch.removed + batch.unchanged
        update_progress_artifact(progress, progress=min(100.0, 100.0 * done / max(planned, 1)))

    outcome = rollout.deploy_package(rt, release_id, on_batch=on_batch)
    update_progress_artifact(progress, progress=100.0)
    return outcome


@task(name="watch", cache_policy=NO_CACHE)
def watch_tick(rt: Runtime, release_id: int, as_of: datetime) -> watch.TickOutcome:
    """Take the health measurements owed by `as_of` and judge them."""
    return watch.watch_tick(rt, release_id, as_of, rt.metrics)


@task(name="retire_legacy", cache_policy=NO_CACHE)
def retire_legacy(rt: Runtime, release_id: int) -> int:
    """Remove the legacy grants the package supersedes."""
    return rollout.retire_legacy(rt, release_id)


@flow(name="roll-out-package", log_prints=True)
def roll_out_package(package_key: str, wave: int | None = None,
                     triggered_by: str | None = None) -> str:
    """Stage, hand off, check, deploy and start watching one role package."""
    rt = current_runtime()
    log = get_run_logger()
    staged = stage(rt, package_key, wave, triggered_by)
    if staged.skipped:
        log.info("%s skipped: %s", package_key, staged.skipped)
        return rollout.package_state(rt, package_key)[0]
    if staged.held:
        log.warning("%s held at staging: %s", package_key, staged.held)
        notices.notify_gates_failed(rt, package_key, staged.gates, _run_url(rt))
        return "held"
    release_id = staged.release_id
    if not staged.resuming_deploy:
        request = open_handoff(rt, staged)
        decision = request.decided
        if decision is None:
            timeout = max(1, int((request.deadline - rt.clock.now()).total_seconds()))
            try:
                given = pause_flow_run(
                    wait_for_input=ApprovalInput.with_initial_data(
                        description=f"Approve {package_key} for wave {wave}?"),
                    timeout=timeout, poll_interval=rt.settings.approval_poll_seconds,
                    key=f"approval-{request.approval_id}")
            except FlowPauseTimeout:
                given = None
            decision = record_decision(rt, request.approval_id, given)
        if decision != "approved":
            log.warning("%s held: %s", package_key, decision)
            notices.notify_held(rt, package_key, f"owner handoff {decision}", _run_url(rt))
            return "held"
        if not dependency_checks(rt, release_id):
            _, reason = rollout.package_state(rt, package_key)
            notices.notify_held(rt, package_key, reason, _run_url(rt))
            return "held"
    deployed = deploy(rt, release_id, package_key,
                      sum(staged.counts.get(k, 0) for k in ("adds", "removes")))
    log.info("%s deployed: +%d -%d", package_key, deployed.added, deployed.removed)
    return _after_deploy(rt, package_key, release_id)


def _after_deploy(rt: Runtime, package_key: str, release_id: int) -> str:
    tick = watch_tick(rt, release_id, rt.clock.now())
    if tick.action == "rollback":
        rollback_package(package_key, tick.reason, release_id=release_id)
        return "rolled_back"
    if tick.action in ("contain", "inconclusive"):
        notices.notify_held(rt, package_key, tick.reason, _run_url(rt))
    if rollout.retires_in_launch_window(rt, package_key):
        retire_legacy(rt, release_id)
    return rollout.package_state(rt, package_key)[0]


@task(name="run-package", cache_policy=NO_CACHE)
def run_package(package_key: str, wave: int, triggered_by: str | None) -> str:
    # A task wraps the subflow so independent packages run concurrently in the task runner.
    return roll_out_package(package_key, wave, triggered_by)


@flow(name="release-wave", log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_PACKAGES))
def release_wave(wave: int, dry_run: bool = False, packages: list[str] | None = None,
                 triggered_by: str | None = None) -> dict[str, str]:
    """Release one wave: a roll-out subflow per package, dependencies first.

    dry_run stages nothing and writes nothing: it publishes each package's plan and gates.
    """
    rt = current_runtime()
    schedule = plan_wave_order(rt.database_url, wave, packages)
    if dry_run:
        rows = []
        for key in schedule:
            o = rollout.stage_package(rt, key, wave=wave, dry_run=True)
            rows.append({"package": key, **o.counts, "skipped": o.skipped or "",
                         "failed gates": ", ".join(g.name for g in o.gates if not g.passed)})
        create_table_artifact(key=artifact_key("wave", wave, "dry-run"), table=rows,
                              description=f"Dry run of wave {wave}: nothing was written")
        return {r["package"]: "dry-run" for r in rows}
    futures: dict = {}
    for key, waits in schedule.items():
        futures[key] = run_package.submit(key, wave, triggered_by,
                                          wait_for=[futures[d] for d in waits])
    results = {key: f.result() for key, f in futures.items()}
    _publish_wave_report(rt, wave)
    return results


def _publish_wave_report(rt: Runtime, wave: int) -> None:
    create_markdown_artifact(key=artifact_key("wave", wave, "report"),
                             markdown=render_wave_report(rt.database_url, wave),
                             description=f"Wave {wave} report")


@task(name="restore_prior_bundle", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def restore(rt: Runtime, release_id: int) -> tuple[int, int]:
    """Re-grant what the release removed, remove what it added."""
    return rollback_domain.restore_prior_bundle(rt, release_id)


@task(name="verify_restore", cache_policy=NO_CACHE)
def verify(rt: Runtime, release_id: int, written: tuple[int, int]
           ) -> rollback_domain.RollbackOutcome:
    """Read the target back and prove it equals the prior bundle."""
    return rollback_domain.verify_and_record(rt, release_id, *written)


@flow(name="rollback-package", log_prints=True)
def rollback_package(package_key: str, reason: str = "manual rollback by a release manager",
                     release_id: int | None = None, actor: str = "wavekit") -> dict:
    """Restore the prior bundle of a package's release exactly, verify it, record it."""
    rt = current_runtime()
    rid = rollback_domain.find_release(rt, package_key, release_id)
    rollback_domain.begin_rollback(rt, rid, reason, actor)
    outcome = verify(rt, rid, restore(rt, rid))
    proof = outcome.proof
    create_markdown_artifact(key=artifact_key("rollback", package_key),
                             markdown=render_rollback_report(rt.database_url, rid),
                             description=f"Rollback proof for {package_key}")
    notices.notify_rollback(rt, outcome, _run_url(rt))
    return {"package": package_key, "release_id": rid, "equal": proof.equal,
            "prior": proof.prior_count, "readback": proof.readback_count}
