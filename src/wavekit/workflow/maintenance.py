"""The nightly maintenance decisions, as pure functions of data, and the backlog they keep.

`plan_maintenance` looks at every package with its latest metrics, its health-check results
and the open backlog, and decides (the lead's flow executes; nothing here writes a target):

- rollback  a live package with a check failed more often than its failure limit in the
            current release, or an anomaly while its health says `rollback_on_anomaly`
- contain   a live package with an anomaly (bulk-export spike, unexpected escalation):
            hold it and tell the owner
- tune      a live package whose access drift, ticket noise or adoption breaks its check,
            or whose exceptions grow too fast
- renew     owner review older than the cadence (never reviewed: counted from deploy)
- drill     a package with a fallback plan whose rollback drill is due (none passed within the
            cadence) or whose last drill failed (wavekit.domain.drills)
- retire    legacy grants due by the one retirement rule the watch uses too
            (`wavekit.domain.retirement.retirement_due`)
- backlog   items to open and to close, keyed f"{kind}:{package_key}" so reruns never
            open twins; an item closes only once its condition is seen clear (anomaly
            reviews are closed by people)

Metric limits are the watch's: `wavekit.domain.health.checks_for(package.health)` (thresholds,
bounds, start delays and failure limits, with the catalog's per-check overrides), so the
nightly run never judges a package by other numbers than its watch did. The nightly run
measures the last NIGHTLY_WINDOW (24 hours, its own cadence) of every live package,
contained ones included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import pandas as pd
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from wavekit.adapters.store import audit
from wavekit.adapters.store.drills import drill_records
from wavekit.adapters.store.engine import get_one, session_scope
from wavekit.adapters.store.models import (
    HealthCheckResult,
    MaintenanceTask,
    Release,
    RolePackage,
)
from wavekit.adapters.telemetry import ingest_telemetry
from wavekit.domain.clock import as_utc
from wavekit.domain.drills import DrillRecord, drill_backlog_reason, drill_standing
from wavekit.domain.grants import Grant, GrantSet
from wavekit.domain.health import HealthCheck, Verdict, checks_for
from wavekit.domain.metrics import grant_frame
from wavekit.domain.retirement import RetirementFacts, retirement_due
from wavekit.domain.states import DEPLOYED, PackageState

if TYPE_CHECKING:
    from wavekit.adapters.targets.base import Target
    from wavekit.workflow.containment import ContainOutcome
    from wavekit.workflow.runtime import Runtime

Metrics = Mapping[str, float | None]
NIGHTLY_WINDOW = timedelta(days=1)
MANAGED_KINDS = ("tuning", "exception_review", "ownership_renewal", "legacy_retirement",
                 "drill", "anomaly")


@dataclass(frozen=True)
class MaintenanceThresholds:
    """The nightly run's own limits; metric limits come from the health checks."""

    review_cadence_days: int = 30  # settings.review_cadence_days


@dataclass(frozen=True)
class PackageFacts:
    """What maintenance needs about a package and its current release."""

    key: str
    state: PackageState
    name: str = ""
    health: Mapping[str, Any] = field(default_factory=dict)
    fallback_plan: str = ""
    fallback_drill: str = "pending"
    has_legacy: bool = False  # the current release retires legacy grants
    retire_in_launch_window: bool = False
    release_id: int | None = None
    deployed_at: datetime | None = None  # None unless the current release is deployed, live
    watch_ends_at: datetime | None = None
    legacy_retired_at: datetime | None = None
    last_review_at: datetime | None = None
    analysis_from: datetime | None = None  # health results due before this do not count
    drills: tuple[DrillRecord, ...] = ()  # the package's recorded rollback drills

    @property
    def live(self) -> bool:
        """Grants are on the target: a deployed state and a deployed release."""
        return self.state in DEPLOYED and self.deployed_at is not None

    def retirement(self, failing: bool) -> RetirementFacts:
        """The facts the retirement rule judges (the rule the watch applies too)."""
        return RetirementFacts(
            state=self.state, has_legacy=self.has_legacy,
            retire_in_launch_window=self.retire_in_launch_window,
            deployed_at=self.deployed_at, watch_ends_at=self.watch_ends_at,
            legacy_retired_at=self.legacy_retired_at, failing=failing)


