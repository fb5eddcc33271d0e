"""Read a role package from the store as a PackageView."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from wavekit.adapters.store.models import (
    PackageDependency,
    PackageEntitlement,
    PackageMember,
    RolePackage,
)
from wavekit.domain.packages import PackageView
from wavekit.domain.states import PackageState

_CHUNK = 500  # keys per IN list, well under SQLite's bound-parameter limit


def load_package_view(session: Session, key: str) -> PackageView:
    """The package `key` as a PackageView; KeyError if the catalog has no such package."""
    view = load_package_views(session, [key]).get(key)
    if view is None:
        raise KeyError(f"no role package {key!r} in the store")
    return view


def load_package_views(session: Session, keys: Iterable[str]) -> dict[str, PackageView]:
    """The packages `keys` as PackageViews (key -> view), in four queries per 500 keys;
    keys the catalog does not hold are left out."""
    wanted = sorted(set(keys))
    views: dict[str, PackageView] = {}
    for i in range(0, len(wanted), _CHUNK):
        chunk = wanted[i:i + _CHUNK]
        usages: dict[str, dict[str, set[str]]] = {
            k: {"grant": set(), "remove": set(), "retire": set()} for k in chunk}
        members: dict[str, set[str]] = {k: set() for k in chunk}
        deps: dict[str, list[str]] = {k: [] for k in chunk}
        for key, entitlement, usage in session.exec(
                select(PackageEntitlement.package_key, PackageEntitlement.entitlement_key,
                       PackageEntitlement.usage)
                .where(col(PackageEntitlement.package_key).in_(chunk))):
            usages[key][usage].add(entitlement)
        for key, identity in session.exec(
                select(PackageMember.package_key, PackageMember.identity_id)
                .where(col(PackageMember.package_key).in_(chunk))):
            members[key].add(identity)
        for key, dep in session.exec(
                select(PackageDependency.package_key, PackageDependency.depends_on)
                .where(col(PackageDependency.package_key).in_(chunk))):
            deps[key].append(dep)
        for pkg in session.exec(select(RolePackage).where(col(RolePackage.key).in_(chunk))):
            by_usage = usages[pkg.key]
            views[pkg.key] = PackageView(
                key=pkg.key, name=pkg.name, state=PackageState(pkg.state), risk=pkg.risk,
                wave=pkg.wave, owner_name=pkg.owner_name, owner_slack_id=pkg.owner_slack_id,
                owner_email=pkg.owner_email, delegates=tuple(pkg.delegates or ()),
                approvals_required=pkg.approvals_required,
                approvals_from=tuple(pkg.approvals_from or ()),
                security_approvers=tuple(pkg.security_approvers or ()),
                members=frozenset(members[pkg.key]),
                entitlements=frozenset(by_usage["grant"]),
                removes=frozenset(by_usage["remove"]), retires=frozenset(by_usage["retire"]),
                depends_on=tuple(sorted(deps[pkg.key])), watch_days=pkg.watch_days,
                health=dict(pkg.health or {}), fallback_plan=pkg.fallback_plan,
                fallback_drill=pkg.fallback_drill, rollback_only=pkg.rollback_only,
                retire_in_launch_window=pkg.retire_in_launch_window,
                guards=tuple(pkg.guards or ()), population_rule=pkg.population_rule,
                rollout=dict(pkg.rollout) if pkg.rollout else None,
            )
    return views


def package_keys_in_wave(session: Session, wave: int) -> list[str]:
    """Keys of the packages assigned to `wave`, in a stable order."""
    return list(session.exec(select(RolePackage.key).where(RolePackage.wave == wave)
                             .order_by(RolePackage.key)))
