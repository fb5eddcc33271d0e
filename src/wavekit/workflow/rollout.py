"""Rolling a package out, stage by stage: the domain the wave flow's tasks call.

Each function opens its own transaction, checks the state machine, records an audit event
and returns a plain value. Everything is keyed by release so a re-run picks up where a
crash left off: the prior bundle is frozen once the first write has started, and applying
the same plan twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session, select

from wavekit.adapters.store import audit
from wavekit.adapters.store.bundles import load_bundle, record_bundle
from wavekit.adapters.store.drills import drill_records
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import Approval, Release, RolePackage, SodRule
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.base import BatchResult, ProgressCallback
from wavekit.domain.decisions import STORED_DECISION
from wavekit.domain.gates import GateContext, GateResult, SodRuleView, check_gates, failed
from wavekit.domain.grants import GrantSet
from wavekit.domain.health import checks_for, next_due
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import Plan, plan_package
from wavekit.domain.states import RELEASABLE, PackageState
from wavekit.workflow.runtime import Runtime

S = PackageState


@dataclass
class StageOutcome:
    package_key: str
    release_id: int | None = None
    skipped: str | None = None  # why the package was not taken up
    held: str | None = None  # why staging held it
    counts: dict[str, int] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    resuming_deploy: bool = False
    approved: bool = False


@dataclass
class HandoffRequest:
    approval_id: int
    decided: str | None  # approved | rejected | timeout, if already decided
    deadline: datetime | None
    reason: str = ""
    # An earlier run that was waiting for this same decision: the new run takes over.
    superseded_run: str | None = None


@dataclass
class DeployOutcome:
    release_id: int
    added: int
    removed: int
    unchanged: int
    batches: int
    watch_ends_at: datetime
    next_check_at: datetime | None


def open_release(session: Session, pkg: RolePackage, *, wave: int | None, target: str,
                 flow_run_id: str | None, triggered_by: str | None, now: datetime) -> Release:
    """The package's open release, or a new one."""
    release = session.exec(select(Release).where(Release.package_key == pkg.key,
                                                 Release.closed == False)  # noqa: E712
                           .order_by(Release.id.desc())).first()  # type: ignore[union-attr]
    if release is None:
        release = Release(package_key=pkg.key, wave=wave, target=target, started_at=now,
                          flow_run_id=flow_run_id, triggered_by=triggered_by)
        session.add(release)
        session.flush()
    else:
        release.flow_run_id = flow_run_id or release.flow_run_id
        release.triggered_by = triggered_by or release.triggered_by
    return release


def gate_context(session: Session, rt: Runtime, pkg: PackageView, plan: Plan) -> GateContext:
    """Gather what the gates need: dependency states, SoD rules and the holdings they judge."""
    dep_states = {k: S(st) for k, st in session.exec(
        select(RolePackage.key, RolePackage.state)
        .where(RolePackage.key.in_(pkg.depends_on)))}  # type: ignore[attr-defined]
    rules = [SodRuleView(r.key, r.entitlement_a, r.entitlement_b, r.description)
             for r in session.exec(select(SodRule))
             if {r.entitlement_a, r.entitlement_b} & pkg.entitlements]
    holdings: GrantSet = frozenset()
    if rules:
        holdings = rt.target.read_grants({e for r in rules for e in
                                          (r.entitlement_a, r.entitlement_b)})
    return GateContext(plan=plan, dependency_states=dep_states, sod_rules=rules,
                       sod_holdings=holdings, enforced_guards=rt.settings.enforced_guard_set,
                       drills=drill_records(session, [pkg.key]).get(pkg.key, ()),
                       as_of=rt.clock.now(), review_cadence_days=rt.settings.review_cadence_days)