class TaskRef(NamedTuple):
    dedupe_key: str
    package_key: str | None
    kind: str


@dataclass(frozen=True)
class Decision:
    package_key: str
    reason: str
    checks: tuple[str, ...] = ()  # contain: the anomaly checks behind it


@dataclass(frozen=True)
class BacklogItem:
    dedupe_key: str
    package_key: str | None
    kind: str
    reason: str  # why it opens, or why it closes


@dataclass(frozen=True)
class MaintenancePlan:
    as_of: datetime
    rollback: tuple[Decision, ...] = ()
    contain: tuple[Decision, ...] = ()
    tune: tuple[Decision, ...] = ()
    renew_ownership: tuple[Decision, ...] = ()
    retire_legacy: tuple[Decision, ...] = ()
    open: tuple[BacklogItem, ...] = ()
    close: tuple[BacklogItem, ...] = ()

    def summary(self) -> dict[str, int]:
        """Counts for the nightly report."""
        return {name: len(getattr(self, name)) for name in (
            "rollback", "contain", "tune", "renew_ownership", "retire_legacy", "open", "close")}


def task_key(kind: str, package_key: str) -> str:
    """The backlog's dedupe key: one open item per kind and package."""
    return f"{kind}:{package_key}"


# ------------------------------------------------------------------ pure rules


def failed_checks(results: pd.DataFrame, pkg: PackageFacts) -> dict[str, int]:
    """Failed measurements per check in the package's current release (all if unknown)."""
    if results.empty:
        return {}
    mine = results[results["package_key"] == pkg.key]
    if pkg.release_id is not None and "release_id" in mine.columns:
        mine = mine[mine["release_id"] == pkg.release_id]
    if pkg.analysis_from is not None and "due_at" in mine.columns:
        due = pd.to_datetime(mine["due_at"], utc=True)
        mine = mine[due >= pd.Timestamp(as_utc(pkg.analysis_from))]
    failed = mine[mine["verdict"] == "failed"]
    return {str(k): int(v) for k, v in failed.groupby("check_name").size().items()}


def _label(check: HealthCheck) -> str:
    return check.name.replace("_", " ")


def _breach(check: HealthCheck, value: float) -> str:
    """Why a measurement breaks its check, in words."""
    if check.metric == "export_anomaly":
        return f"bulk export spike (robust z {value:.1f})"
    if check.metric == "escalation_anomaly":
        return f"{value:.0f} unexpected privileged escalation(s)"
    if check.metric == "adoption":
        return f"adoption {value:.0%} below {check.threshold:.0%}"
    side = "above" if check.bound == "max" else "below"
    return f"{_label(check)} {value:.2f} {side} {check.threshold:g}"


def _failed(check: HealthCheck, m: Metrics) -> str | None:
    value = m.get(check.metric)
    if value is None or check.judge(value) != Verdict.FAILED:
        return None
    return _breach(check, value)


def anomalies(checks: Iterable[HealthCheck], m: Metrics) -> list[tuple[HealthCheck, str]]:
    """Reasons to contain: a bulk-export spike or unexpected privileged escalations."""
    return [(c, r) for c in checks if c.anomaly and (r := _failed(c, m))]


def _review_due(pkg: PackageFacts, as_of: datetime, cadence: int) -> str | None:
    since = pkg.last_review_at or pkg.deployed_at
    if since is None:
        return None
    days = (as_utc(as_of) - as_utc(since)) / timedelta(days=1)
    if days < cadence:
        return None
    what = "last owner review" if pkg.last_review_at else "never reviewed; deployed"
    return f"{what} {as_utc(since):%Y-%m-%d}, {days:.0f} days ago (cadence {cadence} days)"


