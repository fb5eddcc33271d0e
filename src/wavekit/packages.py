"""Read a role package with its members, entitlements and dependencies as one plain value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, select

from wavekit.models import PackageDependency, PackageEntitlement, PackageMember, RolePackage
from wavekit.states import PackageState


@dataclass(frozen=True)
class PackageView:
    """Everything planning, gates and health need about a package, detached from the store."""

    key: str
    name: str
    state: PackageState
    risk: str = "low"
    wave: int | None = None
    owner_name: str = ""
    owner_slack_id: str | None = None
    delegates: tuple[dict[str, str], ...] = ()
    members: frozenset[str] = frozenset()
    entitlements: frozenset[str] = frozenset()
    removes: frozenset[str] = frozenset()
    retires: frozenset[str] = frozenset()
    depends_on: tuple[str, ...] = ()
    watch_days: int = 14
    health: dict[str, Any] = field(default_factory=dict)
    fallback_plan: str = ""
    fallback_drill: str = "pending"
    rollback_only: bool = False
    retire_in_launch_window: bool = False
    guards: tuple[str, ...] = ()
    population_rule: str | None = None

    @property
    def scope(self) -> frozenset[str]:
        """Every entitlement the package reads or writes on the target."""
        return self.entitlements | self.removes | self.retires

    @property
    def approvers(self) -> frozenset[str]:
        """Slack ids allowed to decide the owner handoff: the owner and the delegates."""
        ids = {self.owner_slack_id} | {d.get("slack_id") for d in self.delegates}
        return frozenset(i for i in ids if i)


def load_package_view(session: Session, key: str) -> PackageView:
    """The package `key` as a PackageView; KeyError if the catalog has no such package."""
    pkg = session.get(RolePackage, key)
    if pkg is None:
        raise KeyError(f"no role package {key!r} in the store")
    links = session.exec(select(PackageEntitlement).where(PackageEntitlement.package_key == key))
    by_usage: dict[str, set[str]] = {"grant": set(), "remove": set(), "retire": set()}
    for link in links:
        by_usage[link.usage].add(link.entitlement_key)
    members = session.exec(select(PackageMember.identity_id)
                           .where(PackageMember.package_key == key))
    deps = session.exec(select(PackageDependency.depends_on)
                        .where(PackageDependency.package_key == key))
    return PackageView(
        key=pkg.key, name=pkg.name, state=PackageState(pkg.state), risk=pkg.risk, wave=pkg.wave,
        owner_name=pkg.owner_name, owner_slack_id=pkg.owner_slack_id,
        delegates=tuple(pkg.delegates or ()), members=frozenset(members),
        entitlements=frozenset(by_usage["grant"]), removes=frozenset(by_usage["remove"]),
        retires=frozenset(by_usage["retire"]), depends_on=tuple(sorted(deps)),
        watch_days=pkg.watch_days, health=dict(pkg.health or {}),
        fallback_plan=pkg.fallback_plan, fallback_drill=pkg.fallback_drill,
        rollback_only=pkg.rollback_only, retire_in_launch_window=pkg.retire_in_launch_window,
        guards=tuple(pkg.guards or ()), population_rule=pkg.population_rule,
    )


def package_keys_in_wave(session: Session, wave: int) -> list[str]:
    """Keys of the packages assigned to `wave`, in a stable order."""
    return list(session.exec(select(RolePackage.key).where(RolePackage.wave == wave)
                             .order_by(RolePackage.key)))
