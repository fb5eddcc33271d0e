"""Rollback drills: prove a package's fallback on a drill target, never on production.

    start -> seed -> deploy -> force rollback -> read back and judge

- start    a drill row (running) and a `drill_started` audit event;
- seed     read production's grants in the package's scope (through ReadOnlyTarget: a write
           raises) and make the drill target's scope equal to that copy (provisioning the
           users and groups a SCIM or LDAP drill directory lacks);
- deploy   plan the package against the drill target (domain `plan_package`), store the
           drill's bundle, apply adds, removes and legacy retirements: everything the
           package can change is changed, so the rollback has everything to put back;
- rollback the same restore a production rollback makes (`rollback.restore_on`), timed
           from here;
- verify   read the drill target back (`rollback.read_back`, domain `prove_restore`) and
           judge (domain `judge_drill`): passed when the read-back equals the prior bundle
           exactly and the restore took no longer than the objective.

Each step is one transaction with its audit event; a step that raises is recorded as a
failed drill (`fail_drill`). The rollback-drill flow (flows/drills.py) runs each as a task.
A signed manual drill is one row and one event (`record_manual_drill`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from wavekit.adapters.store import audit
from wavekit.adapters.store.bundles import restrict
from wavekit.adapters.store.drills import drill_records, load_drill_bundle, record_drill_bundle
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import DrillRun, Identity
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.base import Target
from wavekit.adapters.targets.drill import (
    ReadOnlyTarget,
    build_drill_target,
    provision_drill_directory,
    refuse_production,
)
from wavekit.domain.clock import as_utc
from wavekit.domain.drills import AUTOMATED, MANUAL, judge_drill
from wavekit.domain.gates import GateContext, GateResult, rollback_drill
from wavekit.domain.grants import Grant
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import Plan, plan_package
from wavekit.workflow.rollback import read_back, restore_on
from wavekit.workflow.runtime import Runtime


class UnknownPackage(LookupError):
    """The catalog has no such package."""


def _catalogued(s: Session, package_key: str) -> PackageView:
    """The package a drill is about, or UnknownPackage."""
    try:
        return load_package_view(s, package_key)
    except KeyError as exc:
        raise UnknownPackage(f"no package {package_key!r} in the catalog") from exc


@dataclass(frozen=True)
class DrillOutcome:
    """A recorded drill, with the rollback_drill gate as it stands after it."""

    drill_id: int
    package_key: str
    kind: str
    target: str
    passed: bool
    failure: str
    duration_seconds: float | None
    objective_minutes: float
    prior_count: int
    readback_count: int
    mismatches: int
    adds: int
    removes: int
    retirements: int
    re_granted: int
    withdrawn: int
    signed_by: str | None
    gate: GateResult

    def as_dict(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "gate"}
        out["gate_passed"], out["gate_reason"] = self.gate.passed, self.gate.reason
        return out


def open_drill_target(rt: Runtime, package_key: str, kind: str | None = None
                      ) -> tuple[Target, bool]:
    """The drill target and whether the caller owns (closes) it: the runtime's, if it has
    one, else one built from settings. Production is refused either way."""
    if rt.drill_target is not None:
        refuse_production(rt.drill_target, rt.target)
        return rt.drill_target, False
    return build_drill_target(rt.settings, kind, package_key=package_key,
                              production=rt.target), True


@contextmanager
def drill_target(rt: Runtime, package_key: str, kind: str | None = None) -> Iterator[Target]:
    """open_drill_target for a `with` block: a target opened here is closed at its end, the
    runtime's stays open."""
    target, owned = open_drill_target(rt, package_key, kind)
    with target if owned else nullcontext(target):
        yield target


def start_drill(rt: Runtime, package_key: str, drill_target: Target, *,
                objective_minutes: float, actor: str = "wavekit",
                flow_run_id: str | None = None) -> int:
    """Open a drill (running) of `package_key` on `drill_target`; returns its id."""
    if objective_minutes <= 0:
        raise ValueError("the rollback objective must be more than 0 minutes")
    refuse_production(drill_target, rt.target)
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        view = _catalogued(s, package_key)
        run = DrillRun(package_key=package_key, kind=AUTOMATED, target=drill_target.name,
                       production_target=rt.target.name, actor=actor, flow_run_id=flow_run_id,
                       objective_minutes=objective_minutes, scope=sorted(view.scope),
                       started_at=now)
        s.add(run)
        s.flush()
        assert run.id is not None
        audit.record(s, "drill_started", actor=actor, package_key=package_key, wave=view.wave,
                     flow_run_id=flow_run_id, at=now, drill_id=run.id,
                     target=drill_target.name, production_target=rt.target.name,
                     objective_minutes=objective_minutes)
        return run.id