def plan_maintenance(
    packages: Sequence[PackageFacts],
    metrics: Mapping[str, Metrics],
    results: pd.DataFrame,
    open_tasks: Iterable[TaskRef | MaintenanceTask],
    as_of: datetime,
    thresholds: MaintenanceThresholds = MaintenanceThresholds(),
) -> MaintenancePlan:
    """Tonight's decisions and backlog changes; pure, so it is tested without a store.

    `metrics` maps package keys to measure_package results (missing = not measured tonight);
    `results` holds HealthCheckResult rows (package_key, release_id, check_name, verdict).
    """
    t = thresholds
    rollback: list[Decision] = []
    contain: list[Decision] = []
    tune: list[Decision] = []
    renew: list[Decision] = []
    retire: list[Decision] = []
    wanted: dict[str, BacklogItem] = {}
    cleared: dict[str, str] = {}  # dedupe key -> why it can close

    def want(kind: str, key: str, reason: str) -> None:
        wanted[task_key(kind, key)] = BacklogItem(task_key(kind, key), key, kind, reason)

    for pkg in packages:
        key = pkg.key
        drill = drill_standing(pkg.fallback_drill, pkg.drills, as_of, t.review_cadence_days)
        drill_due = drill_backlog_reason(key, drill) if pkg.fallback_plan else None
        if drill_due:
            want("drill", key, drill_due)
        else:
            cleared[task_key("drill", key)] = (drill.detail if pkg.fallback_plan
                                               else "no fallback plan")
        review = _review_due(pkg, as_of, t.review_cadence_days) if pkg.live else None
        if review:
            renew.append(Decision(key, review))
            want("ownership_renewal", key, review)
        elif pkg.last_review_at is not None:
            cleared[task_key("ownership_renewal", key)] = (
                f"owner reviewed on {as_utc(pkg.last_review_at):%Y-%m-%d}")
        checks = checks_for(pkg.health)
        failures = failed_checks(results, pkg) if pkg.live else {}
        past = [c for c in checks if failures.get(c.name, 0) > c.failure_limit]
        strict = bool(pkg.health.get("rollback_on_anomaly"))
        # As in the watch: an anomaly past its limit contains the package (it rolls back
        # only with rollback_on_anomaly); any other check past its limit rolls it back.
        exhausted = [f"{c.name} failed {failures[c.name]} time(s) (limit {c.failure_limit})"
                     for c in past if strict or not c.anomaly]
        retirement = (retirement_due(pkg.retirement(bool(past)), as_of)
                      if pkg.live else None)
        if retirement:
            retire.append(Decision(key, retirement))
            want("legacy_retirement", key, retirement)
        elif pkg.legacy_retired_at is not None:
            cleared[task_key("legacy_retirement", key)] = (
                f"legacy grants retired on {as_utc(pkg.legacy_retired_at):%Y-%m-%d}")
        elif not pkg.live:
            cleared[task_key("legacy_retirement", key)] = "package is no longer deployed"

        if not pkg.live:
            continue
        m = metrics.get(key)
        found = anomalies(checks, m) if m is not None else []
        why = "; ".join(r for _, r in found)
        if found and strict:
            exhausted += [f"anomaly with rollback_on_anomaly: {r}" for _, r in found]
        elif found and not exhausted:  # a package rolled back tonight has nothing to contain
            contain.append(Decision(key, why, tuple(c.name for c, _ in found)))
        if found:
            want("anomaly", key, why + ": review with the owner")
        if exhausted:
            rollback.append(Decision(key, "; ".join(exhausted)))
            continue
        if m is None:
            continue
        assert pkg.deployed_at is not None, "a live package is deployed"
        age = as_utc(as_of) - as_utc(pkg.deployed_at)
        started = [c for c in checks if not c.anomaly and age >= c.start_after]
        tuning = [c for c in started if c.name != "exception_growth"]
        reasons = [r for c in tuning if (r := _failed(c, m))]
        growth = next((c for c in started if c.name == "exception_growth"), None)
        growing = _failed(growth, m) if growth else None
        if reasons or growing:
            tune.append(Decision(key, "; ".join(reasons + ([growing] if growing else []))))
        if reasons:
            want("tuning", key, "; ".join(reasons))
        elif tuning and all(m.get(c.metric) is not None for c in tuning):
            names = [_label(c) for c in tuning]
            cleared[task_key("tuning", key)] = (
                ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
            ) + " within limits"
        if growing:
            want("exception_review", key, growing)
        elif growth is not None and m.get(growth.metric) is not None:
            cleared[task_key("exception_review", key)] = "exception growth within limits"

    known = {p.key for p in packages}
    open_refs = [TaskRef(o.dedupe_key, o.package_key, o.kind) for o in open_tasks
                 if getattr(o, "closed_at", None) is None]
    open_keys = {r.dedupe_key for r in open_refs}
    to_open = tuple(item for k, item in sorted(wanted.items()) if k not in open_keys)
    to_close = []
    for ref in sorted(open_refs):
        if ref.kind not in MANAGED_KINDS or ref.dedupe_key in wanted:
            continue
        if ref.package_key is not None and ref.package_key not in known:
            closing: str | None = "package is no longer in the catalog"
        else:
            closing = cleared.get(ref.dedupe_key)
        if closing:
            to_close.append(BacklogItem(ref.dedupe_key, ref.package_key, ref.kind, closing))
    return MaintenancePlan(
        as_of=as_utc(as_of), rollback=tuple(rollback), contain=tuple(contain), tune=tuple(tune),
        renew_ownership=tuple(renew), retire_legacy=tuple(retire), open=to_open,
        close=tuple(to_close))


