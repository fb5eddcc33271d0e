"""Rich tables for the terminal: wave plans and package status."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table
from sqlmodel import col, func, select

from wavekit.adapters.store.engine import get_one, session_scope
from wavekit.adapters.store.models import PackageEntitlement, PackageMember, RolePackage
from wavekit.adapters.store.packages import load_package_view, package_keys_in_wave
from wavekit.domain.clock import utcnow
from wavekit.domain.planning import Plan, plan_package
from wavekit.domain.states import PackageState
from wavekit.workflow.runtime import Runtime


def wave_plans(rt: Runtime, wave: int) -> list[tuple[str, Plan]]:
    """(package name, plan) for every package in `wave`, read from the target; no writes."""
    with session_scope(rt.database_url) as s:
        views = [load_package_view(s, k) for k in package_keys_in_wave(s, wave)]
    return [(v.name, plan_package(v, rt.target.read_grants(v.scope))) for v in views]


def print_wave_plan(console: Console, rt: Runtime, wave: int) -> None:
    plans = wave_plans(rt, wave)
    if not plans:
        console.print(f"No packages in wave {wave}.")
        return
    for name, plan in plans:
        table = Table(title=f"Wave {wave} · {name}", title_justify="left")
        table.add_column("change")
        table.add_column("grants", justify="right")
        table.add_column("entitlements")
        for label, grants in (("add", plan.adds), ("remove", plan.removes),
                              ("retire (legacy)", plan.retirements)):
            ents = sorted({g.entitlement for g in grants})
            table.add_row(label, str(len(grants)), ", ".join(ents) or "—")
        console.print(table)
    console.print(f"[dim]Plan only: nothing was written to {rt.target.name}.[/dim]")


def status_rows(database_url: str) -> list[dict[str, Any]]:
    """One row per package: wave, counts, risk and state, ordered by wave then key."""
    with session_scope(database_url) as s:
        members = dict(s.exec(select(PackageMember.package_key, func.count())
                              .group_by(PackageMember.package_key)).all())
        ents = dict(s.exec(select(PackageEntitlement.package_key, func.count())
                           .where(PackageEntitlement.usage == "grant")
                           .group_by(PackageEntitlement.package_key)).all())
        pkgs = list(s.exec(select(RolePackage)))
    pkgs.sort(key=lambda p: (p.wave is None, p.wave or 0, p.key))
    return [{"key": p.key, "name": p.name, "wave": p.wave, "members": members.get(p.key, 0),
             "entitlements": ents.get(p.key, 0), "risk": p.risk,
             "state": PackageState(p.state).label, "reason": p.state_reason} for p in pkgs]


def _hours(value: timedelta | None) -> str:
    return "—" if value is None else f"{value.total_seconds() / 3600:.0f}h"


def kpi_lines(database_url: str, as_of: datetime | None = None,
              review_cadence_days: int = 30) -> list[tuple[str, str]]:
    """The portal's KPIs as (label, value) pairs: what `wavekit status` and the dashboard show."""
    from wavekit.present.kpis import compute_kpis

    with session_scope(database_url) as s:
        k = compute_kpis(s, as_of or utcnow(), review_cadence_days=review_cadence_days)
    ready = (f"{k.wave_ready.release_ready} of {k.wave_ready.count} (wave {k.wave_ready.wave})"
             if k.wave_ready else "0")
    coverage = "—" if k.coverage_health is None else f"{k.coverage_health:.0%}"
    return [
        ("Wave ready", ready), ("Roles monitored", str(k.roles_monitored)),
        ("Maintenance tasks", str(k.maintenance_tasks_open)), ("Coverage health", coverage),
        *[(f"Action: {a}", str(n)) for a, n in k.action_counts.items()],
        ("Active waves", str(len(k.active_waves))),
        ("Median deploy time", _hours(k.median_deploy_time)),
        ("Median time to stable", _hours(k.median_time_to_stable)),
        ("Fallback tested", f"{k.fallback_tested[0]}/{k.fallback_tested[1]}"),
        *([("Fallback signed in catalog only", str(k.fallback_signed_catalog))]
          if k.fallback_signed_catalog else []),
        ("Review cadence", f"{k.review_cadence_days} days"),
        *[(f"Deploy confidence: {key}", f"{c.score}%") for key, c in
          k.deploy_confidence.items()],
    ]


