"""The step loop of a stepped release: deploy a cohort, soak it, widen on a healthy verdict.

    deploy (step 1: the first cohort)  ──► soaking ──(soak passed, not paused)──► widen
        ▲                                     │                                   │
        └──────── step k+1 (its new members) ◄┘◄──────────────(promote)───────────┘
    last step (100 %) ──► complete: the package's watch window, then Stable
    a failed health check at any step, or abort ──► rollback of the members taken up so far

The rollout's plan is frozen once, at the first write, for every member (one prior bundle);
each step writes that plan restricted to its new members (wavekit.domain.cohorts.
restrict_plan). The members a step takes up are recorded *before* it writes, and the
progress row says whether its writes are done, so a crash mid-step is finished by the next
run and a rollback always covers what may be on the target. Packages without steps never
get a progress row: every function here answers None for them and the deploy is as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from wavekit.adapters.store import audit
from wavekit.adapters.store import cohorts as store
from wavekit.adapters.store.bundles import load_bundle
from wavekit.adapters.store.engine import get_one, session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import CohortProgress, Release, RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.clock import as_utc
from wavekit.domain.cohorts import (
    ActorFacts,
    ActorProof,
    Rollout,
    check_action,
    cohorts,
    may_act,
    next_step,
    restrict_plan,
    rollout_from,
    soak_hours,
    step_label,
)
from wavekit.domain.health import checks_for, next_due
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import Plan
from wavekit.domain.states import PackageState
from wavekit.workflow.failures import failure_recorded
from wavekit.workflow.runtime import Runtime

S = PackageState


class CohortActionRefused(ValueError):
    """A promote / pause / resume / abort that the rule refuses (one line for the user)."""


def _cohorts(s: Session, view: PackageView, rollout: Rollout) -> list[frozenset[str]]:
    strata = store.strata(s, rollout.cohort_by, view.members) if rollout.cohort_by else None
    return cohorts(rollout, view.key, view.members, strata)


@dataclass(frozen=True)
class StepWork:
    """What one step writes: the plan restricted to its members, and how to name it."""

    plan: Plan
    label: str


def deploy_step(s: Session, release: Release, view: PackageView, plan: Plan, now: datetime
                ) -> StepWork | None:
    """Inside the deploy's transaction: the current step's writes, recording the first step
    (its members) when the release starts; None for a package without steps."""
    rollout = rollout_from(view.rollout)
    if rollout is None:
        return None
    assert release.id is not None, "a stored release"
    row = store.progress(s, release.id)
    if row is None:
        first = _cohorts(s, view, rollout)[0]
        row = CohortProgress(release_id=release.id, package_key=view.key, step=0,
                             steps=len(rollout.steps), granted=len(first),
                             total=len(view.members), status="deploying",
                             step_started_at=now, updated_at=now)
        s.add(row)
        s.flush()
        store.add_members(s, release.id, 0, first)
        audit.record(s, "cohort_step_started", package_key=view.key, release_id=release.id,
                     at=now, step=1, steps=row.steps, members=len(first), total=row.total,
                     label=step_label(rollout, 0, len(first), row.total))
    granted = store.granted_members(s, release.id) or frozenset()
    return StepWork(restrict_plan(plan, granted),
                    step_label(rollout, row.step, row.granted, row.total))


def step_deployed(s: Session, release: Release, view: PackageView, done: datetime
                  ) -> tuple[datetime, str] | None:
    """Inside the deploy's last transaction: the step is on the target; returns (when its
    soak, or the watch window after the last step, ends; the package's state reason)."""
    assert release.id is not None, "a stored release"
    row = store.progress(s, release.id)
    rollout = rollout_from(view.rollout)
    if row is None or rollout is None:
        return None
    label = step_label(rollout, row.step, row.granted, row.total)
    soak = soak_hours(rollout, row.step)
    row.updated_at = done
    if soak is None:
        row.status, row.soak_ends_at = "complete", None
        ends = done + timedelta(days=view.watch_days)
        reason = f"{label}: every member; watching for {view.watch_days} days"
    else:
        row.status = "soaking"
        ends = row.soak_ends_at = done + timedelta(hours=soak)
        reason = f"{label}: soaking {soak:g} h until {ends:%Y-%m-%d %H:%M} UTC"
    audit.record(s, "cohort_step_deployed", package_key=view.key, release_id=release.id,
                 at=done, step=row.step + 1, steps=row.steps, granted=row.granted,
                 total=row.total, label=label, until=ends.isoformat())
    return ends, reason


