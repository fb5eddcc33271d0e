"""The wave DAG on Prefect. Orchestration only: every decision lives in src/wavekit.

release_wave(wave)                     one flow run per wave
 └─ roll_out_package(pkg) x N          one run per package, every one handed off at once
     stage → owner_handoff → dependency_checks → deploy → watch → retire_legacy (launch window)
     a failed health check → rollback_package(pkg): restore, verify, record
     an anomaly → contain(pkg): suspend the grants at risk, tell the owner; still watched

Under a deployment (the production path) each package is its own `roll-out-package` run and
suspends at the owner handoff: no worker slot or process waits for an owner. The decision
(Slack, the UI form, or the deadline passing) resumes it and the run starts again from the top;
every stage is keyed in the store, so re-entering it is safe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, pause_flow_run, suspend_flow_run, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import FlowPauseTimeout
from prefect.states import Completed, Failed

from wavekit.domain.decisions import requester
from wavekit.present.releasing import wave_run_tag
from wavekit.present.reports import (
    artifact_key,
    render_rollback_report,
    render_wave_report,
    with_audit_head,
)
from wavekit.workflow import cohorts, containment, leases, notices, rollout, watch
from wavekit.workflow import rollback as rollback_domain
from wavekit.workflow.approvals import ApprovalInput
from wavekit.workflow.runtime import BatchResult, Runtime, current_runtime

PACKAGE_DEPLOYMENT = "roll-out-package/roll-out-package"


def _flow_run_id() -> str | None:
    # Inside a task this is the enclosing (sub)flow run: the one owner handoff pauses.
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def _under_deployment() -> bool:
    from prefect.runtime import deployment

    return bool(deployment.id)


def _run_url(rt: Runtime) -> str | None:
    return notices.run_url(rt, _flow_run_id())


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
            description=with_audit_head(f"Plan for {package_key} (wave {wave}) on "
                                        f"{rt.target.name}", rt.database_url),
        )
    return outcome


@task(name="owner_handoff", cache_policy=NO_CACHE)
def open_handoff(rt: Runtime, outcome: rollout.StageOutcome) -> rollout.HandoffRequest:
    """Ask the owner (or a delegate) to approve; Slack when configured, else the UI form."""
    assert outcome.release_id is not None
    request = rollout.request_handoff(rt, outcome.release_id)
    if request.superseded_run:
        _cancel_superseded(request.superseded_run)
    notices.ask_approvers(rt, request, outcome, _run_url(rt))
    return request


def _cancel_superseded(flow_run_id: str) -> None:
    """A re-run of the wave took over this handoff: the run suspended before it is cancelled,
    so one decision resumes one run."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        if run.state is not None and run.state.is_paused():
            client.set_flow_run_state(UUID(flow_run_id), Cancelled(
                message=f"superseded by run {_flow_run_id()} of the same handoff"), force=True)


@task(name="record_decision", cache_policy=NO_CACHE)
def record_decision(rt: Runtime, approval_id: int, attempt: int, given: ApprovalInput
                    ) -> str | None:
    """Judge the form's input with the one decision rule; None: not decided, wait again. A
    refusal is answered in the run's log (and the next form says why)."""
    answer = rollout.record_form_input(rt, approval_id, attempt, given.decision,
                                       given.approver, given.code, given.comment)
    if answer.refused:
        get_run_logger().warning("Decision refused: %s. Nothing changed; the run waits for a "
                                 "valid decision.", answer.refused)
    return answer.decided


@task(name="record_timeout", cache_policy=NO_CACHE)
def record_timeout(rt: Runtime, approval_id: int) -> str:
    """The deadline passed while the run waited: the package is held."""
    return rollout.record_timeout(rt, approval_id)


@task(name="apply_stored_decision", cache_policy=NO_CACHE)
def apply_stored_decision(rt: Runtime, approval_id: int) -> str:
    """A decision made while no run was waiting, applied as if it had arrived live."""
    return rollout.apply_stored_decision(rt, approval_id)


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
    assert isinstance(progress, UUID), "a sync task: Prefect answers at once, not a coroutine"
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


@task(name="contain", cache_policy=NO_CACHE)
def contain(rt: Runtime, release_id: int, reason: str, identities: frozenset[str],
            checks: tuple[str, ...], as_of: datetime | None = None
            ) -> containment.ContainOutcome:
    """Suspend the grants at risk at once (a recorded, reversible bundle) and tell the owner."""
    outcome = containment.contain(rt, release_id, reason, identities, checks=checks,
                                  as_of=as_of)
    if outcome.new:
        notices.notify_contained(rt, outcome, _run_url(rt))
    return outcome


