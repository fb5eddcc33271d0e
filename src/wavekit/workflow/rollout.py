"""Rolling a package out, stage by stage: the domain the wave flow's tasks call.

Each function opens its own transaction, checks the state machine, records an audit event
and returns a plain value. Everything is keyed by release so a re-run picks up where a
crash left off: the prior bundle is frozen once the first write has started, and applying
the same plan twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from wavekit.adapters.store import audit, suspensions
from wavekit.adapters.store.approvals import last_form_refusal, settle, time_out
from wavekit.adapters.store.bundles import load_bundle, record_bundle
from wavekit.adapters.store.drills import drill_records
from wavekit.adapters.store.engine import get_one, session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import (
    Approval,
    HealthCheckResult,
    Release,
    RolePackage,
    SodRule,
    Suspension,
)
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.store.waves import plan_wave_order
from wavekit.adapters.targets.base import BatchResult, ProgressCallback, read_snapshot
from wavekit.domain.decisions import Click, Proof, Ruling
from wavekit.domain.drills import DrillRecord
from wavekit.domain.gates import GateContext, GateResult, SodRuleView, check_gates, failed
from wavekit.domain.grants import GrantSet
from wavekit.domain.health import Verdict, assess_health, checks_for, next_due
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import Plan, plan_package
from wavekit.domain.retirement import RetirementFacts, retirement_due
from wavekit.domain.states import RELEASABLE, PackageState
from wavekit.workflow import cohorts
from wavekit.workflow.failures import failure_recorded
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


def _current_open_release(session: Session, pkg: RolePackage) -> Release | None:
    """The open release staging would continue (one rule for staging and its resume check).

    A contained package's deployed release stays open (it is still watched), so it is never
    the one a new release continues.
    """
    q = select(Release).where(Release.package_key == pkg.key, Release.closed == False)  # noqa: E712
    if S(pkg.state) == S.CONTAINED:
        q = q.where(col(Release.deployed_at).is_(None))
    return session.exec(q.order_by(col(Release.id).desc())).first()


def open_release(session: Session, pkg: RolePackage, *, wave: int | None, target: str,
                 flow_run_id: str | None, triggered_by: str | None, now: datetime) -> Release:
    """The package's open release, or a new one.

    A contained package's deployed release stays open (it is still watched): releasing the
    package again opens a new release beside it, which supersedes it once deployed.
    """
    release = _current_open_release(session, pkg)
    if release is None:
        release = Release(package_key=pkg.key, wave=wave, target=target, started_at=now,
                          flow_run_id=flow_run_id, triggered_by=triggered_by)
        session.add(release)
        session.flush()
    else:
        release.flow_run_id = flow_run_id or release.flow_run_id
        release.triggered_by = triggered_by or release.triggered_by
    return release


@dataclass(frozen=True)
class GateFacts:
    """What the gates need from the store: dependency states and the SoD rules in play."""

    dependency_states: dict[str, PackageState]
    rules: list[SodRuleView]
    drills: tuple[DrillRecord, ...] = ()  # the package's recorded rollback drills

    @property
    def sod_entitlements(self) -> set[str]:
        """The entitlements whose holders the SoD gate judges (read from the target)."""
        return {e for r in self.rules for e in (r.entitlement_a, r.entitlement_b)}


def gate_facts(session: Session, pkg: PackageView) -> GateFacts:
    """The store's part of the gate context (no target read: that happens outside)."""
    dep_states = {k: S(st) for k, st in session.exec(
        select(RolePackage.key, RolePackage.state)
        .where(col(RolePackage.key).in_(pkg.depends_on)))}
    rules = [SodRuleView(r.key, r.entitlement_a, r.entitlement_b, r.description)
             for r in session.exec(select(SodRule))
             if {r.entitlement_a, r.entitlement_b} & pkg.entitlements]
    return GateFacts(dep_states, rules, drill_records(session, [pkg.key]).get(pkg.key, ()))