# ------------------------------------------------------------------ the store


def apply_backlog(session: Session, plan: MaintenancePlan, as_of: datetime
                  ) -> tuple[list[MaintenanceTask], list[MaintenanceTask]]:
    """Open and close the plan's backlog items (idempotent); return (opened, closed).

    A closed item whose condition returns is reopened (dedupe keys are unique), never twinned.
    """
    as_of = as_utc(as_of)
    keys = [i.dedupe_key for i in (*plan.open, *plan.close)]
    existing = {t.dedupe_key: t for t in session.exec(
        select(MaintenanceTask).where(col(MaintenanceTask.dedupe_key).in_(keys)))}
    opened: list[MaintenanceTask] = []
    closed: list[MaintenanceTask] = []
    for item in plan.open:
        task = existing.get(item.dedupe_key)
        if task is not None and task.closed_at is None:
            continue
        if task is None:
            task = MaintenanceTask(dedupe_key=item.dedupe_key, package_key=item.package_key,
                                   kind=item.kind, reason=item.reason, opened_at=as_of)
        else:
            task.reason, task.opened_at = item.reason, as_of
            task.closed_at, task.close_reason = None, None
        session.add(task)
        opened.append(task)
        audit.record(session, "maintenance_task_opened", package_key=item.package_key, at=as_of,
                     dedupe_key=item.dedupe_key, kind=item.kind, reason=item.reason)
    for item in plan.close:
        task = existing.get(item.dedupe_key)
        if task is None or task.closed_at is not None:
            continue
        task.closed_at, task.close_reason = as_of, item.reason
        session.add(task)
        closed.append(task)
        audit.record(session, "maintenance_task_closed", package_key=item.package_key, at=as_of,
                     dedupe_key=item.dedupe_key, kind=item.kind, reason=item.reason)
    session.flush()
    return opened, closed


@dataclass(frozen=True)
class MaintenanceInputs:
    """What plan_maintenance reads from the store (metrics are measured separately)."""

    packages: list[PackageFacts]
    results: pd.DataFrame
    open_tasks: list[TaskRef]