def _wait_for_owner(rt: Runtime, package_key: str, wave: int | None,
                    request: rollout.HandoffRequest, step: str) -> str | None:
    """Suspend or pause for the owner's decision until a valid one arrives; None when the
    run must not wait. A refused input (wrong code, the requester, a stranger...) changes
    nothing, is audited, and the run waits again under a new pause key."""
    if step == "decided":
        return apply_stored_decision(rt, request.approval_id)
    if step == "leave":
        return None
    while True:
        wait = rollout.form_wait(rt, request, step)
        if wait.decided:
            return apply_stored_decision(rt, request.approval_id)
        form = ApprovalInput.with_initial_data(description=wait.description(package_key, wave))
        key = f"approval-{request.approval_id}-{wait.attempt}"
        # Waiting writes nothing: the package's lease is given back meanwhile, taken again after.
        with leases.released(leases.package(package_key)):
            if step == "suspend":
                # Exits this process; the resumed run starts from the top and arrives here again.
                given = suspend_flow_run(wait_for_input=form, timeout=wait.timeout, key=key)
            else:
                try:
                    given = pause_flow_run(wait_for_input=form, timeout=wait.timeout, key=key,
                                           poll_interval=rt.settings.approval_poll_seconds)
                except FlowPauseTimeout:
                    given = None
        if given is None:
            return record_timeout(rt, request.approval_id)
        decided = record_decision(rt, request.approval_id, wait.attempt, given)
        if decided is not None:
            return decided


def _end(rt: Runtime, package_key: str, wave: int | None) -> State:
    """The run's final state: a hold, rejection, timeout or rollback is not a green success."""
    if wave is not None:
        _publish_wave_report(rt, wave)  # each package run refreshes its wave's report
    outcome = rollout.package_outcome(rt, package_key)
    message = f"{outcome.label}: {outcome.reason}" if outcome.reason else outcome.label
    if outcome.ok:
        return Completed(message=message, data=outcome.state)
    return Failed(name=outcome.label, message=message, data=outcome.state)


@flow(name="roll-out-package", log_prints=True, flow_run_name="{package_key} · wave {wave}")
def roll_out_package(package_key: str, requested_by: str, wave: int | None = None,
                     wait_for_owner: bool = True) -> State:
    """Stage, hand off, check, deploy and start watching one role package.

    requested_by: who requests the release (Slack id or name); they can never approve it.
    Refused at once (a Failed state named Refused) while another run holds the package.
    """
    requested_by = requester(requested_by)
    with current_runtime() as rt:  # closes the target this run opened
        try:
            with leases.hold(rt, leases.package(package_key)):
                return _roll_out(rt, package_key, wave, requested_by, wait_for_owner)
        except leases.LeaseHeld as refused:
            get_run_logger().warning("%s", refused)
            return Failed(name="Refused", message=str(refused), data="refused")


def _roll_out(rt: Runtime, package_key: str, wave: int | None, requested_by: str,
              wait_for_owner: bool) -> State:
    log = get_run_logger()
    staged = stage(rt, package_key, wave, requested_by)
    if staged.skipped:
        log.info("%s skipped: %s", package_key, staged.skipped)
        for release_id in rollout.launch_retirements_due(rt, package_key, rt.clock.now()):
            retire_legacy(rt, release_id)  # a crash after deploy left the retirement undone
        return _end(rt, package_key, wave)
    if staged.held:
        log.warning("%s held at staging: %s", package_key, staged.held)
        notices.notify_gates_failed(rt, package_key, staged.gates, _run_url(rt))
        return _end(rt, package_key, wave)
    assert staged.release_id is not None
    release_id = staged.release_id
    if not staged.resuming_deploy:
        request = open_handoff(rt, staged)
        step = rollout.handoff_step(request, resumable=_under_deployment(),
                                    wait=wait_for_owner)
        decision = _wait_for_owner(rt, package_key, wave, request, step)
        if decision is None:
            log.info("%s awaits its owner's decision", package_key)
            return _end(rt, package_key, wave)
        if decision != "approved":
            log.warning("%s held: %s", package_key, decision)
            notices.notify_held(rt, package_key, f"owner handoff {decision}", _run_url(rt))
            return _end(rt, package_key, wave)
        if not dependency_checks(rt, release_id):
            _, reason = rollout.package_state(rt, package_key)
            notices.notify_held(rt, package_key, reason, _run_url(rt))
            return _end(rt, package_key, wave)
    first = cohorts.first_step_label(rt, package_key)  # a stepped package: its first cohort
    deployed = deploy.with_options(task_run_name=f"deploy {first}" if first else "deploy")(
        rt, release_id, package_key, sum(staged.counts.get(k, 0) for k in ("adds", "removes")))
    log.info("%s deployed: +%d -%d", package_key, deployed.added, deployed.removed)
    publish_cohort_progress(rt, package_key)
    after_tick(rt, watch_tick(rt, release_id, rt.clock.now()))
    return _end(rt, package_key, wave)