def read_holdings(rt: Runtime, facts: GateFacts) -> GrantSet:
    """The SoD holdings, read from the target: call it with no store transaction open."""
    wanted = facts.sod_entitlements
    return rt.target.read_grants(wanted) if wanted else frozenset()


def gate_context(rt: Runtime, facts: GateFacts, plan: Plan, holdings: GrantSet) -> GateContext:
    """Gather what the gates need: dependency states, SoD rules and the holdings they judge."""
    return GateContext(plan=plan, dependency_states=facts.dependency_states,
                       sod_rules=facts.rules, sod_holdings=holdings,
                       enforced_guards=rt.settings.enforced_guard_set, drills=facts.drills,
                       as_of=rt.clock.now(), review_cadence_days=rt.settings.review_cadence_days)


def stage_package(rt: Runtime, key: str, *, wave: int | None, flow_run_id: str | None = None,
                  triggered_by: str | None = None, dry_run: bool = False) -> StageOutcome:
    """Compute the plan, snapshot the prior bundle and preview the gates.

    The target is read with no store transaction open (a slow directory never holds the
    store's write lock): first the store is read, then the target, then one write
    transaction checks that nothing moved and records the plan.
    """
    with failure_recorded(rt, "stage", key, wave=wave):
        return _stage(rt, key, wave=wave, flow_run_id=flow_run_id, triggered_by=triggered_by,
                      dry_run=dry_run)


def _skip_reason(pkg: RolePackage | None, key: str) -> str | None:
    if pkg is None:
        return f"no package {key!r} in the catalog"
    if pkg.rollback_only:
        return "rollback-only package: it never deploys"
    if S(pkg.state) not in RELEASABLE:
        return f"already {S(pkg.state).label}"
    return None


def _open_release_resuming(s: Session, pkg: RolePackage) -> bool:
    release = _current_open_release(s, pkg)
    return release is not None and release.deploy_started_at is not None


