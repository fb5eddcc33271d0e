"""The cohort-action flow: a release manager promotes, pauses, resumes or aborts a stepped
package from the Prefect UI (a typed form: the package, the action, who acts, why).

promote → widen to the next cohort now (the widen task, named for the cohort it deploys)
abort   → rollback-package of exactly the members granted so far
pause / resume → recorded; the soak's end widens only when not paused
The rule and the records are wavekit.workflow.cohorts; this module only orchestrates.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed

from flows.wave import publish_cohort_progress, rollback_package, widen_step
from wavekit.workflow import cohorts
from wavekit.workflow.runtime import Runtime, current_runtime


class CohortAction(StrEnum):
    """What the release manager does to the package's rollout (the UI shows a choice)."""

    promote = "promote"
    pause = "pause"
    resume = "resume"
    abort = "abort"


@flow(name="cohort-action", log_prints=True, flow_run_name="{action} {package_key} ({actor})")
def cohort_action(package_key: str, action: CohortAction, actor: str, reason: str = ""
                  ) -> State:
    """Promote a stepped package to its next step now, pause or resume it, or abort it (roll
    back what it has granted so far). `actor` is required and audited with the action."""
    with current_runtime() as rt:  # closes the target this run opened
        return _act(rt, package_key, action, actor, reason)


def _act(rt: Runtime, package_key: str, action: CohortAction, actor: str, reason: str
         ) -> State:
    name = action.value if isinstance(action, CohortAction) else str(action)
    try:
        outcome = cohorts.request_action(rt, package_key, name, actor, reason)
    except cohorts.CohortActionRefused as exc:
        return Failed(name="Refused", message=str(exc), data={"refused": str(exc)})
    get_run_logger().info("%s", outcome.message)
    result: dict[str, Any] = {"package": package_key, "action": name, "actor": outcome.actor,
                              "message": outcome.message}
    if outcome.widen:
        step = widen_step(rt, outcome.release_id, actor=outcome.actor, reason=outcome.message)
        result.update(step=step.step, granted=step.granted, total=step.total)
    if outcome.rollback:
        proof = rollback_package(package_key, outcome.message, release_id=outcome.release_id,
                                 actor=outcome.actor)
        result.update(equal=proof["equal"], prior=proof["prior"], readback=proof["readback"])
    publish_cohort_progress(rt, package_key)
    return Completed(message=outcome.message, data=result)
