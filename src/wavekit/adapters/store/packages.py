"""Read a role package from the store as a PackageView."""

from __future__ import annotations

from sqlmodel import Session, select

from wavekit.adapters.store.models import (
    PackageDependency,
    PackageEntitlement,
    PackageMember,
    RolePackage,
)
from wavekit.domain.packages import PackageView
from wavekit.domain.states import PackageState


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
        owner_email=pkg.owner_email, delegates=tuple(pkg.delegates or ()),
        approvals_required=pkg.approvals_required,
        approvals_from=tuple(pkg.approvals_from or ()),
        security_approvers=tuple(pkg.security_approvers or ()), members=frozenset(members),
        entitlements=frozenset(by_usage["grant"]), removes=frozenset(by_usage["remove"]),
        retires=frozenset(by_usage["retire"]), depends_on=tuple(sorted(deps)),
        watch_days=pkg.watch_days, health=dict(pkg.health or {}),
        fallback_plan=pkg.fallback_plan, fallback_drill=pkg.fallback_drill,
        rollback_only=pkg.rollback_only, retire_in_launch_window=pkg.retire_in_launch_window,
        guards=tuple(pkg.guards or ()), population_rule=pkg.population_rule,
        rollout=dict(pkg.rollout) if pkg.rollout else None,
    )


def package_keys_in_wave(session: Session, wave: int) -> list[str]:
    """Keys of the packages assigned to `wave`, in a stable order."""
    return list(session.exec(select(RolePackage.key).where(RolePackage.wave == wave)
                             .order_by(RolePackage.key)))