def stage_package(rt: Runtime, key: str, *, wave: int | None, flow_run_id: str | None = None,
                  triggered_by: str | None = None, dry_run: bool = False) -> StageOutcome:
    """Compute the plan, snapshot the prior bundle and preview the gates."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        pkg = s.get(RolePackage, key)
        if pkg is None:
            return StageOutcome(key, skipped=f"no package {key!r} in the catalog")
        state = S(pkg.state)
        if pkg.rollback_only:
            return StageOutcome(key, skipped="rollback-only package: it never deploys")
        if state not in RELEASABLE:
            return StageOutcome(key, skipped=f"already {state.label}")
        view = load_package_view(s, key)
        if dry_run:
            plan = plan_package(view, rt.target.read_grants(view.scope))
            return StageOutcome(key, counts=plan.counts(),
                                gates=check_gates(view, gate_context(s, rt, view, plan)))
        release = open_release(s, pkg, wave=wave, target=rt.target.name,
                               flow_run_id=flow_run_id, triggered_by=triggered_by, now=now)
        resuming = release.deploy_started_at is not None
        if resuming:
            plan = load_bundle(s, release.id, key)  # frozen: the target holds partial writes
            assert plan is not None
        else:
            plan = plan_package(view, rt.target.read_grants(view.scope))
            record_bundle(s, release.id, plan)
        release.adds, release.removes, release.retirements = (
            len(plan.adds), len(plan.removes), len(plan.retirements))
        gates = check_gates(view, gate_context(s, rt, view, plan))
        audit.record(s, "plan_staged", package_key=key, wave=wave, release_id=release.id,
                     flow_run_id=flow_run_id, at=now, **plan.counts(),
                     prior=len(plan.prior), resuming=resuming)
        outcome = StageOutcome(key, release.id, counts=plan.counts(), gates=gates,
                               resuming_deploy=resuming, approved=release.approved_at is not None)
        if not resuming and (bad := failed(gates)):
            reason = "; ".join(f"{g.name}: {g.reason}" for g in bad)
            audit.record(s, "gates_checked", package_key=key, wave=wave, release_id=release.id,
                         at=now, stage="stage", results=[g.__dict__ for g in gates])
            _hold(s, pkg, release, reason, now, [g.name for g in bad])
            outcome.held = reason
        return outcome


def _hold(s: Session, pkg: RolePackage, release: Release, reason: str, now: datetime,
          failed_gates: list[str] | None = None) -> None:
    """Hold the package; `failed_gates` records, as data, which gates held it (if any)."""
    if S(pkg.state) != S.HELD:
        transition(s, pkg, S.HELD, reason, release_id=release.id, at=now)
    else:
        pkg.state_reason = reason
    audit.record(s, "held", package_key=pkg.key, wave=pkg.wave, release_id=release.id, at=now,
                 reason=reason, failed_gates=sorted(failed_gates or []))
    release.closed = True  # the next run opens a fresh release with a fresh plan


def request_handoff(rt: Runtime, release_id: int) -> HandoffRequest:
    """Move the package to Awaiting handoff and open (or find) its approval request."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        pkg = s.get(RolePackage, release.package_key)
        approval = s.exec(select(Approval).where(Approval.release_id == release_id)
                          .order_by(Approval.id.desc())).first()  # type: ignore[union-attr]
        superseded: str | None = None
        if approval is None:
            deadline = now + timedelta(hours=rt.settings.approval_deadline_hours)
            approval = Approval(release_id=release_id, package_key=pkg.key, requested_at=now,
                                deadline=deadline, flow_run_id=release.flow_run_id,
                                channel="slack" if rt.notifier else "prefect-ui")
            s.add(approval)
            s.flush()
            audit.record(s, "approval_requested", package_key=pkg.key, wave=pkg.wave,
                         release_id=release_id, flow_run_id=release.flow_run_id, at=now,
                         approval_id=approval.id, deadline=deadline.isoformat(),
                         owner=pkg.owner_name)
        else:
            if (approval.decision is None and approval.flow_run_id and release.flow_run_id
                    and approval.flow_run_id != release.flow_run_id):
                superseded = approval.flow_run_id
            approval.flow_run_id = release.flow_run_id or approval.flow_run_id
        if S(pkg.state) != S.AWAITING_HANDOFF:
            transition(s, pkg, S.AWAITING_HANDOFF, f"waiting for {pkg.owner_name} to approve",
                       release_id=release_id, at=now)
        return HandoffRequest(approval.id, approval.decision, approval.deadline,
                              superseded_run=superseded)


