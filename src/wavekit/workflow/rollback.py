"""Rollback: restore a release's touched grants to the prior bundle, then prove it by reading
the target back. Durable and idempotent: it works from the stored bundle, so a re-run after a
crash simply finds less (or nothing) left to write.

Grants a containment suspended count as touched too: a member's grant that predates the
release and was suspended is given back, one the release added stays gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, col, select

from wavekit.adapters.store import audit, suspensions
from wavekit.adapters.store import cohorts as cohort_store
from wavekit.adapters.store.bundles import load_bundle, load_stored_values, restrict
from wavekit.adapters.store.engine import get_one, session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import Release, RolePackage
from wavekit.adapters.targets.base import Target, apply_restoring
from wavekit.domain.cohorts import restrict_plan
from wavekit.domain.grants import GrantSet
from wavekit.domain.planning import Plan, RestoreProof, plan_restore, prove_restore
from wavekit.domain.states import PackageState
from wavekit.workflow.failures import failure_recorded
from wavekit.workflow.runtime import Runtime

S = PackageState
log = logging.getLogger(__name__)


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
                                     col(Release.deploy_started_at).is_not(None))
        if release_id is not None:
            q = q.where(Release.id == release_id)
        found = s.exec(q.order_by(col(Release.id).desc())).first()
    if found is None:
        raise NothingToRollBack(f"{package_key} has no deployed release to roll back")
    return found


def begin_rollback(rt: Runtime, release_id: int, reason: str, actor: str = "wavekit") -> None:
    """Mark the package Rolling back (idempotent) and audit why."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, release.package_key)
        if S(pkg.state) != S.ROLLING_BACK:
            transition(s, pkg, S.ROLLING_BACK, reason, actor=actor, release_id=release_id,
                       at=now)
        release.rollback_reason = release.rollback_reason or reason
        release.next_check_at = None
        audit.record(s, "rollback_started", actor=actor, package_key=pkg.key, wave=pkg.wave,
                     release_id=release_id, at=now, reason=reason)


def _touched(s: Session, release_id: int, plan: Plan) -> GrantSet:
    """What rollback puts back: the plan's touched grants and every grant suspended since.

    A stepped release touched only the members its steps took up: exactly their grants go
    back, and a member of a later step is never written (whatever happened to them since).
    """
    granted = cohort_store.granted_members(s, release_id)
    out = set(plan.touched if granted is None else restrict_plan(plan, granted).touched)
    for row in suspensions.suspensions(s, release_id):
        out |= suspensions.suspended_grants(s, row.id)
    return frozenset(out)


# A read-back that differs is restored and read again this many times in all before the
# rollback is called unproven (a dropped write, a replica that lagged).
ROLLBACK_ROUNDS = 3


def restore_prior_bundle(rt: Runtime, release_id: int) -> tuple[int, int]:
    """Write what differs from the prior bundle; returns (re-granted, removed).

    Removed grants go back in the form the target stored them in (an LDAP member DN as it
    was read before the release). The target is read and written with no store transaction
    open; a failure is recorded (`stage_failed`) and re-raised.
    """
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        key, wave = release.package_key, release.wave
        plan = load_bundle(s, release_id, key)
        stored = load_stored_values(s, release_id)
        touched = _touched(s, release_id, plan) if plan is not None else frozenset()
    if plan is None:
        raise NothingToRollBack(f"release {release_id} has no recorded bundle")
    with failure_recorded(rt, "rollback_restore", key, release_id=release_id, wave=wave):
        current = restrict(rt.target.read_grants(plan.scope), plan.scope)
        restore = plan_restore(plan.prior, touched, current)
        result = apply_restoring(rt.target, restore.adds, restore.removes, stored,
                                 batch_size=rt.settings.batch_size)
    return result.added, result.removed


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