def _stage(rt: Runtime, key: str, *, wave: int | None, flow_run_id: str | None,
           triggered_by: str | None, dry_run: bool) -> StageOutcome:
    with session_scope(rt.database_url) as s:  # read only
        pkg = s.get(RolePackage, key)
        if (why := _skip_reason(pkg, key)) is not None:
            return StageOutcome(key, skipped=why)
        view = load_package_view(s, key)
        facts = gate_facts(s, view)
        assert pkg is not None
        resuming = _open_release_resuming(s, pkg)
    # The network, outside any transaction: the scope (unless the plan is frozen) and the
    # holdings the SoD gate judges, in one read.
    wanted = set(facts.sod_entitlements) | (set() if resuming else set(view.scope))
    current = rt.target.read_grants(wanted) if wanted else frozenset()
    holdings = frozenset(g for g in current if g.entitlement in facts.sod_entitlements)
    plan: Plan | None  # a resumed deploy's frozen plan is read back from the store
    if dry_run:
        plan = plan_package(view, current)
        return StageOutcome(key, counts=plan.counts(),
                            gates=check_gates(view, gate_context(rt, facts, plan, holdings)))
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        pkg = s.get(RolePackage, key)
        if (why := _skip_reason(pkg, key)) is not None:  # moved while the target was read
            return StageOutcome(key, skipped=why)
        assert pkg is not None
        release = open_release(s, pkg, wave=wave, target=rt.target.name,
                               flow_run_id=flow_run_id, triggered_by=triggered_by, now=now)
        assert release.id is not None, "open_release flushes a new release: it has its id"
        if release.deploy_started_at is not None:
            plan = load_bundle(s, release.id, key)  # frozen: the target holds partial writes
            assert plan is not None
            resuming = True
        elif resuming:  # the deploy we saw started belonged to a release closed since: replan
            raise StaleRead(f"{key}: the open release changed while the target was read; "
                            "re-run")
        else:
            plan = plan_package(view, current)
            record_bundle(s, release.id, plan)
        release.adds, release.removes, release.retirements = (
            len(plan.adds), len(plan.removes), len(plan.retirements))
        gates = check_gates(view, gate_context(rt, facts, plan, holdings))
        counts: dict[str, Any] = plan.counts()  # audit detail, not record()'s own fields
        audit.record(s, "plan_staged", package_key=key, wave=wave, release_id=release.id,
                     flow_run_id=flow_run_id, at=now, **counts,
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


class StaleRead(RuntimeError):
    """The store moved while the target was being read; a re-run reads again."""


def contained_release(s: Session, key: str, *, besides: int | None = None) -> Release | None:
    """The package's release with grants suspended by a containment not yet lifted."""
    q = (select(Release).join(Suspension, col(Suspension.release_id) == Release.id)
         .where(Release.package_key == key, Suspension.lifted_at == None))  # noqa: E711
    if besides is not None:
        q = q.where(Release.id != besides)
    return s.exec(q.order_by(col(Release.id).desc())).first()


def _hold(s: Session, pkg: RolePackage, release: Release, reason: str, now: datetime,
          failed_gates: list[str] | None = None) -> None:
    """Stop a release before it deploys; a contained package stays contained (its earlier
    release is still live and watched), anything else is held. `failed_gates` records, as
    data, which gates held it (if any)."""
    if contained_release(s, pkg.key, besides=release.id) is not None:
        why = f"still contained; the new release is held: {reason}"
        if S(pkg.state) != S.CONTAINED:
            transition(s, pkg, S.CONTAINED, why, release_id=release.id, at=now)
        else:
            pkg.state_reason = why
    elif S(pkg.state) != S.HELD:
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
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, release.package_key)
        approval = s.exec(select(Approval).where(Approval.release_id == release_id)
                          .order_by(col(Approval.id).desc())).first()
        superseded: str | None = None
        if approval is None:
            deadline = now + timedelta(hours=rt.settings.approval_deadline_hours)
            approval = Approval(release_id=release_id, package_key=pkg.key, requested_at=now,
                                deadline=deadline, flow_run_id=release.flow_run_id,
                                channel="slack" if rt.notifier else "prefect-ui",
                                required=load_package_view(s, pkg.key).required_approvals)
            s.add(approval)
            s.flush()
            audit.record(s, "approval_requested", package_key=pkg.key, wave=pkg.wave,
                         release_id=release_id, flow_run_id=release.flow_run_id, at=now,
                         approval_id=approval.id, deadline=deadline.isoformat(),
                         owner=pkg.owner_name, required=approval.required)
        else:
            if (approval.decision is None and approval.flow_run_id and release.flow_run_id
                    and approval.flow_run_id != release.flow_run_id):
                superseded = approval.flow_run_id
            approval.flow_run_id = release.flow_run_id or approval.flow_run_id
        if S(pkg.state) != S.AWAITING_HANDOFF:
            transition(s, pkg, S.AWAITING_HANDOFF, f"waiting for {pkg.owner_name} to approve",
                       release_id=release_id, at=now)
        assert approval.id is not None, "flushed above or read from the store"
        return HandoffRequest(approval.id, approval.decision, approval.deadline,
                              superseded_run=superseded)


def proof_for_form(rt: Runtime) -> Proof:
    """How a Prefect UI decision proves its decider: a one-time code, unless local mode."""
    return "unverified" if rt.settings.approvals_unverified else "code"


def record_decision(rt: Runtime, approval_id: int, decision: str, approver: str,
                    comment: str = "", channel: str = "prefect-ui", *, code: str = "",
                    proof: Proof | None = None) -> str | None:
    """Judge a decision with the one rule (store.approvals.settle) and, when it decides the
    approval, apply it to the package.

    Returns approved | rejected | timeout once the approval is decided (now or before: the
    store is the source of truth, so a decision the Slack receiver recorded wins), or None
    while it still waits (the decision was refused, or four eyes need another approver).
    """
    return _judge(rt, approval_id, decision, approver, comment, channel, code=code,
                  proof=proof).decided


