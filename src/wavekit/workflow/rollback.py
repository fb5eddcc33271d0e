"""Rollback: restore a release's touched grants to the prior bundle, then prove it by reading
the target back. Durable and idempotent: it works from the stored bundle, so a re-run after a
crash simply finds less (or nothing) left to write.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import select

from wavekit.adapters.store import audit
from wavekit.adapters.store.bundles import load_bundle, restrict
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import Release, RolePackage
from wavekit.adapters.targets.base import Target
from wavekit.domain.planning import Plan, RestoreProof, plan_restore, prove_restore
from wavekit.domain.states import PackageState
from wavekit.workflow.runtime import Runtime

S = PackageState


class NothingToRollBack(LookupError):
    """The package has no release with a recorded bundle."""


class RollbackUnproven(RuntimeError):
    """The target did not read back as the prior bundle; the package stays Rolling back."""


@dataclass
class RollbackOutcome:
    package_key: str
    release_id: int
    reason: str
    re_granted: int
    removed: int
    proof: RestoreProof


def find_release(rt: Runtime, package_key: str, release_id: int | None = None) -> int:
    """The release to roll back: the one given, or the package's latest that wrote anything."""
    with session_scope(rt.database_url) as s:
        q = select(Release.id).where(Release.package_key == package_key,
                                     Release.deploy_started_at.is_not(None))  # type: ignore[union-attr]
        if release_id is not None:
            q = q.where(Release.id == release_id)
        found = s.exec(q.order_by(Release.id.desc())).first()  # type: ignore[union-attr]
    if found is None:
        raise NothingToRollBack(f"{package_key} has no deployed release to roll back")
    return found


def begin_rollback(rt: Runtime, release_id: int, reason: str, actor: str = "wavekit") -> None:
    """Mark the package Rolling back (idempotent) and audit why."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        pkg = s.get(RolePackage, release.package_key)
        if S(pkg.state) != S.ROLLING_BACK:
            transition(s, pkg, S.ROLLING_BACK, reason, actor=actor, release_id=release_id,
                       at=now)
        release.rollback_reason = release.rollback_reason or reason
        release.next_check_at = None
        audit.record(s, "rollback_started", actor=actor, package_key=pkg.key, wave=pkg.wave,
                     release_id=release_id, at=now, reason=reason)


def restore_prior_bundle(rt: Runtime, release_id: int) -> tuple[int, int]:
    """Write what differs from the prior bundle; returns (re-granted, removed)."""
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        plan = load_bundle(s, release_id, release.package_key)
    if plan is None:
        raise NothingToRollBack(f"release {release_id} has no recorded bundle")
    return restore_on(rt.target, plan, rt.settings.batch_size)


def restore_on(target: Target, plan: Plan, batch_size: int) -> tuple[int, int]:
    """The rollback's writes on `target`: the plan's touched grants back to its prior bundle
    (re-granted, removed). Shared by rollbacks and rollback drills."""
    current = restrict(target.read_grants(plan.scope), plan.scope)
    restore = plan_restore(plan.prior, plan.touched, current)
    result = target.apply(restore.adds, restore.removes, batch_size=batch_size)
    return result.added, result.removed


def read_back(target: Target, plan: Plan) -> RestoreProof:
    """Read the plan's scope back from `target` and compare it with the prior bundle."""
    readback = restrict(target.read_grants(plan.scope), plan.scope)
    return prove_restore(plan.prior, plan.touched, readback)


def verify_and_record(rt: Runtime, release_id: int, re_granted: int = 0, removed: int = 0
                      ) -> RollbackOutcome:
    """Read the target back, prove it equals the prior bundle, and mark the package."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        plan = load_bundle(s, release_id, release.package_key)
    proof = read_back(rt.target, plan)
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        pkg = s.get(RolePackage, release.package_key)
        audit.record(s, "rollback_verified", package_key=pkg.key, wave=pkg.wave,
                     release_id=release_id, at=now, prior_count=proof.prior_count,
                     readback_count=proof.readback_count, equal=proof.equal,
                     touched=len(plan.touched), touched_restored=proof.touched_restored,
                     re_granted=re_granted, removed=removed,
                     mismatched=sorted(map(list, proof.mismatched)),
                     drift_outside=sorted(map(list, proof.drift_outside)))
        if not proof.touched_restored:
            raise RollbackUnproven(f"{len(proof.mismatched)} grant(s) differ from the prior "
                                   f"bundle after rollback of {pkg.key}")
        release.rolled_back_at = release.rolled_back_at or now
        release.closed = True
        if S(pkg.state) != S.ROLLED_BACK:
            transition(s, pkg, S.ROLLED_BACK, release.rollback_reason or "rolled back",
                       release_id=release_id, at=now)
        return RollbackOutcome(pkg.key, release_id, release.rollback_reason or "", re_granted,
                               removed, proof)
