"""The rollback-drill flow: prove a package's fallback on a drill target, never on production.

start → seed (a copy of production's scope) → deploy → forced rollback → read back, timed
against the rollback objective → recorded (store and audit log), with a report artifact.
The steps are wavekit.workflow.drills; this module only orchestrates them.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed

from wavekit.domain.drills import fmt_seconds
from wavekit.present.drill_report import render_drill_report
from wavekit.present.reports import artifact_key
from wavekit.workflow import drills
from wavekit.workflow.runtime import Runtime, Target, current_runtime


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


@task(name="start_drill", cache_policy=NO_CACHE)
def start(rt: Runtime, package_key: str, target: Target, objective_minutes: float,
          actor: str) -> int:
    """Open the drill record (the drill target is never production)."""
    return drills.start_drill(rt, package_key, target, objective_minutes=objective_minutes,
                              actor=actor, flow_run_id=_flow_run_id())


@task(name="seed_drill_target", cache_policy=NO_CACHE)
def seed(rt: Runtime, drill_id: int, target: Target) -> dict[str, int]:
    """Copy production's grants in the package's scope onto the drill target."""
    return drills.seed_drill(rt, drill_id, target)


@task(name="deploy_to_drill_target", cache_policy=NO_CACHE)
def deploy(rt: Runtime, drill_id: int, target: Target) -> dict[str, int]:
    """Deploy the package to the drill target: adds, removes and legacy retirements."""
    return drills.deploy_drill(rt, drill_id, target)


# No task retries, like rollback-package's restore: the target retries each request itself
# (tenacity, in targets/resilience.py), so the drill times what production would do.
@task(name="force_rollback", cache_policy=NO_CACHE)
def rollback(rt: Runtime, drill_id: int, target: Target) -> tuple[int, int]:
    """Restore the drill's prior bundle on the drill target; the objective's clock runs."""
    return drills.force_rollback(rt, drill_id, target)


@task(name="verify_drill", cache_policy=NO_CACHE)
def verify(rt: Runtime, drill_id: int, target: Target, written: tuple[int, int]
           ) -> drills.DrillOutcome:
    """Read the drill target back, time the restore against the objective, record."""
    return drills.verify_drill(rt, drill_id, target, written)


@flow(name="rollback-drill", log_prints=True, flow_run_name="drill {package_key}")
def rollback_drill(package_key: str, objective_minutes: float = 30,
                   target_kind: str | None = None, actor: str = "wavekit") -> State:
    """Deploy a package to a drill target, force its rollback, prove it by read-back and time
    it against the rollback objective. Production is read, never written."""
    with current_runtime() as rt:
        return _drill(rt, package_key, objective_minutes, target_kind, actor)


def _drill(rt: Runtime, package_key: str, objective_minutes: float, target_kind: str | None,
           actor: str) -> State:
    log = get_run_logger()
    with drills.drill_target(rt, package_key, target_kind) as target:
        drill_id = start(rt, package_key, target, objective_minutes, actor)
        try:
            seed(rt, drill_id, target)
            deploy(rt, drill_id, target)
            outcome = verify(rt, drill_id, target, rollback(rt, drill_id, target))
        except Exception as exc:  # recorded as a failed drill, never left running
            log.error("drill of %s did not finish: %s", package_key, exc)
            outcome = drills.fail_drill(rt, drill_id, f"{type(exc).__name__}: {exc}")
    create_markdown_artifact(key=artifact_key("drill", package_key),
                             markdown=render_drill_report(rt.database_url, drill_id),
                             description=f"Rollback drill of {package_key} on {target.name}")
    data = outcome.as_dict()
    if outcome.passed:
        return Completed(message=f"drill passed: restored in "
                         f"{fmt_seconds(outcome.duration_seconds)} (objective "
                         f"{objective_minutes:g} min)", data=data)
    return Failed(name="Drill failed", message=f"drill failed: {outcome.failure}", data=data)