@dataclass(frozen=True)
class StepFacts:
    """What the watch and the actions need about a stepped release."""

    step: int
    steps: int
    status: str
    paused: bool
    paused_by: str | None
    granted: frozenset[str]
    started_at: datetime | None = None  # when the current step started deploying

    @property
    def steps_left(self) -> bool:
        return self.step < self.steps - 1


def step_facts(s: Session, release_id: int) -> StepFacts | None:
    """The release's step facts, or None for a release without steps."""
    row = store.progress(s, release_id)
    if row is None:
        return None
    return StepFacts(row.step, row.steps, row.status, row.paused_at is not None, row.paused_by,
                     store.granted_members(s, release_id) or frozenset(),
                     as_utc(row.step_started_at) if row.step_started_at else None)


def complete(s: Session, release_id: int) -> bool:
    """Whether every step is on the target (always, for a release without steps)."""
    row = store.progress(s, release_id)
    return row is None or row.status == "complete"


@dataclass(frozen=True)
class StepOutcome:
    package_key: str
    release_id: int
    step: int  # 1-based
    steps: int
    granted: int
    total: int
    added: int
    removed: int
    label: str
    watch_ends_at: datetime | None


def next_step_label(rt: Runtime, release_id: int) -> str:
    """How the step a widen would deploy is named (for its task run in the Prefect UI)."""
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        view = load_package_view(s, release.package_key)
        row = store.progress(s, release_id)
        rollout = rollout_from(view.rollout)
        if row is None or rollout is None:
            return "no steps"
        index = row.step if row.status == "deploying" else next_step(rollout, row.step)
        if index is None:
            return step_label(rollout, row.step, row.granted, row.total)
        size = len(_cohorts(s, view, rollout)[index] | (store.granted_members(s, release_id)
                                                        or frozenset()))
        return step_label(rollout, index, size, row.total)


def first_step_label(rt: Runtime, key: str) -> str | None:
    """The first step's name for a stepped package about to deploy (None: no steps)."""
    with session_scope(rt.database_url) as s:
        view = load_package_view(s, key)
        rollout = rollout_from(view.rollout)
        if rollout is None:
            return None
        return step_label(rollout, 0, len(_cohorts(s, view, rollout)[0]), len(view.members))


def widen(rt: Runtime, release_id: int, *, actor: str = "wavekit",
          reason: str = "soak passed", at: datetime | None = None) -> StepOutcome:
    """Deploy the next step's new members (or finish a step a crash left half written).

    `at` is the watch tick's time when the soak's end widens (a replayed watch widens then).
    """
    now = at or rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, release.package_key)
        view = load_package_view(s, pkg.key)
        rollout = rollout_from(view.rollout)
        row = store.progress(s, release_id)
        if rollout is None or row is None:
            raise CohortActionRefused(f"{pkg.key} has no rollout steps")
        if S(pkg.state) not in (S.WATCHING, S.NEEDS_TUNING):
            raise CohortActionRefused(f"{pkg.key} is {S(pkg.state).label}: only a watched "
                                      "package widens")
        if row.status != "deploying":
            index = next_step(rollout, row.step)
            if index is None:
                raise CohortActionRefused(f"{pkg.key} is already at its last step")
            cohort = _cohorts(s, view, rollout)[index]
            store.add_members(s, release_id, index, cohort)
            row.step, row.status, row.step_started_at, row.updated_at = (
                index, "deploying", now, now)
            row.granted = len(store.granted_members(s, release_id) or frozenset())
            row.paused_at = row.paused_by = row.pause_reason = None
            release.next_check_at = None  # the step's soak sets it once deployed
            audit.record(s, "cohort_step_started", actor=actor, package_key=pkg.key,
                         release_id=release_id, at=now, step=index + 1, steps=row.steps,
                         members=row.granted, total=row.total, reason=reason,
                         label=step_label(rollout, index, row.granted, row.total))
        if S(pkg.state) == S.NEEDS_TUNING:
            transition(s, pkg, S.WATCHING, f"widening: {reason}", actor=actor,
                       release_id=release_id, at=now)
        plan = load_bundle(s, release_id, pkg.key)
        new = frozenset(store.granted_members(s, release_id) or frozenset())
        step, wave = row.step, release.wave
    assert plan is not None
    # Every member taken up so far: the earlier steps' writes are already there (unchanged).
    work = restrict_plan(plan, new)
    with failure_recorded(rt, "widen", pkg.key, release_id=release_id, wave=wave):
        result = rt.target.apply(work.adds, work.removes, batch_size=rt.settings.batch_size)
    done = at or rt.clock.now()
    with session_scope(rt.database_url) as s:
        release = get_one(s, Release, release_id)
        pkg = get_one(s, RolePackage, release.package_key)
        view = load_package_view(s, pkg.key)
        ends, why = step_deployed(s, release, view, done) or (done, "")
        release.watch_ends_at = ends
        assert release.deployed_at is not None, f"release {release_id} widens after its deploy"
        release.next_check_at = next_due(checks_for(view.health), as_utc(release.deployed_at),
                                         ends, done) or ends
        pkg.state_reason = why
        s.add(pkg)
        row = store.progress(s, release_id)
        assert row is not None
        return StepOutcome(pkg.key, release_id, step + 1, row.steps, row.granted, row.total,
                           result.added, result.removed, why.split(":")[0], ends)