def record_decision(rt: Runtime, approval_id: int, decision: str, approver: str,
                    comment: str = "", channel: str = "prefect-ui") -> str:
    """Store the owner's decision (unless one is already stored) and apply it to the package.

    The store is the source of truth: a decision recorded by the Slack receiver before the
    run resumed wins over the run input. Returns approved | rejected | timeout.
    """
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        approval = s.get(Approval, approval_id)
        release = s.get(Release, approval.release_id)
        pkg = s.get(RolePackage, approval.package_key)
        if approval.decision is None:
            approval.decision = STORED_DECISION.get(decision, decision)
            approval.approver, approval.comment, approval.decided_at = approver, comment, now
            approval.channel = channel
            audit.record(s, "approval_decided", actor=approver or "unknown",
                         package_key=pkg.key, wave=pkg.wave, release_id=release.id, at=now,
                         decision=decision, approver=approver, comment=comment, channel=channel)
        final = approval.decision
        if final == "approved":
            release.approved_at = release.approved_at or approval.decided_at or now
            release.approved_by = approval.approver
        elif S(pkg.state) == S.AWAITING_HANDOFF:
            why = ("approval deadline passed without a decision" if final == "timeout" else
                   f"rejected by {approval.approver}: {approval.comment or 'no reason given'}")
            _hold(s, pkg, release, why, now)
        return final


def enforce_gates(rt: Runtime, release_id: int) -> list[GateResult]:
    """Run every gate against the current state; hold the package if one fails."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        pkg = s.get(RolePackage, release.package_key)
        view = load_package_view(s, pkg.key)
        plan = load_bundle(s, release_id, pkg.key)
        results = check_gates(view, gate_context(s, rt, view, plan))
        audit.record(s, "gates_checked", package_key=pkg.key, wave=pkg.wave,
                     release_id=release_id, at=now, stage="dependency_checks",
                     results=[r.__dict__ for r in results])
        if bad := failed(results):
            _hold(s, pkg, release, "; ".join(f"{g.name}: {g.reason}" for g in bad), now,
                  [g.name for g in bad])
        return results


def deploy_package(rt: Runtime, release_id: int,
                   on_batch: ProgressCallback | None = None) -> DeployOutcome:
    """Apply the plan's adds and removes in batches; record the prior bundle before writing."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        pkg = s.get(RolePackage, release.package_key)
        view = load_package_view(s, pkg.key)
        if release.deploy_started_at is None:
            # Re-read just before the first write: the approval may have taken hours.
            plan = plan_package(view, rt.target.read_grants(view.scope))
            record_bundle(s, release_id, plan)
            release.deploy_started_at = now
            release.adds, release.removes, release.retirements = (
                len(plan.adds), len(plan.removes), len(plan.retirements))
        else:
            plan = load_bundle(s, release_id, pkg.key)
        if S(pkg.state) != S.DEPLOYING:
            transition(s, pkg, S.DEPLOYING, f"applying {len(plan.adds)} adds and "
                       f"{len(plan.removes)} removes to {rt.target.name}",
                       release_id=release_id, at=now)
    assert plan is not None

    def record_batch(batch: BatchResult) -> None:
        with session_scope(rt.database_url) as bs:
            rel = bs.get(Release, release_id)
            rel.applied_batches += 1
            audit.record(bs, "deploy_batch", package_key=view.key, release_id=release_id,
                         index=batch.index, added=batch.added, removed=batch.removed,
                         unchanged=batch.unchanged)
        if on_batch:
            on_batch(batch)

    result = rt.target.apply(plan.adds, plan.removes, batch_size=rt.settings.batch_size,
                             on_batch=record_batch)
    done = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        pkg = s.get(RolePackage, release.package_key)
        release.deployed_at = done
        release.watch_ends_at = done + timedelta(days=view.watch_days)
        release.next_check_at = next_due(checks_for(view.health), done, release.watch_ends_at,
                                         done - timedelta(microseconds=1))
        audit.record(s, "deployed", package_key=pkg.key, wave=pkg.wave, release_id=release_id,
                     at=done, added=result.added, removed=result.removed,
                     unchanged=result.unchanged, batches=len(result.batches))
        transition(s, pkg, S.WATCHING, f"watching for {view.watch_days} days",
                   release_id=release_id, at=done)
        return DeployOutcome(release_id, result.added, result.removed, result.unchanged,
                             len(result.batches), release.watch_ends_at, release.next_check_at)