@dataclass(frozen=True)
class FormAnswer:
    """What became of a decision: the approval's final decision once decided (None while it
    waits), and why the decision was refused, to answer on its channel ("" when it was not)."""

    decided: str | None
    refused: str = ""


def _judge(rt: Runtime, approval_id: int, decision: str, approver: str, comment: str,
           channel: str, *, code: str, proof: Proof | None) -> FormAnswer:
    now = rt.clock.now()
    click = Click(approver.strip(), decision, comment=comment.strip(), code=code)
    with session_scope(rt.database_url) as s:
        settled = settle(s, approval_id, click, channel=channel,
                         proof=proof or proof_for_form(rt), now=now)
    if settled.locked_now and settled.ctx is not None:
        from wavekit.workflow.approval_codes import notify_locked

        notify_locked(rt, settled.ctx)
    refused = settled.outcome.reason if settled.outcome.verdict is Ruling.REFUSE else ""
    if settled.final or settled.outcome.verdict is Ruling.ALREADY_DECIDED:
        return FormAnswer(apply_decision(rt, approval_id), refused)
    return FormAnswer(None, refused)


def record_form_input(rt: Runtime, approval_id: int, attempt: int, decision: str,
                      approver: str, code: str, comment: str) -> FormAnswer:
    """The UI form's input for pause `attempt` of this approval, judged once (a re-run that
    reads the same input again does not judge it twice), with the refusal's reason."""
    with session_scope(rt.database_url) as s:
        approval = get_one(s, Approval, approval_id)
        fresh = approval.form_inputs == attempt
        if fresh:
            approval.form_inputs += 1
    if not fresh:
        return FormAnswer(apply_decision(rt, approval_id) if _decided(rt, approval_id)
                          else None)
    return _judge(rt, approval_id, decision, approver, comment, "prefect-ui", code=code,
                  proof=None)


def _decided(rt: Runtime, approval_id: int) -> bool:
    with session_scope(rt.database_url) as s:
        return get_one(s, Approval, approval_id).decision is not None


def record_timeout(rt: Runtime, approval_id: int) -> str:
    """The deadline passed with the run still waiting: record the timeout (unless a decision
    won the race) and hold the package."""
    with session_scope(rt.database_url) as s:
        time_out(s, approval_id, rt.clock.now())
    return apply_decision(rt, approval_id)


