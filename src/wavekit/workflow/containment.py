"""Containment: an anomaly suspends the access at risk at once, reversibly and on the record.

`contain` records a suspension bundle (the grants taken away, who, why, the checks that
fired), then removes those grants from the target and marks the bundle applied; the package
moves to Contained, where it stays live, watched and judged every night. From there a
release manager can

- `restore`: give the suspended grants back (read back to prove it) and return the package
  to where containment found it; the watch's analysis starts afresh from the restore;
- `roll_back`: restore the release's prior bundle exactly (suspended grants included);
- release it again (`wavekit release`): a new release, which supersedes this one once
  deployed.

Idempotent: a second `contain` for the same anomaly suspends nothing new, and a suspension
recorded but not yet applied (a crash in between) is applied by the next call.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import col, select

from wavekit.adapters.store import audit, suspensions
from wavekit.adapters.store.bundles import restrict
from wavekit.adapters.store.engine import get_one, session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import Release, RolePackage, Suspension
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.clock import as_utc
from wavekit.domain.containment import containment_scope, plan_suspension, who_to_suspend
from wavekit.domain.grants import Grant, GrantSet
from wavekit.domain.states import DEPLOYED, PackageState
from wavekit.workflow import rollback as rollback_domain
from wavekit.workflow.runtime import Runtime

S = PackageState


class NotContained(LookupError):
    """The package is not contained: there is nothing to restore."""


class RestoreUnproven(RuntimeError):
    """The target did not read back holding the restored grants; the package stays Contained."""


@dataclass
class ContainOutcome:
    package_key: str
    release_id: int
    reason: str
    scope: str
    identities: frozenset[str] = frozenset()
    suspended: GrantSet = frozenset()  # newly suspended by this call
    suspension_id: int | None = None  # None: nothing new to suspend
    applied: int = 0  # grants removed from the target by this call

    @property
    def new(self) -> bool:
        return self.suspension_id is not None

    def describe(self) -> str:
        """Who and what, for the owner."""
        if not self.suspended:
            return f"contained: {self.reason}; nothing new to suspend"
        who = ", ".join(sorted(self.identities))
        ents = sorted({g.entitlement for g in self.suspended})
        return (f"contained: {self.reason}. Suspended {len(self.suspended)} grant(s) of "
                f"{who} ({', '.join(ents)}); restore with `wavekit contain restore "
                f"{self.package_key}`, roll back with `wavekit rollback {self.package_key}`, "
                "or release it again")


@dataclass
class RestoreOutcome:
    package_key: str
    release_id: int
    state: str
    re_granted: int
    restored: GrantSet = field(default_factory=frozenset)
    identities: frozenset[str] = frozenset()

    def describe(self) -> str:
        who = ", ".join(sorted(self.identities)) or "nobody"
        return (f"restored: {len(self.restored)} suspended grant(s) of {who} given back "
                f"({self.re_granted} written); {S(self.state).label} again")


def live_release_id(rt: Runtime, package_key: str) -> int:
    """The package's deployed release that is not rolled back (what containment acts on)."""
    with session_scope(rt.database_url) as s:
        rid = s.exec(select(Release.id).where(
            Release.package_key == package_key, col(Release.deployed_at).is_not(None),
            col(Release.rolled_back_at).is_(None))
            .order_by(col(Release.id).desc())).first()
    if rid is None:
        raise LookupError(f"{package_key} has no live release to contain")
    return rid


def contain(rt: Runtime, release_id: int, reason: str, identities: Collection[str] = (), *,
            checks: Collection[str] = (), as_of: datetime | None = None,
            actor: str = "wavekit") -> ContainOutcome:
    """Suspend the grants at risk now and move the package to Contained (see the module)."""
    now = as_utc(as_of) if as_of else rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, release.package_key)
        view = load_package_view(s, pkg.key)
        state = S(pkg.state)
        scope = containment_scope(view.health)
        already: set[Grant] = set()
        for row in suspensions.suspensions(s, release_id, active_only=True):
            already |= suspensions.suspended_grants(s, row.id)
    who = who_to_suspend(view, identities, scope)
    live = restrict(rt.target.read_grants(view.entitlements), view.entitlements)
    grants = plan_suspension(view, live, who, frozenset(already))
    outcome = ContainOutcome(view.key, release_id, reason, scope,
                             frozenset(g.identity for g in grants) or who, grants)
    with session_scope(rt.database_url) as s:
        pkg = get_one(s, RolePackage, view.key)
        state = S(pkg.state)
        if state not in DEPLOYED:
            raise LookupError(f"{view.key} is {state.label}: nothing live to contain")
        if grants or state != S.CONTAINED:
            first = s.exec(select(Suspension).where(Suspension.release_id == release_id,
                                                    Suspension.lifted_at == None)  # noqa: E711
                           .order_by(col(Suspension.id))).first()
            row = suspensions.record_suspension(
                s, release_id=release_id, package_key=view.key, reason=reason, scope=scope,
                identities=outcome.identities, checks=checks,
                from_state=first.from_state if first else state.value, grants=grants, at=now)
            outcome.suspension_id = row.id
            audit.record(s, "package_contained", actor=actor, package_key=view.key,
                         wave=pkg.wave, release_id=release_id, at=now, reason=reason,
                         scope=scope, identities=sorted(outcome.identities),
                         grants=sorted(map(list, grants)), checks=sorted(checks),
                         suspension_id=row.id)
        if state != S.CONTAINED:
            transition(s, pkg, S.CONTAINED, outcome.describe(), actor=actor,
                       release_id=release_id, at=now)
        elif grants:
            pkg.state_reason = outcome.describe()
    outcome.applied = apply_pending(rt, release_id, now)
    return outcome