def retire_legacy(rt: Runtime, release_id: int) -> int:
    """Remove the legacy grants the package supersedes; returns how many were removed."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        plan = load_bundle(s, release_id, release.package_key)
        if release.legacy_retired_at is not None or plan is None or not plan.retirements:
            return 0
    result = rt.target.apply([], plan.retirements, batch_size=rt.settings.batch_size)
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        release.legacy_retired_at = now
        audit.record(s, "legacy_retired", package_key=release.package_key,
                     release_id=release_id, at=now, count=result.removed,
                     planned=len(plan.retirements))
    return result.removed


def releases_awaiting_retirement(rt: Runtime) -> list[int]:
    """Stable releases whose legacy grants are still in place."""
    with session_scope(rt.database_url) as s:
        rows = s.exec(select(Release.id).join(RolePackage, RolePackage.key == Release.package_key)
                      .where(RolePackage.state == S.STABLE, Release.stable_at.is_not(None),  # type: ignore[union-attr]
                             Release.legacy_retired_at.is_(None),  # type: ignore[union-attr]
                             Release.retirements > 0, Release.rolled_back_at.is_(None)))  # type: ignore[union-attr]
        return list(rows)


def package_state(rt: Runtime, key: str) -> tuple[str, str]:
    """(state, reason) of a package, as the store has it now."""
    with session_scope(rt.database_url) as s:
        pkg = s.get(RolePackage, key)
        return (pkg.state, pkg.state_reason) if pkg else ("unknown", "")


def launch_retirement_due(rt: Runtime, release_id: int) -> bool:
    """A watched release of a launch-window package whose legacy grants are still in place."""
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        if release is None or release.legacy_retired_at is not None or not release.retirements:
            return False
        pkg = s.get(RolePackage, release.package_key)
        return bool(pkg and pkg.retire_in_launch_window and S(pkg.state) == S.WATCHING)


def launch_retirements_due(rt: Runtime, key: str) -> list[int]:
    """The package's open release, when its launch-window retirement is still undone (a
    process killed between deploy and retirement leaves exactly this)."""
    rid = open_release_id(rt, key)
    return [rid] if rid is not None and launch_retirement_due(rt, rid) else []


def dependents_ready(rt: Runtime, stable_key: str) -> dict[int, list[str]]:
    """Held packages that waited only for dependencies, all of which are now Stable.

    Returns wave -> package keys, for the watch to release once `stable_key` turns Stable.
    """
    from wavekit.adapters.store.models import AuditEvent, PackageDependency

    with session_scope(rt.database_url) as s:
        waiting = s.exec(select(PackageDependency.package_key)
                         .where(PackageDependency.depends_on == stable_key)).all()
        ready: dict[int, list[str]] = {}
        for key in sorted(set(waiting)):
            pkg = s.get(RolePackage, key)
            if pkg is None or pkg.wave is None or S(pkg.state) != S.HELD:
                continue
            last_hold = s.exec(select(AuditEvent).where(AuditEvent.package_key == key,
                                                        AuditEvent.action == "held")
                               .order_by(AuditEvent.id.desc())).first()  # type: ignore[union-attr]
            if last_hold is None or last_hold.detail.get("failed_gates") != [
                    "dependencies_stable"]:
                continue  # held (also) for another reason: a human decides
            deps = s.exec(select(RolePackage.state).join(
                PackageDependency, PackageDependency.depends_on == RolePackage.key)
                .where(PackageDependency.package_key == key)).all()
            if all(S(d) == S.STABLE for d in deps):
                ready.setdefault(pkg.wave, []).append(key)
                audit.record(s, "dependents_ready", package_key=key, wave=pkg.wave,
                             after=stable_key)
        return ready


# ------------------------------------------------------------------ what the flows ask


HandoffStep = str  # decided | suspend | pause | leave


def handoff_step(request: HandoffRequest, *, resumable: bool, wait: bool) -> HandoffStep:
    """How a package run waits for its owner.

    decided  a decision is already stored (made while no run was waiting): apply it
    suspend  a deployment run: give the worker slot back; the decision resumes the run
    pause    an ad-hoc run that was asked to wait (tests, the demo): block until decided
    leave    an ad-hoc run that must not block: the package stays Awaiting handoff and a
             later run of the same wave picks the decision up
    """
    if request.decided is not None:
        return "decided"
    if resumable:
        return "suspend"
    return "pause" if wait else "leave"


# The suspended run outlives the deadline a little, so the deadline sweep (which records the
# timeout and resumes the run) always acts before Prefect would expire the pause itself.
SUSPEND_GRACE = timedelta(hours=1)


def handoff_timeout_seconds(rt: Runtime, request: HandoffRequest, step: HandoffStep) -> int:
    """Seconds the run waits for its owner: to the deadline, plus grace when suspended."""
    deadline = request.deadline or rt.clock.now()
    left = (deadline - rt.clock.now()).total_seconds()
    if step == "suspend":
        left += SUSPEND_GRACE.total_seconds()
    return max(1, int(left))


def apply_stored_decision(rt: Runtime, approval_id: int) -> str:
    """Apply a decision stored while no run was waiting, exactly as if it had arrived live."""
    with session_scope(rt.database_url) as s:
        approval = s.get(Approval, approval_id)
        if approval is None or approval.decision is None:
            raise LookupError(f"approval #{approval_id} has no stored decision")
        decision, approver = approval.decision, approval.approver
    return record_decision(rt, approval_id, decision, approver or "")


@dataclass(frozen=True)
class PackageOutcome:
    """How a package run ends, for its Prefect state: success or not, with the reason."""

    package_key: str
    state: str
    reason: str
    ok: bool

    @property
    def label(self) -> str:
        return S(self.state).label if self.state in S._value2member_map_ else self.state


# A run that ends with its package in one of these did what it was asked: it is a success.
_OK_STATES = frozenset({S.WATCHING, S.STABLE, S.AWAITING_HANDOFF, S.RELEASE_READY})


def package_outcome(rt: Runtime, key: str) -> PackageOutcome:
    """The package's state after a run: a hold, rejection or timeout is not a success."""
    state, reason = package_state(rt, key)
    ok = state in _OK_STATES
    return PackageOutcome(key, state, reason, ok)


def dry_run_wave(rt: Runtime, wave: int, keys: list[str]) -> list[dict[str, object]]:
    """Each package's plan counts and failing gates; nothing is written."""
    rows: list[dict[str, object]] = []
    for key in keys:
        o = stage_package(rt, key, wave=wave, dry_run=True)
        rows.append({"package": key, **o.counts, "skipped": o.skipped or "",
                     "failed gates": ", ".join(g.name for g in o.gates if not g.passed)})
    return rows


def open_release_id(rt: Runtime, key: str) -> int | None:
    """The package's open release, if it has one."""
    with session_scope(rt.database_url) as s:
        return s.exec(select(Release.id).where(Release.package_key == key,
                                               Release.closed == False)  # noqa: E712
                      .order_by(Release.id.desc())).first()  # type: ignore[union-attr]