def apply_decision(rt: Runtime, approval_id: int) -> str:
    """Apply the approval's stored decision to its package, exactly once, however it was
    made (live, or while no run was waiting): approved stamps the release's approved_at and
    approved_by; rejected or timed out holds the package and closes its release."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        approval = s.get(Approval, approval_id)
        if approval is None or approval.decision is None:
            raise LookupError(f"approval #{approval_id} has no stored decision")
        release = get_one(s, Release, approval.release_id)
        pkg = get_one(s, RolePackage, approval.package_key)
        final = approval.decision
        if final == "approved":
            if release.approved_at is None:
                release.approved_at = approval.decided_at or now
                release.approved_by = approval.approver
                audit.record(s, "approval_applied", package_key=pkg.key, wave=pkg.wave,
                             release_id=release.id, at=now, approval_id=approval_id,
                             decision=final, approvers=(approval.approver or "").split(","),
                             proof=approval.proof,
                             verified=approval.proof not in (None, "unverified"))
        elif not release.closed:
            why = ("approval deadline passed without a decision" if final == "timeout" else
                   f"rejected by {approval.approver}: {approval.comment or 'no reason given'}")
            _hold(s, pkg, release, why, now)
        return final


def enforce_gates(rt: Runtime, release_id: int) -> list[GateResult]:
    """Run every gate against the current state; hold the package if one fails."""
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        key = release.package_key
    with failure_recorded(rt, "dependency_checks", key, release_id=release_id):
        with session_scope(rt.database_url) as s:
            view = load_package_view(s, key)
            facts = gate_facts(s, view)
        holdings = read_holdings(rt, facts)  # the target, outside any transaction
        now = rt.clock.now()
        with session_scope(rt.database_url) as s:
            release = get_one(s, Release, release_id)
            pkg = get_one(s, RolePackage, key)
            plan = load_bundle(s, release_id, key)
            assert plan is not None, f"{key}: release {release_id} was staged without a plan"
            results = check_gates(view, gate_context(rt, gate_facts(s, view), plan, holdings))
            audit.record(s, "gates_checked", package_key=key, wave=pkg.wave,
                         release_id=release_id, at=now, stage="dependency_checks",
                         results=[r.__dict__ for r in results])
            if bad := failed(results):
                _hold(s, pkg, release, "; ".join(f"{g.name}: {g.reason}" for g in bad), now,
                      [g.name for g in bad])
            return results


def deploy_package(rt: Runtime, release_id: int,
                   on_batch: ProgressCallback | None = None) -> DeployOutcome:
    """Apply the plan's adds and removes in batches; record the prior bundle before writing.

    A failure is recorded (`stage_failed`, with the batch it stopped at) and re-raised; the
    package stays Deploying and a re-run resumes from the frozen plan.
    """
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        key, wave, started = release.package_key, release.wave, release.deploy_started_at
    with failure_recorded(rt, "deploy", key, release_id=release_id, wave=wave):
        return _deploy(rt, release_id, key, started is None, on_batch)


def _deploy(rt: Runtime, release_id: int, key: str, first: bool,
            on_batch: ProgressCallback | None) -> DeployOutcome:
    with session_scope(rt.database_url) as s:
        view = load_package_view(s, key)
    # Re-read just before the first write (the approval may have taken hours), with no
    # store transaction open.
    snapshot = read_snapshot(rt.target, view.scope) if first else None
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, key)
        plan: Plan | None
        if release.deploy_started_at is None:
            if snapshot is None:
                raise StaleRead(f"{key}: release {release_id} was reset while deploying; re-run")
            plan = plan_package(view, snapshot.grants)
            record_bundle(s, release_id, plan, stored=snapshot.stored)
            release.deploy_started_at = now
            release.adds, release.removes, release.retirements = (
                len(plan.adds), len(plan.removes), len(plan.retirements))
        else:
            plan = load_bundle(s, release_id, key)
        assert plan is not None
        # The cohort filter: a stepped package writes only its first step's members here.
        step = cohorts.deploy_step(s, release, view, plan, now)
        todo = step.plan if step is not None else plan
        if S(pkg.state) != S.DEPLOYING:
            transition(s, pkg, S.DEPLOYING, f"applying {len(todo.adds)} adds and "
                       f"{len(todo.removes)} removes to {rt.target.name}"
                       + (f" ({step.label})" if step is not None else ""),
                       release_id=release_id, at=now)

    def record_batch(batch: BatchResult) -> None:
        with session_scope(rt.database_url) as bs:
            rel = get_one(bs, Release, release_id)
            rel.applied_batches += 1
            audit.record(bs, "deploy_batch", package_key=view.key, release_id=release_id,
                         at=rt.clock.now(), index=batch.index, added=batch.added,
                         removed=batch.removed, unchanged=batch.unchanged)
        if on_batch:
            on_batch(batch)

    result = rt.target.apply(todo.adds, todo.removes, batch_size=rt.settings.batch_size,
                             on_batch=record_batch)
    done = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, release.package_key)
        release.deployed_at = done
        # A stepped package is watched for its first soak; the others for their window.
        ends, watching = cohorts.step_deployed(s, release, view, done) or (
            done + timedelta(days=view.watch_days), f"watching for {view.watch_days} days")
        release.watch_ends_at = ends
        release.next_check_at = next_due(checks_for(view.health), done, release.watch_ends_at,
                                         done - timedelta(microseconds=1))
        audit.record(s, "deployed", package_key=pkg.key, wave=pkg.wave, release_id=release_id,
                     at=done, added=result.added, removed=result.removed,
                     unchanged=result.unchanged, batches=len(result.batches))
        _supersede(s, pkg.key, release_id, done)
        transition(s, pkg, S.WATCHING, watching, release_id=release_id, at=done)
        return DeployOutcome(release_id, result.added, result.removed, result.unchanged,
                             len(result.batches), release.watch_ends_at, release.next_check_at)


def _supersede(s: Session, key: str, release_id: int, at: datetime) -> None:
    """A new release deployed over a contained one: the old one stops being watched and its
    containment is lifted (the new deploy decided every grant of the scope afresh)."""
    older = s.exec(select(Release).where(Release.package_key == key, Release.id != release_id,
                                         col(Release.deployed_at).is_not(None),
                                         col(Release.rolled_back_at).is_(None)))
    for old in older:
        assert old.id is not None, "read from the store"
        lifted = suspensions.lift(s, old.id, by=f"release {release_id}",
                                  reason="superseded by a new release", at=at)
        if old.closed and not lifted:
            continue
        old.closed, old.next_check_at = True, None
        audit.record(s, "release_superseded", package_key=key, release_id=old.id, at=at,
                     by_release=release_id, suspensions_lifted=[r.id for r in lifted])


def retire_legacy(rt: Runtime, release_id: int) -> int:
    """Remove the legacy grants the package supersedes; returns how many were removed."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        plan = load_bundle(s, release_id, release.package_key)
        if release.legacy_retired_at is not None or plan is None or not plan.retirements:
            return 0
        key, wave = release.package_key, release.wave
    with failure_recorded(rt, "retire_legacy", key, release_id=release_id, wave=wave):
        result = rt.target.apply([], plan.retirements, batch_size=rt.settings.batch_size)
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        release.legacy_retired_at = now
        audit.record(s, "legacy_retired", package_key=release.package_key,
                     release_id=release_id, at=now, count=result.removed,
                     planned=len(plan.retirements))
    return result.removed


