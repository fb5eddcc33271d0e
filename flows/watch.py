"""The watch deployment: a scheduled tick that takes the health measurements owed.

No process lives through a days-long watch; each run reads what is due from the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.wave import after_tick, retire_legacy, watch_tick
from wavekit.domain.clock import as_utc
from wavekit.workflow import leases, rollout, watch
from wavekit.workflow.runtime import Runtime, current_runtime


@task(name="find_due_watches", cache_policy=NO_CACHE)
def find_due(rt: Runtime, as_of: datetime) -> list[int]:
    return watch.releases_due(rt, as_of)


@task(name="release_dependents", cache_policy=NO_CACHE)
def release_dependents(rt: Runtime, stable_key: str) -> dict[int, list[str]]:
    """Start release-wave for held packages whose dependencies are now all Stable."""
    ready = rollout.dependents_ready(rt, stable_key)
    from prefect.runtime import deployment

    if ready and deployment.id:  # under a served/deployed watch: no process waits for it
        from prefect.deployments import run_deployment

        for wave, keys in ready.items():
            run_deployment("release-wave/release-wave", timeout=0,
                           parameters={"wave": wave, "packages": keys,
                                       "requested_by": "wavekit (dependencies stable)"})
    return ready


@flow(name="watch-packages", log_prints=True)
def watch_packages(as_of: datetime | None = None) -> list[dict[str, Any]]:
    """Run every health check that is due; roll back, contain, hold or promote packages.

    as_of defaults to now; pass a time to replay the watch (tests, the demo's fast-forward).
    A package another run holds (another watch run, a wave deploying it, a rollback) is
    skipped this time; its checks stay owed and the next run catches up.
    """
    with current_runtime() as rt:
        now = as_utc(as_of) if as_of else rt.clock.now()
        log = get_run_logger()
        results = []
        for release_id in find_due(rt, now):
            with leases.attempt(rt, leases.release_package(rt, release_id)) as refused:
                if refused:
                    log.warning("skipped: %s", refused)
                    results.append({"package": refused.resource.partition(":")[2],
                                    "action": "skipped", "reason": str(refused),
                                    "measured": 0})
                    continue
                tick = watch_tick(rt, release_id, now)
                log.info("%s: %s (%s)", tick.package_key, tick.action, tick.reason)
                actions = after_tick(rt, tick)
            if actions.release_dependents:
                release_dependents(rt, tick.package_key)
            results.append({"package": tick.package_key, "action": tick.action,
                            "reason": tick.reason, "measured": tick.measured})
        for release_id in rollout.releases_awaiting_retirement(rt, now):
            with leases.attempt(rt, leases.release_package(rt, release_id)) as refused:
                if not refused:
                    retire_legacy(rt, release_id)
        return results