def load_maintenance_inputs(session: Session) -> MaintenanceInputs:
    """Packages with their latest release, every health-check result, and the open backlog."""
    latest: dict[str, Release] = {}
    for rel in session.exec(select(Release).order_by(col(Release.id))):
        latest[rel.package_key] = rel
    drills = drill_records(session)
    facts = []
    for p in session.exec(select(RolePackage).order_by(col(RolePackage.key))):
        r = latest.get(p.key)
        deployed = r.deployed_at if r is not None and r.rolled_back_at is None else None
        facts.append(PackageFacts(
            key=p.key, name=p.name, state=PackageState(p.state), health=dict(p.health or {}),
            fallback_plan=p.fallback_plan, fallback_drill=p.fallback_drill,
            has_legacy=r is not None and r.retirements > 0,
            retire_in_launch_window=p.retire_in_launch_window,
            release_id=r.id if r is not None else None, deployed_at=deployed,
            watch_ends_at=r.watch_ends_at if r is not None else None,
            legacy_retired_at=r.legacy_retired_at if r is not None else None,
            last_review_at=p.last_review_at,
            analysis_from=r.analysis_from if r is not None else None,
            drills=drills.get(p.key, ())))
    # sqlalchemy's select: sqlmodel's is typed for at most 4 columns.
    rows = session.execute(core_select(
        col(HealthCheckResult.release_id), col(HealthCheckResult.package_key),
        col(HealthCheckResult.check_name), col(HealthCheckResult.verdict),
        col(HealthCheckResult.due_at))).all()
    results = pd.DataFrame(rows, columns=["release_id", "package_key", "check_name", "verdict",
                                          "due_at"])
    tasks = session.exec(select(MaintenanceTask.dedupe_key, MaintenanceTask.package_key,
                                MaintenanceTask.kind)
                         .where(MaintenanceTask.closed_at == None)).all()  # noqa: E711
    return MaintenanceInputs(packages=facts, results=results,
                             open_tasks=[TaskRef(*t) for t in tasks])


# ------------------------------------------------------------------ the nightly run's I/O


def refresh_telemetry(rt: Runtime, directory: str | None) -> dict[str, int]:
    """Ingest every telemetry file in `directory` (re-ingesting a file replaces its rows)."""
    if not directory or not Path(directory).is_dir():
        return {}
    files = sorted(p for p in Path(directory).iterdir() if p.suffix in (".csv", ".json"))
    return ingest_telemetry(rt.database_url, files) if files else {}


def sweep_approval_deadlines(rt: Runtime, as_of: datetime) -> int:
    """Remind, escalate and time out pending owner handoffs; resume timed-out runs."""
    from wavekit.adapters.slack.deadlines import apply_deadlines
    from wavekit.adapters.slack.notifier import NullNotifier
    from wavekit.adapters.slack.receiver import prefect_resumer

    timed_out = apply_deadlines(
        rt.database_url, rt.notifier or NullNotifier(), as_of,
        reminder_after=timedelta(hours=rt.settings.approval_reminder_hours),
        escalate_after=timedelta(hours=rt.settings.approval_escalate_hours),
        deadline_after=timedelta(hours=rt.settings.approval_deadline_hours),
        resume=_quiet(prefect_resumer))
    return len(timed_out)


def _quiet(resume: Callable[[str, dict[str, Any]], None]
           ) -> Callable[[str, dict[str, Any]], None]:
    def call(flow_run_id: str, run_input: dict[str, Any]) -> None:
        # A run that is gone (crashed, cancelled) cannot be resumed; the store already holds
        # the timeout, so the re-run of its wave holds the package.
        with contextlib.suppress(Exception):
            resume(flow_run_id, run_input)
    return call


def nightly_window(deployed_at: datetime, as_of: datetime) -> tuple[datetime, datetime]:
    """The interval the nightly run judges: the last 24 hours, from the deploy at most."""
    return max(as_utc(as_of) - NIGHTLY_WINDOW, as_utc(deployed_at)), as_utc(as_of)