def release_failing(session: Session, release: Release) -> bool:
    """Whether a health check of the release is past its failure limit (as the watch counts)."""
    pkg = get_one(session, RolePackage, release.package_key)
    q = select(HealthCheckResult.check_name, HealthCheckResult.verdict).where(
        HealthCheckResult.release_id == release.id)
    if release.analysis_from is not None:
        q = q.where(HealthCheckResult.due_at >= release.analysis_from)
    verdicts: dict[str, list[Verdict]] = {}
    for name, verdict in session.exec(q.order_by(col(HealthCheckResult.due_at))):
        verdicts.setdefault(name, []).append(Verdict(verdict))
    return assess_health(checks_for(pkg.health), verdicts).verdict == Verdict.FAILED


def retirement_facts(session: Session, release: Release) -> RetirementFacts:
    """What the retirement rule needs about a release, read from the store."""
    pkg = get_one(session, RolePackage, release.package_key)
    assert release.id is not None, "a stored release"
    return RetirementFacts(
        state=S(pkg.state), has_legacy=release.retirements > 0,
        retire_in_launch_window=pkg.retire_in_launch_window, deployed_at=release.deployed_at,
        watch_ends_at=release.watch_ends_at, legacy_retired_at=release.legacy_retired_at,
        rolled_back=release.rolled_back_at is not None,
        failing=release_failing(session, release),
        cohort_complete=cohorts.complete(session, release.id))


def retirement_due_for(rt: Runtime, release_id: int, as_of: datetime) -> bool:
    """The retirement rule for one release, as the store has it now."""
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        return release is not None and retirement_due(retirement_facts(s, release),
                                                      as_of) is not None