def after_tick(rt: Runtime, tick: watch.TickOutcome) -> watch.NextActions:
    """Carry out what the domain decided after a watch tick (shared with the watch flow)."""
    actions = watch.next_actions(rt, tick)
    if actions.rollback:
        rollback_package(tick.package_key, tick.reason, release_id=tick.release_id)
    if actions.widen:
        widen_step(rt, tick.release_id, at=tick.as_of)
    if actions.contain:
        contain(rt, tick.release_id, tick.reason, tick.identities, tick.checks, tick.as_of)
    if actions.notify_hold:
        notices.notify_held(rt, tick.package_key, actions.notify_hold, _run_url(rt))
    if actions.retire_legacy:
        retire_legacy(rt, tick.release_id)
    return actions


@task(name="widen", cache_policy=NO_CACHE, tags=["wavekit-deploy"])
def widen(rt: Runtime, release_id: int, actor: str, reason: str, at: datetime | None
          ) -> cohorts.StepOutcome:
    """Deploy a stepped package's next cohort: the plan restricted to its new members."""
    return cohorts.widen(rt, release_id, actor=actor, reason=reason, at=at)


def widen_step(rt: Runtime, release_id: int, actor: str = "wavekit",
               reason: str = "soak passed", at: datetime | None = None
               ) -> cohorts.StepOutcome:
    """The widen task, named in the UI for the cohort it deploys, then the progress."""
    label = cohorts.next_step_label(rt, release_id)
    outcome = widen.with_options(task_run_name=f"widen to {label}")(rt, release_id, actor,
                                                                    reason, at)
    publish_cohort_progress(rt, outcome.package_key)
    return outcome


def publish_cohort_progress(rt: Runtime, package_key: str) -> None:
    """A stepped package's progress artifact (members granted / total, current step) and its
    steps as a table; nothing for a package without steps."""
    view = cohorts.progress_view(rt, package_key)
    if view is None:
        return
    create_progress_artifact(progress=view.percent, key=artifact_key("cohort", package_key),
                             description=view.describe())
    create_table_artifact(key=artifact_key("cohort", package_key, "steps"),
                          table=list(view.rows),
                          description=with_audit_head(view.describe(), rt.database_url))


@task(name="run-package", cache_policy=NO_CACHE)
def run_package(rt: Runtime, package_key: str, wave: int, requested_by: str,
                wait_for_owner: bool) -> str:
    # A task wraps the subflow so the packages of an ad-hoc run go concurrently.
    state = roll_out_package(package_key, requested_by, wave, wait_for_owner,
                             return_state=True)
    if state.name == "Refused":
        return "refused"
    return rollout.package_state(rt, package_key)[0]


@task(name="start-package-run", cache_policy=NO_CACHE)
def start_package_run(package_key: str, wave: int, requested_by: str) -> str:
    """Start the package's own roll-out-package deployment run; nothing waits for it.

    A top-level run, not a subflow of the wave run: Prefect's server refuses to suspend a
    subflow ("Cannot suspend subflows"), and the run must suspend at the owner handoff.
    """
    from prefect.deployments import run_deployment

    run = run_deployment(PACKAGE_DEPLOYMENT, timeout=0, as_subflow=False,
                         flow_run_name=f"{package_key} · wave {wave}",
                         tags=[wave_run_tag(_flow_run_id() or "")],
                         parameters={"package_key": package_key, "wave": wave,
                                     "requested_by": requested_by})
    assert isinstance(run, FlowRun), "called from a sync task: Prefect answers at once"
    return f"started {run.name}"