def plan_from_store(rt: Runtime, as_of: datetime) -> MaintenancePlan:
    """Measure every live package with the runtime's metrics and plan tonight's actions.

    A stepped release is measured on the members its cohorts granted so far, as the watch
    measures it: the others hold none of its grants yet and are not a finding.
    """
    from wavekit.adapters.store.packages import load_package_views
    from wavekit.adapters.telemetry import LiveMeasurement
    from wavekit.workflow.cohorts import step_facts

    with session_scope(rt.database_url) as s:
        inputs = load_maintenance_inputs(s)
        live = [p for p in inputs.packages if p.live and p.deployed_at is not None]
        stored = load_package_views(s, [p.key for p in live])
        views = {}
        for p in live:
            view = stored[p.key]
            steps = step_facts(s, p.release_id) if p.release_id is not None else None
            if steps is not None:  # as in watch.watch_tick
                view = replace(view, members=view.members & steps.granted)
            views[p.key] = view
        held_back = {p.key: _active_suspended(s, p.release_id) for p in live
                     if p.release_id is not None}
    todo = []
    for p in live:
        assert p.deployed_at is not None, "a live release has been deployed"
        since, _ = nightly_window(p.deployed_at, as_of)
        todo.append(LiveMeasurement(views[p.key], as_utc(p.deployed_at), since,
                                    suspended=held_back.get(p.key, frozenset())))
    # One read of the target for every scope.
    scopes = frozenset().union(*(v.scope for v in views.values()))
    measure_live = getattr(rt.metrics, "measure_live", None)
    if measure_live is not None:  # the store's telemetry, loaded once for every package
        metrics = dict(measure_live(todo, as_utc(as_of), held=read_grant_frame(rt.target,
                                                                               scopes)))
    else:
        held: dict[str, list[Grant]] = {}
        for g in rt.target.read_grants(scopes) if scopes else ():
            held.setdefault(g.entitlement, []).append(g)  # the read's own Grants, never copies
        metrics = {m.package.key: dict(rt.metrics.measure(
            m.package, deployed_at=m.deployed_at, since=m.since, as_of=as_utc(as_of),
            target_grants=frozenset(chain.from_iterable(held.get(e, ())
                                                        for e in m.package.scope)),
            suspended=m.suspended)) for m in todo}
    return plan_maintenance(inputs.packages, metrics, inputs.results, inputs.open_tasks, as_of,
                            MaintenanceThresholds(rt.settings.review_cadence_days))


def read_grant_frame(target: Target, entitlements: Collection[str]) -> pd.DataFrame:
    """The target's grants of `entitlements` as a frame (identity, entitlement), read once:
    by the target's own frame read when it has one (the sandbox), else from its Grants."""
    if not entitlements:
        return grant_frame(())
    reader = getattr(target, "read_grant_frame", None)
    if reader is not None:
        return cast(pd.DataFrame, reader(entitlements))
    return grant_frame(target.read_grants(entitlements))


def _active_suspended(session: Session, release_id: int) -> GrantSet:
    from wavekit.adapters.store import suspensions

    out: set[Grant] = set()
    for row in suspensions.suspensions(session, release_id, active_only=True):
        out |= suspensions.suspended_grants(session, row.id)
    return frozenset(out)


def contain_package(rt: Runtime, decision: Decision, as_of: datetime) -> ContainOutcome:
    """Contain a live package tonight's run found an anomaly in (workflow.containment): the
    members the anomaly names over the nightly window lose the package's grants, audited."""
    from wavekit.adapters.store.packages import load_package_view
    from wavekit.workflow import containment

    release_id = containment.live_release_id(rt, decision.package_key)
    with session_scope(rt.database_url) as s:
        view = load_package_view(s, decision.package_key)
        deployed_at = get_one(s, Release, release_id).deployed_at
    assert deployed_at is not None, f"live release {release_id} has no deploy time"
    since, until = nightly_window(deployed_at, as_of)
    find = getattr(rt.metrics, "implicated", None)
    who: set[str] = set()
    for check in checks_for(view.health):
        if find is not None and check.name in decision.checks:
            who |= find(view, check.metric, deployed_at=as_utc(deployed_at), since=since,
                        as_of=until, threshold=check.threshold)
    return containment.contain(rt, release_id, f"nightly maintenance: {decision.reason}",
                               who, checks=decision.checks, as_of=as_of)


def record_backlog(rt: Runtime, plan: MaintenancePlan, as_of: datetime) -> tuple[int, int]:
    with session_scope(rt.database_url) as s:
        opened, closed = apply_backlog(s, plan, as_of)
        return len(opened), len(closed)


def retirements_due(rt: Runtime, plan: MaintenancePlan) -> list[int]:
    """Release ids whose legacy grants tonight's plan retires."""
    keys = [d.package_key for d in plan.retire_legacy]
    with session_scope(rt.database_url) as s:
        out = []
        for key in keys:
            rid = s.exec(select(Release.id).where(Release.package_key == key,
                                                  Release.rolled_back_at == None)  # noqa: E711
                         .order_by(col(Release.id).desc())).first()
            if rid is not None:
                out.append(rid)
        return out