def print_definitions(console: Console) -> None:
    """What each KPI means (kpis.DEFINITIONS), and the confidence model factor by factor."""
    from wavekit.present.kpis import CONFIDENCE_MODEL, DEFINITIONS

    table = Table(title="What the figures mean", title_justify="left", show_header=False)
    table.add_column("KPI", style="bold")
    table.add_column("definition")
    for label, text in DEFINITIONS.items():
        if label != "Deploy confidence":
            table.add_row(label, text)
    table.add_row("Deploy confidence", "0-100, the sum of these facts' points (High from 85, "
                  "Medium from 60):")
    for name, weight, why in CONFIDENCE_MODEL:
        table.add_row(f"  {name} ({weight})", why)
    console.print(table)


def print_status(console: Console, database_url: str, as_of: datetime | None = None,
                 review_cadence_days: int = 30) -> None:
    kpis = Table(title="Deploy & Maintain", title_justify="left", show_header=False)
    kpis.add_column("KPI")
    kpis.add_column("value", justify="right")
    for label, value in kpi_lines(database_url, as_of, review_cadence_days):
        kpis.add_row(label, value)
    console.print(kpis)
    table = Table(title="Role packages", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("wave", "right"), ("package", "left"), ("members", "right"), ("entitlements", "right"),
        ("risk", "left"), ("state", "left"), ("reason", "left"))
    for name, just in columns:
        table.add_column(name, justify=just)
    for r in status_rows(database_url):
        table.add_row(str(r["wave"] or "—"), r["name"], str(r["members"]),
                      str(r["entitlements"]), r["risk"], r["state"], r["reason"])
    console.print(table)


def wave_package_rows(database_url: str, wave: int) -> list[dict[str, Any]]:
    """Per package of `wave`: state, what its latest release wrote, checks run, rollback proof."""
    from wavekit.adapters.store import audit
    from wavekit.adapters.store.models import HealthCheckResult, Release

    out = []
    with session_scope(database_url) as s:
        for key in package_keys_in_wave(s, wave):
            pkg = get_one(s, RolePackage, key)
            rel = s.exec(select(Release).where(Release.package_key == key)
                         .order_by(col(Release.id).desc())).first()
            checks = s.exec(select(func.count()).select_from(HealthCheckResult)
                            .where(HealthCheckResult.package_key == key)).one()
            proofs = audit.events(s, package_key=key, action="rollback_verified")
            proof = "—"
            if proofs:
                d = proofs[-1].detail
                proof = (f"prior {d['prior_count']} = read back {d['readback_count']}"
                         if d["equal"] else f"MISMATCH {d['prior_count']}≠{d['readback_count']}")
            out.append({"package": pkg.name, "state": PackageState(pkg.state).label,
                        "adds": rel.adds if rel else 0, "removes": rel.removes if rel else 0,
                        "retired": (rel.retirements if rel and rel.legacy_retired_at else 0),
                        "checks": checks, "proof": proof})
    return out


_MAINTENANCE_LABELS = {
    "telemetry_rows": "telemetry rows loaded", "approvals_timed_out": "approvals timed out",
    "watch_ticks": "watch checks taken", "opened": "backlog items opened",
    "closed": "backlog items closed",
}


def print_maintenance_summary(console: Console, summary: dict[str, object]) -> None:
    """What the nightly run did, one line per figure (zeros included: "nothing" is news)."""
    table = Table("what", "count", title="Nightly maintenance", title_justify="left")
    for key, value in summary.items():
        table.add_row(_MAINTENANCE_LABELS.get(key, key.replace("_", " ")), str(value))
    console.print(table)