def seed_drill(rt: Runtime, drill_id: int, drill_target: Target) -> dict[str, int]:
    """Copy production's grants in the package's scope onto the drill target's scope."""
    with session_scope(rt.database_url) as s:
        run = _run(s, drill_id)
        view = load_package_view(s, run.package_key)
    production = ReadOnlyTarget(rt.target)
    copy = restrict(production.read_grants(view.scope), view.scope)
    people = view.members | {g.identity for g in copy}
    wanted = sorted(people)
    identities: list[dict[str, str]] = []
    with session_scope(rt.database_url) as s:
        for i in range(0, len(wanted), 500):  # IN lists SQLite takes
            identities += [{"id": r.id, "display_name": r.display_name, "email": r.email or ""}
                           for r in s.exec(select(Identity).where(
                               col(Identity.id).in_(wanted[i:i + 500])))]
    identities += [{"id": i, "display_name": i, "email": ""}
                   for i in sorted(people - {r["id"] for r in identities})]
    provisioned = provision_drill_directory(drill_target, identities, sorted(view.scope))
    current = restrict(drill_target.read_grants(view.scope), view.scope)
    seeded = drill_target.apply(copy - current, current - copy,
                                batch_size=rt.settings.batch_size)
    with session_scope(rt.database_url) as s:
        run = _run(s, drill_id)
        run.production_count = len(copy)
        run.seeded_added, run.seeded_removed = seeded.added, seeded.removed
        audit.record(s, "drill_seeded", actor=run.actor, package_key=run.package_key,
                     at=rt.clock.now(), drill_id=drill_id, production_grants=len(copy),
                     added=seeded.added, removed=seeded.removed,
                     users_provisioned=provisioned["users"],
                     groups_provisioned=provisioned["groups"])
    return {"production": len(copy), "added": seeded.added, "removed": seeded.removed}


def deploy_drill(rt: Runtime, drill_id: int, drill_target: Target) -> dict[str, int]:
    """Deploy the package to the drill target: its plan there, retirements included."""
    with session_scope(rt.database_url) as s:
        run = _run(s, drill_id)
        view = load_package_view(s, run.package_key)
    plan = plan_package(view, restrict(drill_target.read_grants(view.scope), view.scope))
    with session_scope(rt.database_url) as s:
        record_drill_bundle(s, drill_id, plan)  # before the first write, as a release does
    result = drill_target.apply(plan.adds, plan.removes | plan.retirements,
                                batch_size=rt.settings.batch_size)
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        run = _run(s, drill_id)
        run.deployed_at = now
        run.adds, run.removes, run.retirements = (len(plan.adds), len(plan.removes),
                                                  len(plan.retirements))
        audit.record(s, "drill_deployed", actor=run.actor, package_key=run.package_key,
                     at=now, drill_id=drill_id, target=run.target, adds=len(plan.adds),
                     removes=len(plan.removes), retirements=len(plan.retirements),
                     prior=len(plan.prior), added=result.added, removed=result.removed)
    return {**plan.counts(), "added": result.added, "removed": result.removed}