def verify_and_record(rt: Runtime, release_id: int, re_granted: int = 0, removed: int = 0,
                      *, rounds: int = ROLLBACK_ROUNDS) -> RollbackOutcome:
    """Read the target back, prove it equals the prior bundle, and mark the package.

    A read-back that differs is never called done: the difference is audited
    (`rollback_unproven`), the target restored and read again, up to `rounds` reads in all.
    Still different, the package stays Rolling back with the difference as its reason, the
    owner is alerted and RollbackUnproven is raised; the next rollback run tries again.
    """
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        key, wave = release.package_key, release.wave
        plan = load_bundle(s, release_id, key)
        touched = _touched(s, release_id, plan) if plan is not None else frozenset()
    if plan is None:
        raise NothingToRollBack(f"release {release_id} has no recorded bundle")
    for round_ in range(1, rounds + 1):
        with failure_recorded(rt, "rollback_verify", key, release_id=release_id, wave=wave):
            readback = restrict(rt.target.read_grants(plan.scope), plan.scope)
        proof = prove_restore(plan.prior, touched, readback)
        outcome = _record_proof(rt, release_id, plan, proof, re_granted, removed, round_,
                                last=round_ == rounds, touched=len(touched))
        if outcome is not None:
            return outcome
        if round_ < rounds:
            more = restore_prior_bundle(rt, release_id)
            re_granted, removed = re_granted + more[0], removed + more[1]
    _alert_unproven(rt, key, release_id, proof)
    raise RollbackUnproven(f"rollback of {key} unproven: {len(proof.mismatched)} grant(s) "
                           f"still differ from the prior bundle after {rounds} restores on "
                           f"{rt.target.name}; the package stays Rolling back, re-run the "
                           "rollback")


def _record_proof(rt: Runtime, release_id: int, plan: Plan, proof: RestoreProof,
                  re_granted: int, removed: int, round_: int, *, last: bool,
                  touched: int | None = None) -> RollbackOutcome | None:
    """Audit one read-back; mark the package Rolled back only when it is proven."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, release.package_key)
        audit.record(s, "rollback_verified", package_key=pkg.key, wave=pkg.wave,
                     release_id=release_id, at=now, prior_count=proof.prior_count,
                     readback_count=proof.readback_count, equal=proof.equal,
                     touched=len(plan.touched) if touched is None else touched,
                     touched_restored=proof.touched_restored,
                     re_granted=re_granted, removed=removed, round=round_,
                     mismatched=sorted(map(list, proof.mismatched)),
                     drift_outside=sorted(map(list, proof.drift_outside)))
        if not proof.touched_restored:
            shown = sorted(proof.mismatched)[:_SHOWN]
            audit.record(s, "rollback_unproven", package_key=pkg.key, wave=pkg.wave,
                         release_id=release_id, at=now, round=round_, final=last,
                         missing=sorted(map(list, plan.prior & proof.mismatched)),
                         unexpected=sorted(map(list, (plan.touched - plan.prior)
                                               & proof.mismatched)))
            if S(pkg.state) != S.ROLLING_BACK:
                transition(s, pkg, S.ROLLING_BACK, "rollback unproven", release_id=release_id,
                           at=now)
            pkg.state_reason = (f"rollback unproven ({'gave up' if last else 'retrying'}): "
                                f"{len(proof.mismatched)} grant(s) differ from the prior "
                                "bundle, e.g. " + ", ".join(f"{g.identity}@{g.entitlement}"
                                                            for g in shown))
            s.add(pkg)
            return None
        release.rolled_back_at = release.rolled_back_at or now
        release.closed = True
        suspensions.lift(s, release_id, by="rollback", reason="rolled back to the prior bundle",
                         at=now)
        if S(pkg.state) != S.ROLLED_BACK:
            transition(s, pkg, S.ROLLED_BACK, release.rollback_reason or "rolled back",
                       release_id=release_id, at=now)
        return RollbackOutcome(pkg.key, release_id, release.rollback_reason or "", re_granted,
                               removed, proof)


_SHOWN = 5  # grants named in a state reason; the audit event lists them all


def _alert_unproven(rt: Runtime, key: str, release_id: int, proof: RestoreProof) -> None:
    """Tell the owner and the channel that access is NOT back to the prior bundle."""
    from wavekit.workflow import notices  # notices imports this module

    with session_scope(rt.database_url) as s:
        reason = get_one(s, Release, release_id).rollback_reason or "rollback"
    outcome = RollbackOutcome(key, release_id, f"UNPROVEN ({reason})", 0, 0, proof)
    try:
        notices.notify_rollback(rt, outcome)
    except Exception:  # an alert that fails must not hide the unproven rollback
        log.exception("could not alert about the unproven rollback of %s", key)
