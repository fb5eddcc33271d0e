"""Give a contained package's suspended grants back, from the Prefect UI (the restore-contained
deployment) as `wavekit contain restore` does from the CLI. The step is
wavekit.workflow.containment.restore; this module only orchestrates it."""

from __future__ import annotations

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed

from wavekit.workflow import containment
from wavekit.workflow.runtime import current_runtime


@flow(name="restore-contained", log_prints=True, flow_run_name="restore {package_key}")
def restore_contained(package_key: str, requested_by: str,
                      reason: str = "restored by a release manager") -> State:
    """Restore a contained package: its suspended grants back, read back, audited with who
    asked; the watch starts afresh. `requested_by` is required: the audit names a person."""
    if not requested_by.strip():
        return Failed(name="Refused", message="requested_by is required: who restores?")
    with current_runtime() as rt:
        try:
            outcome = containment.restore(rt, package_key, actor=requested_by.strip(),
                                          reason=reason)
        except (containment.NotContained, containment.RestoreUnproven) as exc:
            return Failed(name="Not restored", message=str(exc))
    print(outcome.describe())
    return Completed(message=outcome.describe(), data={"package": package_key,
                                                       "state": outcome.state,
                                                       "re_granted": outcome.re_granted})