def force_rollback(rt: Runtime, drill_id: int, drill_target: Target) -> tuple[int, int]:
    """Roll the drill target back to the drill's prior bundle; the objective's clock starts."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        run = _run(s, drill_id)
        plan = load_drill_bundle(s, run)
        if run.rollback_started_at is None:  # a retried restore keeps the first start: the
            run.rollback_started_at = now   # objective counts the retries too
            audit.record(s, "drill_rollback_started", actor=run.actor,
                         package_key=run.package_key, at=now, drill_id=drill_id,
                         touched=len(plan.touched))
    return restore_on(drill_target, plan, rt.settings.batch_size)


def verify_drill(rt: Runtime, drill_id: int, drill_target: Target,
                 written: tuple[int, int] = (0, 0)) -> DrillOutcome:
    """Read the drill target back, time the restore, judge and record the drill."""
    with session_scope(rt.database_url) as s:
        run = _run(s, drill_id)
        plan = load_drill_bundle(s, run)
        rollback_started = run.rollback_started_at
    assert rollback_started is not None, "verify_drill runs after force_rollback"
    proof = read_back(drill_target, plan)
    finished = rt.clock.now()
    restore_time = finished - as_utc(rollback_started)
    failures = judge_drill(proof, restore_time, timedelta(minutes=run.objective_minutes))
    with session_scope(rt.database_url) as s:
        run = _run(s, drill_id)
        run.re_granted, run.withdrawn = written
        run.prior_count, run.readback_count = proof.prior_count, proof.readback_count
        run.mismatches = sorted([g.identity, g.entitlement] for g in proof.mismatched)
        run.drift_outside = sorted([g.identity, g.entitlement] for g in proof.drift_outside)
        return _finish(s, run, finished, failures, restore_time.total_seconds(), rt, plan)


def fail_drill(rt: Runtime, drill_id: int, error: str) -> DrillOutcome:
    """Record a drill that could not finish (a target refused, a step raised) as failed."""
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        run = _run(s, drill_id)
        if run.status != "running":  # already judged: keep its verdict
            return _outcome(s, run, rt)
        return _finish(s, run, now, [f"the drill did not finish: {error}"], None, rt)


def record_manual_drill(rt: Runtime, package_key: str, *, signed_by: str, note: str,
                        actor: str = "wavekit") -> DrillOutcome:
    """Record a manual drill someone rehearsed and signed (it passes; it expires with the
    review cadence like any drill)."""
    if not signed_by.strip():
        raise ValueError("a manual drill needs the name of who signed it")
    if not note.strip():
        raise ValueError("a manual drill needs a note saying what was rehearsed")
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        view = _catalogued(s, package_key)
        run = DrillRun(package_key=package_key, kind=MANUAL, target="manual", actor=actor,
                       signed_by=signed_by.strip(), note=note.strip(), scope=sorted(view.scope),
                       started_at=now)
        s.add(run)
        s.flush()
        return _finish(s, run, now, [], None, rt)


def drill_gate(rt: Runtime, package_key: str) -> GateResult:
    """The rollback_drill gate for the package now, from the drills in the store."""
    with session_scope(rt.database_url) as s:
        return _gate(s, package_key, rt.clock.now(), rt)


def latest_drill_id(rt: Runtime, package_key: str) -> int | None:
    with session_scope(rt.database_url) as s:
        return s.exec(select(DrillRun.id).where(DrillRun.package_key == package_key)
                      .order_by(col(DrillRun.id).desc())).first()


def drill_outcome(rt: Runtime, drill_id: int) -> DrillOutcome:
    with session_scope(rt.database_url) as s:
        return _outcome(s, _run(s, drill_id), rt)


# ------------------------------------------------------------------ inside


def _run(s: Session, drill_id: int) -> DrillRun:
    run: DrillRun | None = s.get(DrillRun, drill_id)
    if run is None:
        raise LookupError(f"no drill {drill_id} in the store")
    return run


def _finish(s: Session, run: DrillRun, finished: datetime, failures: list[str],
            duration: float | None, rt: Runtime, plan: Plan | None = None) -> DrillOutcome:
    run.finished_at = finished
    run.duration_seconds = duration
    run.status = "failed" if failures else "passed"
    run.failure = "; ".join(failures)
    s.add(run)
    s.flush()
    audit.record(s, "drill_recorded", actor=run.actor, package_key=run.package_key,
                 flow_run_id=run.flow_run_id, at=finished, drill_id=run.id, kind=run.kind,
                 target=run.target, production_target=run.production_target,
                 passed=run.passed, failure=run.failure, signed_by=run.signed_by,
                 note=run.note, started_at=as_utc(run.started_at).isoformat(),
                 finished_at=as_utc(finished).isoformat(), duration_seconds=duration,
                 objective_minutes=run.objective_minutes, prior_count=run.prior_count,
                 readback_count=run.readback_count, touched=len(plan.touched) if plan else 0,
                 re_granted=run.re_granted, withdrawn=run.withdrawn,
                 mismatched=run.mismatches, drift_outside=run.drift_outside)
    return _outcome(s, run, rt)


def _gate(s: Session, package_key: str, as_of: datetime, rt: Runtime) -> GateResult:
    view = load_package_view(s, package_key)
    drills = drill_records(s, [package_key]).get(package_key, ())
    empty: frozenset[Grant] = frozenset()
    return rollback_drill(view, GateContext(
        plan=Plan(view.key, view.scope, empty, empty, empty, empty), drills=drills,
        as_of=as_of, review_cadence_days=rt.settings.review_cadence_days))


def _outcome(s: Session, run: DrillRun, rt: Runtime) -> DrillOutcome:
    gate = _gate(s, run.package_key, max(rt.clock.now(), as_utc(run.finished_at
                                                                 or run.started_at)), rt)
    assert run.id is not None
    return DrillOutcome(
        drill_id=run.id, package_key=run.package_key, kind=run.kind, target=run.target,
        passed=run.passed, failure=run.failure, duration_seconds=run.duration_seconds,
        objective_minutes=run.objective_minutes, prior_count=run.prior_count,
        readback_count=run.readback_count, mismatches=len(run.mismatches), adds=run.adds,
        removes=run.removes, retirements=run.retirements, re_granted=run.re_granted,
        withdrawn=run.withdrawn, signed_by=run.signed_by, gate=gate)
