"""Rich tables for the terminal: wave plans and package status."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from sqlmodel import func, select

from wavekit.models import PackageEntitlement, PackageMember, RolePackage
from wavekit.packages import load_package_view, package_keys_in_wave
from wavekit.planning import Plan, plan_package
from wavekit.runtime import Runtime
from wavekit.states import PackageState
from wavekit.store import session_scope


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


def status_rows(database_url: str) -> list[dict]:
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


def print_status(console: Console, database_url: str) -> None:
    table = Table(title="Role packages", title_justify="left")
    for col, just in (("wave", "right"), ("package", "left"), ("members", "right"),
                      ("entitlements", "right"), ("risk", "left"), ("state", "left"),
                      ("reason", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in status_rows(database_url):
        table.add_row(str(r["wave"] or "—"), r["name"], str(r["members"]),
                      str(r["entitlements"]), r["risk"], r["state"], r["reason"])
    console.print(table)
