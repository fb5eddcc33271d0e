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
from wavekit.domain.cohorts import ActorProof
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
    back what it has granted so far). `actor` (your Slack id or e-mail) is required: the
    package's owner, a delegate or a release manager; audited with the action. From the UI,
    promote and resume need local mode (nothing proves who typed the name)."""
    with current_runtime() as rt:  # closes the target this run opened
        return _act(rt, package_key, action, actor, reason)


def _proof() -> ActorProof:
    """A run of the deployment was asked for in the Prefect UI (or its API): nothing proves
    who typed `actor`. A run without a deployment is the CLI's (`wavekit cohort ...`)."""
    from prefect.runtime import deployment

    return "unverified" if deployment.id else "cli"


def _act(rt: Runtime, package_key: str, action: CohortAction, actor: str, reason: str
         ) -> State:
    name = action.value if isinstance(action, CohortAction) else str(action)
    try:
        outcome = cohorts.request_action(rt, package_key, name, actor, reason,
                                         proof=_proof())
    except cohorts.CohortActionRefused as exc:
        get_run_logger().warning("%s", exc)
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