def apply_pending(rt: Runtime, release_id: int, at: datetime) -> int:
    """Remove the grants of every recorded, not yet applied suspension; returns how many."""
    removed = 0
    with session_scope(rt.database_url) as s:
        pending = [(r.id, suspensions.suspended_grants(s, r.id)) for r in
                   suspensions.suspensions(s, release_id, active_only=True)
                   if r.applied_at is None]
    for sid, grants in pending:
        if grants:
            removed += rt.target.apply([], grants, batch_size=rt.settings.batch_size).removed
        with session_scope(rt.database_url) as s:
            row = get_one(s, Suspension, sid)
            row.applied_at = at
            audit.record(s, "grants_suspended", package_key=row.package_key,
                         release_id=release_id, at=at, suspension_id=sid,
                         count=len(grants), identities=row.identities)
    return removed


def restore(rt: Runtime, package_key: str, *, actor: str = "release manager",
            reason: str = "restored by a release manager") -> RestoreOutcome:
    """Give a contained package's suspended grants back and return it to where containment
    found it (Watching, Stable or Needs tuning); raises NotContained or RestoreUnproven."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        pkg = s.get(RolePackage, package_key)
        if pkg is None or S(pkg.state) != S.CONTAINED:
            state = S(pkg.state).label if pkg else "not in the catalog"
            raise NotContained(f"{package_key} is {state}: nothing to restore")
        rows = s.exec(select(Suspension)
                      .join(Release, col(Release.id) == col(Suspension.release_id))
                      .where(Suspension.package_key == package_key,
                             col(Suspension.lifted_at).is_(None),
                             col(Release.rolled_back_at).is_(None))
                      .order_by(col(Suspension.id))).all()
        if not rows:
            raise NotContained(f"{package_key} has no suspended grants to restore")
        release_id, to_state = rows[0].release_id, S(rows[0].from_state)
        grants = frozenset().union(*(suspensions.suspended_grants(s, r.id) for r in rows))
        identities = frozenset().union(*(r.identities for r in rows))
    ents = frozenset(g.entitlement for g in grants)
    current = restrict(rt.target.read_grants(ents), ents)
    written = rt.target.apply(grants - current, [], batch_size=rt.settings.batch_size).added
    readback = restrict(rt.target.read_grants(ents), ents)
    missing = grants - readback
    with session_scope(rt.database_url) as s:
        audit.record(s, "containment_restored", actor=actor, package_key=package_key,
                     release_id=release_id, at=now, reason=reason, restored=len(grants),
                     re_granted=written, identities=sorted(identities),
                     missing=sorted(map(list, missing)), to_state=to_state.value)
        if missing:
            raise RestoreUnproven(f"{len(missing)} suspended grant(s) of {package_key} did not "
                                  "read back after the restore")
        suspensions.lift(s, release_id, by=actor, reason=reason, at=now)
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, package_key)
        release.analysis_from = now  # a fresh analysis, as after an Argo retry
        if to_state == S.WATCHING:
            release.next_check_at = None  # due at the next tick
        outcome = RestoreOutcome(package_key, release_id, to_state.value, written, grants,
                                 identities)
        transition(s, pkg, to_state, f"{outcome.describe()} ({reason})", actor=actor,
                   release_id=release_id, at=now)
        return outcome


def roll_back(rt: Runtime, package_key: str, *, actor: str = "release manager",
              reason: str = "rolled back from containment by a release manager"
              ) -> rollback_domain.RollbackOutcome:
    """Roll a contained package back to its release's prior bundle, without a flow run."""
    with session_scope(rt.database_url) as s:
        pkg = get_one(s, RolePackage, package_key)
        if pkg is None or S(pkg.state) != S.CONTAINED:
            state = S(pkg.state).label if pkg else "not in the catalog"
            raise NotContained(f"{package_key} is {state}, not contained")
    rid = live_release_id(rt, package_key)
    rollback_domain.begin_rollback(rt, rid, reason, actor)
    written = rollback_domain.restore_prior_bundle(rt, rid)
    return rollback_domain.verify_and_record(rt, rid, *written)
