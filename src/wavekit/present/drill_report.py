"""The rollback drill report (Markdown, reports/templates/drill_report.md.j2): what was drilled
where, the timing against the rollback objective, and the read-back proof."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from wavekit.adapters.store.drills import drill_records, load_drill_bundle
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import DrillRun, RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.clock import as_utc
from wavekit.domain.drills import drill_standing, fmt_minutes, fmt_seconds
from wavekit.domain.gates import GateContext, rollback_drill
from wavekit.domain.grants import Grant
from wavekit.domain.planning import Plan
from wavekit.present.reports import render_template, report_filename

MAX_LISTED = 50  # mismatched / drifted grants listed one by one; the rest are counted


def drill_filename(run: DrillRun) -> str:
    return report_filename("drill", run.package_key, run.id)


def drill_report_context(session: Session, drill_id: int, cadence_days: int = 30
                         ) -> dict[str, Any]:
    run = session.get(DrillRun, drill_id)
    if run is None:
        raise KeyError(f"no drill {drill_id} in the store")
    package = session.get(RolePackage, run.package_key)
    assert package is not None
    plan = load_drill_bundle(session, run)
    as_of = as_utc(run.finished_at or run.started_at)
    records = tuple(r for r in drill_records(session, [run.package_key]).get(run.package_key, ())
                    if (r.id or 0) <= (run.id or 0))
    view = load_package_view(session, run.package_key)
    empty: frozenset[Grant] = frozenset()
    gate = rollback_drill(view, GateContext(
        plan=Plan(view.key, view.scope, empty, empty, empty, empty), drills=records,
        as_of=as_of, review_cadence_days=cadence_days))
    by_entitlement = []
    for ent in sorted(plan.scope):
        row = {"entitlement": ent,
               "prior": sum(g.entitlement == ent for g in plan.prior),
               "added": sum(g.entitlement == ent for g in plan.adds),
               "removed": sum(g.entitlement == ent for g in plan.removes | plan.retirements)}
        if any(row[k] for k in ("prior", "added", "removed")):
            by_entitlement.append(row)
    restore = (as_utc(run.finished_at) - as_utc(run.rollback_started_at)
               if run.finished_at and run.rollback_started_at else None)
    return {
        "run": run, "package": package, "gate": gate,
        "standing": drill_standing(package.fallback_drill, records, as_of, cadence_days),
        "restore": fmt_seconds(run.duration_seconds if run.duration_seconds is not None
                               else restore.total_seconds() if restore else None),
        "objective": fmt_minutes(run.objective_minutes),
        "within_objective": (run.duration_seconds is not None
                             and run.duration_seconds <= run.objective_minutes * 60),
        "touched": len(plan.touched), "by_entitlement": by_entitlement,
        "mismatches": run.mismatches[:MAX_LISTED], "more_mismatches":
            max(0, len(run.mismatches) - MAX_LISTED),
        "drift": run.drift_outside[:MAX_LISTED],
        "more_drift": max(0, len(run.drift_outside) - MAX_LISTED),
    }


def render_drill_report(database_url: str, drill_id: int, cadence_days: int | None = None
                        ) -> str:
    """The drill report as Markdown; the review cadence defaults to the settings'."""
    if cadence_days is None:
        from wavekit.adapters.settings import load_settings

        cadence_days = load_settings().review_cadence_days
    with session_scope(database_url) as s:
        return render_template("drill_report.md.j2",
                               drill_report_context(s, drill_id, cadence_days), database_url)


def drill_runs(session: Session) -> list[DrillRun]:
    """Every finished drill, oldest first (the reports directory gets one file each)."""
    return list(session.exec(select(DrillRun).where(col(DrillRun.finished_at).is_not(None))
                             .order_by(col(DrillRun.id))))