def releases_awaiting_retirement(rt: Runtime, as_of: datetime) -> list[int]:
    """Deployed releases whose legacy grants the retirement rule retires now."""
    with session_scope(rt.database_url) as s:
        rows = s.exec(select(Release).where(
            col(Release.deployed_at).is_not(None), Release.retirements > 0,
            col(Release.legacy_retired_at).is_(None),
            col(Release.rolled_back_at).is_(None)).order_by(col(Release.id)))
        return [r.id for r in rows
                if r.id is not None and retirement_due(retirement_facts(s, r), as_of)]


def package_state(rt: Runtime, key: str) -> tuple[str, str]:
    """(state, reason) of a package, as the store has it now."""
    with session_scope(rt.database_url) as s:
        pkg = s.get(RolePackage, key)
        return (pkg.state, pkg.state_reason) if pkg else ("unknown", "")


def launch_retirements_due(rt: Runtime, key: str, as_of: datetime) -> list[int]:
    """The package's deployed release, when the retirement rule says its legacy grants retire
    now and they have not (a process killed between deploy and retirement leaves this)."""
    with session_scope(rt.database_url) as s:
        release = s.exec(select(Release).where(Release.package_key == key,
                                               col(Release.deployed_at).is_not(None))
                         .order_by(col(Release.id).desc())).first()
        if release is None or not retirement_due(retirement_facts(s, release), as_of):
            return []
        assert release.id is not None, "read from the store"
        return [release.id]


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
                               .order_by(col(AuditEvent.id).desc())).first()
            if last_hold is None or last_hold.detail.get("failed_gates") != [
                    "dependencies_stable"]:
                continue  # held (also) for another reason: a human decides
            deps = s.exec(select(RolePackage.state).join(
                PackageDependency, col(PackageDependency.depends_on) == RolePackage.key)
                .where(PackageDependency.package_key == key)).all()
            if all(S(d) == S.STABLE for d in deps):
                ready.setdefault(pkg.wave, []).append(key)
                audit.record(s, "dependents_ready", package_key=key, wave=pkg.wave,
                             at=rt.clock.now(), after=stable_key)
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


@dataclass(frozen=True)
class FormWait:
    """The next wait of a run for its owner: already decided, or pause number `attempt`
    (with why the form's last input was refused, for the form to say)."""

    decided: bool
    attempt: int
    timeout: int
    last_refusal: str | None = None

    def description(self, package_key: str, wave: int | None) -> str:
        """The form's text: what to enter, and why the last input was refused, if it was."""
        ask = (f"Approve {package_key} for wave {wave}? Enter your approver id and the "
               "one-time code wavekit sent you.")
        if self.last_refusal:
            return f"Your last input was refused: {self.last_refusal}.\n\n{ask}"
        return ask


def form_wait(rt: Runtime, request: HandoffRequest, step: HandoffStep) -> FormWait:
    """Read, before each pause, whether a decision arrived meanwhile, which pause this is and
    why the form's last input was refused (from the store: a suspended run restarts)."""
    with session_scope(rt.database_url) as s:
        approval = get_one(s, Approval, request.approval_id)
        decided, attempt = approval.decision is not None, approval.form_inputs
        refusal = last_form_refusal(s, request.approval_id) if attempt else None
    return FormWait(decided, attempt, handoff_timeout_seconds(rt, request, step), refusal)


def apply_stored_decision(rt: Runtime, approval_id: int) -> str:
    """Apply a decision stored while no run was waiting, exactly as if it had arrived live."""
    return apply_decision(rt, approval_id)


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


def release_order(rt: Runtime, wave: int, packages: list[str] | None = None
                  ) -> dict[str, list[str]]:
    """The wave's packages (or the chosen ones) in release order, each with the packages it
    waits for."""
    return plan_wave_order(rt.database_url, wave, packages)


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
                      .order_by(col(Release.id).desc())).first()