def releases_mid_step(rt: Runtime) -> list[int]:
    """Stepped releases a crash left between recording a widening and finishing its writes."""
    with session_scope(rt.database_url) as s:
        rows = s.exec(select(CohortProgress.release_id)
                      .join(Release, col(Release.id) == CohortProgress.release_id)
                      .join(RolePackage, col(RolePackage.key) == Release.package_key)
                      .where(CohortProgress.status == "deploying", CohortProgress.step > 0,
                             Release.closed == False,  # noqa: E712
                             col(RolePackage.state).in_([S.WATCHING, S.NEEDS_TUNING])))
        return list(rows)


# ------------------------------------------------------------------ release managers' actions


@dataclass(frozen=True)
class ActionOutcome:
    """What a cohort action did, and what the caller still runs (a widen or a rollback)."""

    package_key: str
    action: str
    actor: str
    release_id: int
    message: str
    widen: bool = False
    rollback: bool = False


def _live_release(s: Session, key: str) -> Release | None:
    return s.exec(select(Release).where(Release.package_key == key, Release.closed == False,  # noqa: E712
                                        col(Release.deploy_started_at).is_not(None))
                  .order_by(col(Release.id).desc())).first()


def actor_facts(rt: Runtime, view: PackageView) -> ActorFacts:
    """Who may act on the package's rollout: its owner and delegates, the release managers."""
    people = [view.owner_slack_id, view.owner_email,
              *(d.get(k) for d in view.delegates for k in ("slack_id", "email"))]
    return ActorFacts(view.key, view.owner_name, frozenset(p for p in people if p),
                      rt.settings.release_manager_set, rt.settings.approvals_unverified)


def authorize(rt: Runtime, key: str, action: str, actor: str, proof: ActorProof = "cli"
              ) -> None:
    """Raise CohortActionRefused unless `actor` may act on the package's rollout (`may_act`);
    a refusal is audited (`cohort_action_refused`) and changes nothing else."""
    with session_scope(rt.database_url) as s:
        if s.get(RolePackage, key) is None:
            raise CohortActionRefused(f"no package {key!r} in the catalog")
        who = may_act(action, actor, actor_facts(rt, load_package_view(s, key)), proof=proof)
        if not who.allowed:
            audit.record(s, "cohort_action_refused", actor=actor.strip() or "unknown",
                         package_key=key, at=rt.clock.now(), requested=action,
                         reason=who.reason, proof=proof)
    if not who.allowed:
        raise CohortActionRefused(f"cannot {action} {key}: {who.reason}")


