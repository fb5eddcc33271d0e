"""Which packages a wave run takes up, and in what order (dependencies first)."""

from __future__ import annotations

from graphlib import TopologicalSorter

from sqlmodel import Session, col, select

from wavekit.adapters.store.models import PackageDependency, RolePackage


class UnknownPackages(ValueError):
    """The run asked for packages the wave does not hold."""


def wave_schedule(session: Session, wave: int, packages: list[str] | None = None
                  ) -> dict[str, list[str]]:
    """package -> the packages of the same run it must wait for, in dependency order."""
    in_wave = list(session.exec(select(RolePackage.key).where(RolePackage.wave == wave)
                                .order_by(RolePackage.key)))
    if packages:
        unknown = sorted(set(packages) - set(in_wave))
        if unknown:
            raise UnknownPackages(f"not in wave {wave}: {', '.join(unknown)}")
        in_wave = [k for k in in_wave if k in set(packages)]
    deps = session.exec(select(PackageDependency).where(
        col(PackageDependency.package_key).in_(in_wave)))
    waits: dict[str, list[str]] = {k: [] for k in in_wave}
    for d in deps:
        if d.depends_on in waits:
            waits[d.package_key].append(d.depends_on)
    order = TopologicalSorter(waits).static_order()  # the catalog already refused cycles
    return {k: sorted(waits[k]) for k in order}


def plan_wave_order(database_url: str, wave: int, packages: list[str] | None = None
                    ) -> dict[str, list[str]]:
    """wave_schedule, reading the store at `database_url`."""
    from wavekit.adapters.store.engine import session_scope

    with session_scope(database_url) as s:
        return wave_schedule(s, wave, packages)
