"""The nightly maintenance run (cron 02:00 in prefect.yaml): keep deployed roles healthy.

telemetry refresh → approval deadlines → due watch checks → measure every live package →
rollbacks / containment / tuning / ownership renewal / legacy retirement → backlog → reports
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.watch import watch_packages
from flows.wave import retire_legacy, rollback_package
from wavekit.domain.clock import as_utc
from wavekit.workflow import leases, notices
from wavekit.workflow import maintenance as domain
from wavekit.workflow.runtime import Runtime, current_runtime


@task(name="refresh_telemetry", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)
def refresh_telemetry(rt: Runtime, directory: str | None) -> dict[str, int]:
    """Load the telemetry drop directory (WAVEKIT_TELEMETRY_DIR), if there is one."""
    return domain.refresh_telemetry(rt, directory)


@task(name="approval_deadlines", cache_policy=NO_CACHE)
def approval_deadlines(rt: Runtime, as_of: datetime) -> int:
    """Remind, escalate, and time out owner handoffs past their deadline."""
    return domain.sweep_approval_deadlines(rt, as_of)


@task(name="plan_maintenance", cache_policy=NO_CACHE)
def plan(rt: Runtime, as_of: datetime) -> domain.MaintenancePlan:
    """Measure every live package and decide tonight's actions (pure planning inside)."""
    return domain.plan_from_store(rt, as_of)


@task(name="contain_package", cache_policy=NO_CACHE)
def contain(rt: Runtime, decision: domain.Decision, as_of: datetime) -> None:
    """Suspend the grants at risk of a package showing an anomaly and tell its owner."""
    outcome = domain.contain_package(rt, decision, as_of)
    if outcome.new:
        notices.notify_contained(rt, outcome)


@task(name="update_backlog", cache_policy=NO_CACHE)
def update_backlog(rt: Runtime, plan: domain.MaintenancePlan, as_of: datetime
                   ) -> tuple[int, int]:
    """Open and close maintenance items, each with its reason."""
    return domain.record_backlog(rt, plan, as_of)


@flow(name="nightly-maintenance", log_prints=True)
def nightly_maintenance(as_of: datetime | None = None, report_dir: str | None = None
                        ) -> dict[str, Any]:
    """Refresh telemetry, judge every watched and deployed package, and maintain the backlog."""
    with current_runtime() as rt:
        now = as_utc(as_of) if as_of else rt.clock.now()
        log = get_run_logger()
        loaded = refresh_telemetry(rt, str(rt.settings.telemetry_dir) if rt.settings.telemetry_dir
                                  else None)
        timed_out = approval_deadlines(rt, now)
        ticks = watch_packages(as_of=now)
        tonight = plan(rt, now)
        # A package another run holds now (a watch rolling it back) is left to that run.
        for d in tonight.rollback:
            with leases.attempt(rt, leases.package(d.package_key)) as refused:
                if refused:
                    log.warning("rollback skipped: %s", refused)
                    continue
                rollback_package(d.package_key, f"nightly maintenance: {d.reason}")
        for d in tonight.contain:
            with leases.attempt(rt, leases.package(d.package_key)) as refused:
                if refused:
                    log.warning("containment skipped: %s", refused)
                    continue
                contain(rt, d, now)
        for d in tonight.renew_ownership:
            notices.notify_held(rt, d.package_key, f"ownership review due: {d.reason}")
        for release_id in domain.retirements_due(rt, tonight):
            with leases.attempt(rt, leases.release_package(rt, release_id)) as refused:
                if not refused:
                    retire_legacy(rt, release_id)
        opened, closed = update_backlog(rt, tonight, now)
        summary = {"telemetry_rows": sum(loaded.values()), "approvals_timed_out": timed_out,
                   "watch_ticks": len(ticks), **tonight.summary(), "opened": opened,
                   "closed": closed}
        log.info("nightly maintenance: %s", summary)
        from wavekit.present.reports import with_audit_head, write_reports

        create_table_artifact(key="nightly-maintenance", table=[summary],
                              description=with_audit_head(
                                  f"Nightly maintenance as of {now:%Y-%m-%d %H:%M} UTC",
                                  rt.database_url))

        out = Path(report_dir or rt.settings.data_dir / "reports")
        write_reports(rt.database_url, out, as_of=now,
                      review_cadence_days=rt.settings.review_cadence_days)
        create_markdown_artifact(key="readiness-dashboard-location",
                                 markdown=with_audit_head(
                                     f"Dashboard written to `{out / 'dashboard.html'}`",
                                     rt.database_url))
        return summary