def request_action(rt: Runtime, key: str, action: str, actor: str, reason: str = "",
                   proof: ActorProof = "cli") -> ActionOutcome:
    """Check and record a promote / pause / resume / abort (audited with who did it, and how
    that was established: `proof`). Who may act is `may_act`; a refusal is audited and
    changes nothing. Pause and resume are done here; promote and abort are returned for the
    caller to run (the widen, the rollback-package flow)."""
    now = rt.clock.now()
    actor = actor.strip()
    authorize(rt, key, action, actor, proof)
    with session_scope(rt.database_url) as s:
        pkg = s.get(RolePackage, key)
        if pkg is None:  # removed from the catalog since authorize read it
            raise CohortActionRefused(f"no package {key!r} in the catalog")
        release = _live_release(s, key)
        facts = (step_facts(s, release.id)
                 if release is not None and release.id is not None else None)
        live = S(pkg.state) in (S.WATCHING, S.NEEDS_TUNING, S.CONTAINED, S.DEPLOYING)
        check = check_action(action, actor, stepped=pkg.rollout is not None,
                             live=live and facts is not None,
                             step=facts.step if facts else None,
                             steps=facts.steps if facts else 0,
                             paused=bool(facts and facts.paused),
                             widening=bool(facts and facts.status == "deploying"),
                             watched=S(pkg.state) in (S.WATCHING, S.NEEDS_TUNING),
                             state=S(pkg.state).label)
        if not check.allowed:
            raise CohortActionRefused(f"cannot {action} {key}: {check.reason}")
        assert release is not None and release.id is not None and facts is not None
        row = store.progress(s, release.id)
        assert row is not None
        why = reason.strip() or f"{action} by {actor}"
        audit.record(s, f"cohort_{action}", actor=actor, package_key=key, wave=pkg.wave,
                     release_id=release.id, at=now, step=row.step + 1, steps=row.steps,
                     granted=row.granted, total=row.total, reason=why, proof=proof)
        if action == "pause":
            row.paused_at, row.paused_by, row.pause_reason = now, actor, why
            pkg.state_reason = (f"paused by {actor} at step {row.step + 1}/{row.steps} "
                                f"({row.granted} of {row.total} members): {why}")
            return ActionOutcome(key, action, actor, release.id, pkg.state_reason)
        if action == "resume":
            row.paused_at = row.paused_by = row.pause_reason = None
            pkg.state_reason = f"resumed by {actor} at step {row.step + 1}/{row.steps}"
            return ActionOutcome(key, action, actor, release.id, pkg.state_reason)
        if action == "promote":
            return ActionOutcome(key, action, actor, release.id,
                                 f"promoted by {actor} from step {row.step + 1}/{row.steps}",
                                 widen=True)
        return ActionOutcome(key, action, actor, release.id,
                             f"aborted by {actor} at step {row.step + 1}/{row.steps} "
                             f"({row.granted} of {row.total} members granted): {why}",
                             rollback=True)


@dataclass(frozen=True)
class ProgressView:
    """A stepped package's progress, for its Prefect artifact, the CLI and reports."""

    package_key: str
    step: int  # 1-based
    steps: int
    granted: int
    total: int
    status: str
    paused_by: str | None
    rows: tuple[dict[str, str], ...]  # one per step: step, share, members, status

    @property
    def percent(self) -> float:
        return 100.0 * self.granted / self.total if self.total else 100.0

    def describe(self) -> str:
        paused = f"; paused by {self.paused_by}" if self.paused_by else ""
        return (f"{self.package_key}: step {self.step}/{self.steps}, {self.granted} of "
                f"{self.total} members granted ({self.status}{paused})")


def progress_view(rt: Runtime, key: str) -> ProgressView | None:
    """The package's latest stepped release's progress, or None (no steps, never deployed)."""
    with session_scope(rt.database_url) as s:
        row = s.exec(select(CohortProgress).where(CohortProgress.package_key == key)
                     .order_by(col(CohortProgress.release_id).desc())).first()
        if row is None:
            return None
        view = load_package_view(s, key)
        rollout = rollout_from(view.rollout)
        sizes = [len(c) for c in _cohorts(s, view, rollout)] if rollout else []
        release = get_one(s, Release, row.release_id)
        ended = "rolled back" if release.rolled_back_at else None
        rows = tuple({"step": f"{i + 1}/{row.steps}",
                      "share": rollout.steps[i].label if rollout else "",
                      "members": str(size),
                      "soak": (f"{h:g} h" if (h := soak_hours(rollout, i)) is not None
                               else f"{view.watch_days} d watch") if rollout else "",
                      "status": ended if ended and i <= row.step
                      else "done" if i < row.step
                      else row.status if i == row.step else "to come"}
                     for i, size in enumerate(sizes))
        return ProgressView(key, row.step + 1, row.steps, row.granted, row.total,
                            ended or row.status, row.paused_by, rows)