# Threads only: a paused ad-hoc package holds one, and every package of a wave is handed
# off at once, however many there are.
@flow(name="release-wave", log_prints=True, flow_run_name="wave {wave}")
def release_wave(wave: int, requested_by: str, dry_run: bool = False,
                 packages: list[str] | None = None, wait_for_owners: bool = True
                 ) -> dict[str, str]:
    """Release one wave: a roll-out run per package, all handed off at once.

    requested_by: who requests the wave (Slack id or name), required; they can never approve
    its packages. dry_run stages nothing and writes nothing: it publishes each package's
    plan and gates. A second run of the wave, or one while another run holds one of its
    packages, is refused at once (LeaseHeld, naming the holder).
    """
    requested_by = requester(requested_by)
    with current_runtime() as rt:  # closes the target this run opened
        return _release(rt, wave, dry_run, packages, requested_by, wait_for_owners)


def _release(rt: Runtime, wave: int, dry_run: bool, packages: list[str] | None,
             requested_by: str, wait_for_owners: bool) -> dict[str, str]:
    schedule = rollout.release_order(rt, wave, packages)
    if dry_run:
        rows = rollout.dry_run_wave(rt, wave, list(schedule))
        create_table_artifact(key=artifact_key("wave", wave, "dry-run"), table=rows,
                              description=with_audit_head(
                                  f"Dry run of wave {wave}: nothing was written", rt.database_url))
        return {str(r["package"]): "dry-run" for r in rows}
    try:
        with leases.hold(rt, leases.wave(wave)):
            leases.check_free(rt, [leases.package(key) for key in schedule])
            return _release_packages(rt, wave, schedule, requested_by, wait_for_owners)
    except leases.LeaseHeld as refused:
        # A refusal is an answer, not a crash: one line in the run's logs, no traceback; a
        # caller of the flow gets the LeaseHeld back from the state.
        get_run_logger().warning("%s", refused)
        return Failed(name="Refused", message=str(refused), data=refused)  # type: ignore[return-value]  # a returned State is the run's end, not its value


def _release_packages(rt: Runtime, wave: int, schedule: dict[str, list[str]],
                      requested_by: str, wait_for_owners: bool) -> dict[str, str]:
    if _under_deployment():
        # Each package is its own run; dependents are held at staging by their gate until
        # their dependencies are Stable, and the watch releases them then.
        started = {key: start_package_run.submit(key, wave, requested_by) for key in schedule}
        return {key: f.result() for key, f in started.items()}
    futures: dict[str, Any] = {}
    for key, waits in schedule.items():
        futures[key] = run_package.submit(rt, key, wave, requested_by, wait_for_owners,
                                          return_state=False,  # the default, typed with wait_for
                                          wait_for=[futures[d] for d in waits])
    results = {key: f.result() for key, f in futures.items()}
    _publish_wave_report(rt, wave)
    return results


def _publish_wave_report(rt: Runtime, wave: int) -> None:
    create_markdown_artifact(key=artifact_key("wave", wave, "report"),
                             markdown=render_wave_report(rt.database_url, wave),
                             description=f"Wave {wave} report")


@task(name="restore_prior_bundle", cache_policy=NO_CACHE)
def restore(rt: Runtime, release_id: int) -> tuple[int, int]:
    """Re-grant what the release removed, remove what it added."""
    return rollback_domain.restore_prior_bundle(rt, release_id)


@task(name="verify_restore", cache_policy=NO_CACHE)
def verify(rt: Runtime, release_id: int, written: tuple[int, int]
           ) -> rollback_domain.RollbackOutcome:
    """Read the target back and prove it equals the prior bundle."""
    return rollback_domain.verify_and_record(rt, release_id, *written)


@flow(name="rollback-package", log_prints=True, flow_run_name="rollback {package_key}")
def rollback_package(package_key: str, reason: str = "manual rollback by a release manager",
                     release_id: int | None = None, actor: str = "wavekit") -> dict[str, Any]:
    """Restore the prior bundle of a package's release exactly, verify it, record it."""
    with current_runtime() as rt:  # closes the target this run opened
        try:
            with leases.hold(rt, leases.package(package_key)):  # re-entrant under a tick's
                return _roll_back(rt, package_key, reason, release_id, actor)
        except leases.LeaseHeld as refused:  # as release-wave: one line, LeaseHeld to a caller
            get_run_logger().warning("%s", refused)
            return Failed(name="Refused", message=str(refused), data=refused)  # type: ignore[return-value]  # a returned State is the run's end, not its value


def _roll_back(rt: Runtime, package_key: str, reason: str, release_id: int | None,
               actor: str) -> dict[str, Any]:
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
