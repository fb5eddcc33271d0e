"""The nightly run's decisions on hand-built facts, and the backlog kept in the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlmodel import select

from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import HealthCheckResult, MaintenanceTask, Release, RolePackage
from wavekit.domain.drills import DrillRecord
from wavekit.domain.states import PackageState
from wavekit.workflow.maintenance import (
    BacklogItem,
    MaintenancePlan,
    MaintenanceThresholds,
    PackageFacts,
    TaskRef,
    apply_backlog,
    load_maintenance_inputs,
    plan_maintenance,
)

D0 = datetime(2026, 4, 8, 9, tzinfo=UTC)  # deploy
AS_OF = D0 + timedelta(days=5)
HEALTHY = {"adoption": 0.9, "access_drift": 0.0, "ticket_noise": 1.0, "exception_growth": 0.0,
           "export_anomaly": 1.0, "escalation_anomaly": 0.0}
NO_RESULTS = pd.DataFrame(columns=["release_id", "package_key", "check_name", "verdict"])


def facts(key: str, **kw) -> PackageFacts:
    # Its fallback is tested by a recorded signed drill (catalog text alone proves nothing).
    signed = DrillRecord(key, "manual", True, D0, id=1, signed_by="Owen Scott")
    base = dict(state=PackageState.WATCHING, release_id=1, deployed_at=D0,
                last_review_at=D0, fallback_plan="revert", fallback_drill="signed",
                drills=(signed,))
    return PackageFacts(key=key, **{**base, **kw})


def plan(packages, metrics=None, results=NO_RESULTS, tasks=(), as_of=AS_OF, **thresholds):
    return plan_maintenance(packages, metrics or {}, results, tasks, as_of,
                            MaintenanceThresholds(**thresholds))  # review cadence only


def checks(*rows: tuple[str, int, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["package_key", "release_id", "check_name", "verdict"])


def keys(decisions) -> list[str]:
    return [d.package_key for d in decisions]


# ------------------------------------------------------------------ rollback and containment


def test_rollback_when_a_check_fails_past_its_failure_limit() -> None:
    # The watch's limits (wavekit.domain.health): ticket_noise and access_drift tolerate 1 failure,
    # adoption 2.
    results = checks(
        ("a", 1, "ticket_noise", "failed"), ("a", 1, "ticket_noise", "failed"),  # 2 > 1
        ("b", 1, "ticket_noise", "failed"), ("b", 1, "adoption", "failed"),  # within limits
        ("b", 0, "ticket_noise", "failed"),  # an earlier release's failure does not count
        ("c", 1, "access_drift", "failed"),  # c tolerates none: 1 > 0
        ("d", 1, "adoption", "failed"), ("d", 1, "adoption", "failed"),  # 2, d allows 3
        ("d", 1, "adoption", "failed"),
        ("e", 1, "adoption", "inconclusive"), ("e", 1, "adoption", "inconclusive"),
    )
    p = plan([facts("a"), facts("b"), facts("c", health={"access_drift": {"failure_limit": 0}}),
              facts("d", health={"adoption": {"failure_limit": 3}}), facts("e")],
             {k: HEALTHY for k in "abcde"}, results)
    assert [(d.package_key, d.reason) for d in p.rollback] == [
        ("a", "ticket_noise failed 2 time(s) (limit 1)"),
        ("c", "access_drift failed 1 time(s) (limit 0)"),
    ]
    assert p.contain == () and p.tune == ()


def test_anomalies_contain_or_roll_back() -> None:
    spike = {**HEALTHY, "export_anomaly": 7.0}
    escalated = {**HEALTHY, "escalation_anomaly": 2.0}
    edge = {**HEALTHY, "export_anomaly": 6.0}  # at the limit is not over it
    p = plan([facts("spike"), facts("esc"), facts("edge"),
              facts("strict", health={"rollback_on_anomaly": True})],
             {"spike": spike, "esc": escalated, "edge": edge, "strict": spike})
    assert [(d.package_key, d.reason) for d in p.contain] == [
        ("spike", "bulk export spike (robust z 7.0)"),
        ("esc", "2 unexpected privileged escalation(s)")]
    assert [(d.package_key, d.reason) for d in p.rollback] == [
        ("strict", "anomaly with rollback_on_anomaly: bulk export spike (robust z 7.0)")]
    assert [i.dedupe_key for i in p.open] == ["anomaly:esc", "anomaly:spike", "anomaly:strict"]


def test_a_contained_package_is_still_judged() -> None:
    spike = {**HEALTHY, "export_anomaly": 9.0}
    p = plan([facts("c", state=PackageState.CONTAINED),
              facts("r", state=PackageState.CONTAINED),
              facts("q", state=PackageState.CONTAINED)],
             {"c": spike, "r": spike, "q": HEALTHY},
             checks(("r", 1, "ticket_noise", "failed"), ("r", 1, "ticket_noise", "failed"),
                    # The anomaly the watch contained it for is no reason to roll back.
                    ("c", 1, "export_anomaly", "failed"), ("q", 1, "export_anomaly", "failed")))
    # A new anomaly widens the containment; a failure past its limit rolls it back (and a
    # package rolled back tonight is not contained as well).
    assert [(d.package_key, d.checks) for d in p.contain] == [("c", ("export_anomaly",))]
    assert keys(p.rollback) == ["r"]
    strict = plan([facts("s", health={"rollback_on_anomaly": True})], {"s": HEALTHY},
                  checks(("s", 1, "export_anomaly", "failed")))
    assert keys(strict.rollback) == ["s"]


def test_results_before_a_restore_do_not_count() -> None:
    results = pd.DataFrame(
        [("a", 1, "ticket_noise", "failed", D0 + timedelta(days=1)),
         ("a", 1, "ticket_noise", "failed", D0 + timedelta(days=2))],
        columns=["package_key", "release_id", "check_name", "verdict", "due_at"])
    assert keys(plan([facts("a")], {"a": HEALTHY}, results).rollback) == ["a"]
    restored = facts("a", analysis_from=D0 + timedelta(days=2))
    assert plan([restored], {"a": HEALTHY}, results).rollback == ()


def test_rollback_supersedes_tuning() -> None:
    results = checks(("a", 1, "access_drift", "failed"), ("a", 1, "access_drift", "failed"))
    # 2 failures > the limit of 1
    p = plan([facts("a")], {"a": {**HEALTHY, "access_drift": 0.3}}, results)
    assert keys(p.rollback) == ["a"] and p.tune == ()
    assert all(i.kind != "tuning" for i in p.open)


# ------------------------------------------------------------------ tuning


def test_tuning_for_drift_noise_adoption_and_exception_growth() -> None:
    p = plan([facts("drift"), facts("noisy"), facts("idle"), facts("growing"), facts("edge"),
              facts("early", deployed_at=AS_OF - timedelta(days=2))],
             {"drift": {**HEALTHY, "access_drift": 0.06},
              "noisy": {**HEALTHY, "ticket_noise": 2.5},
              "idle": {**HEALTHY, "adoption": 0.4},  # judged from day 3; this is day 5
              "growing": {**HEALTHY, "exception_growth": 1.5},
              # exactly at every limit: fine
              "edge": {**HEALTHY, "access_drift": 0.05, "ticket_noise": 2.0, "adoption": 0.5,
                       "exception_growth": 1.0},
              # adoption is not judged in the first 3 days
              "early": {**HEALTHY, "adoption": 0.1}})
    assert [(d.package_key, d.reason) for d in p.tune] == [
        ("drift", "access drift 0.06 above 0.05"),
        ("noisy", "ticket noise 2.50 above 2"),
        ("idle", "adoption 40% below 50%"),
        ("growing", "exception growth 1.50 above 1"),
    ]
    assert [(i.dedupe_key, i.kind) for i in p.open] == [
        ("exception_review:growing", "exception_review"), ("tuning:drift", "tuning"),
        ("tuning:idle", "tuning"), ("tuning:noisy", "tuning")]


def test_package_health_overrides_apply_as_in_the_watch() -> None:
    p = plan([facts("a", health={"ticket_noise": {"threshold": 3.0}}),
              facts("b", health={"adoption": False})],  # the check is dropped
             {"a": {**HEALTHY, "ticket_noise": 2.5}, "b": {**HEALTHY, "adoption": 0.1}})
    assert p.tune == ()
    early = plan([facts("c", deployed_at=AS_OF - timedelta(hours=12))],
                 {"c": {**HEALTHY, "ticket_noise": 9.0}})
    assert early.tune == ()  # ticket noise is judged from day 1, as in the watch


def test_only_live_packages_are_judged() -> None:
    bad = {**HEALTHY, "access_drift": 0.5, "export_anomaly": 50.0}
    p = plan([facts("never-deployed", deployed_at=None),
              facts("pre-release", state=PackageState.NEEDS_TUNING, deployed_at=None),
              facts("rolled-back", state=PackageState.ROLLED_BACK)],
             {"never-deployed": bad, "pre-release": bad, "rolled-back": bad},
             checks(("rolled-back", 1, "adoption", "failed"),
                    ("rolled-back", 1, "adoption", "failed")))
    assert p.summary() == {"rollback": 0, "contain": 0, "tune": 0, "renew_ownership": 0,
                           "retire_legacy": 0, "open": 0, "close": 0}


# ------------------------------------------------------------------ ownership and legacy


def test_ownership_renewal_at_the_review_cadence() -> None:
    p = plan([facts("overdue", last_review_at=AS_OF - timedelta(days=31)),
              facts("recent", last_review_at=AS_OF - timedelta(days=29)),
              facts("never", last_review_at=None, deployed_at=AS_OF - timedelta(days=30)),
              facts("never-new", last_review_at=None)],  # deployed 5 days ago
             {})
    assert [(d.package_key, d.reason) for d in p.renew_ownership] == [
        ("overdue", "last owner review 2026-03-13, 31 days ago (cadence 30 days)"),
        ("never", "never reviewed; deployed 2026-03-14, 30 days ago (cadence 30 days)"),
    ]
    assert keys(plan([facts("overdue", last_review_at=AS_OF - timedelta(days=31))], {},
                     review_cadence_days=45).renew_ownership) == []


def test_legacy_retirement_after_the_watch_passes() -> None:
    legacy = dict(has_legacy=True, state=PackageState.STABLE)
    ended = AS_OF - timedelta(days=1)
    p = plan([facts("due", watch_ends_at=AS_OF - timedelta(hours=1), **legacy),
              facts("watching", watch_ends_at=AS_OF + timedelta(days=1), **legacy),
              # The one retirement rule (as the watch applies it): never while a human decides,
              # while an anomaly is open, or while the watch is still going past its window.
              facts("tuning", watch_ends_at=ended, has_legacy=True,
                    state=PackageState.NEEDS_TUNING),
              facts("overdue-watch", watch_ends_at=ended, has_legacy=True,
                    state=PackageState.WATCHING),
              facts("contained", watch_ends_at=ended, has_legacy=True,
                    state=PackageState.CONTAINED),
              facts("tolerated", watch_ends_at=AS_OF - timedelta(days=1), **legacy),
              facts("failing", watch_ends_at=AS_OF - timedelta(days=1), **legacy),
              facts("done", watch_ends_at=AS_OF - timedelta(days=1),
                    legacy_retired_at=AS_OF - timedelta(hours=2), **legacy),
              facts("no-legacy", watch_ends_at=AS_OF - timedelta(days=1),
                    state=PackageState.STABLE),
              facts("launch-window", has_legacy=True, retire_in_launch_window=True,
                    watch_ends_at=AS_OF + timedelta(days=2))],
             {}, checks(("tolerated", 1, "adoption", "failed"),  # 1 <= limit 2
                        ("failing", 1, "ticket_noise", "failed"),  # 2 > limit 1
                        ("failing", 1, "ticket_noise", "failed")))
    assert [(d.package_key, d.reason) for d in p.retire_legacy] == [
        ("due", "watch passed on 2026-04-13; legacy grants still held"),
        ("tolerated", "watch passed on 2026-04-12; legacy grants still held"),
        ("launch-window", "launch window passed on 2026-04-08; legacy grants still held"),
    ]
    assert keys(p.rollback) == ["failing"]


# ------------------------------------------------------------------ backlog


def test_backlog_opens_no_twins_and_closes_what_cleared() -> None:
    open_tasks = [
        TaskRef("tuning:a", "a", "tuning"),  # still wanted: stays, no twin
        TaskRef("tuning:b", "b", "tuning"),  # b is fine now: closes
        TaskRef("tuning:c", "c", "tuning"),  # c was not measured tonight: stays
        TaskRef("exception_review:gone", "gone", "exception_review"),  # not in the catalog
        TaskRef("anomaly:b", "b", "anomaly"),  # people close anomaly reviews
        TaskRef("approval:b", "b", "approval"),  # not a maintenance kind: never touched
        TaskRef("approval:gone", "gone", "approval"),  # not even when the package is gone
        TaskRef("drill:d", "d", "drill"),  # d's drill is signed now
        TaskRef("legacy_retirement:e", "e", "legacy_retirement"),  # retired
        TaskRef("ownership_renewal:b", "b", "ownership_renewal"),  # reviewed recently
    ]
    p = plan([facts("a"), facts("b"), facts("c"), facts("d"),
              facts("e", has_legacy=True, legacy_retired_at=AS_OF - timedelta(days=1)),
              facts("f", fallback_drill="pending", drills=())],
             {"a": {**HEALTHY, "access_drift": 0.2}, "b": HEALTHY, "d": HEALTHY,
              "e": HEALTHY},
             tasks=open_tasks)
    assert [(i.dedupe_key, i.reason) for i in p.open] == [
        ("drill:f", "rollback drill pending: no drill recorded; rehearse the rollback "
                    "(`wavekit drill f`) or record a signed manual drill")]
    assert [(i.dedupe_key, i.reason) for i in p.close] == [
        ("drill:d", "rollback drill signed by Owen Scott on 2026-04-08"),
        ("exception_review:gone", "package is no longer in the catalog"),
        ("legacy_retirement:e", "legacy grants retired on 2026-04-12"),
        ("ownership_renewal:b", "owner reviewed on 2026-04-08"),
        ("tuning:b", "adoption, access drift and ticket noise within limits"),
    ]


def test_tuning_stays_open_while_a_metric_is_unknown() -> None:
    p = plan([facts("a")], {"a": {**HEALTHY, "adoption": None}},
             tasks=[TaskRef("tuning:a", "a", "tuning")])
    assert p.close == ()


def test_empty_inputs_plan_nothing() -> None:
    p = plan([], {})
    assert p == MaintenancePlan(as_of=AS_OF)


# ------------------------------------------------------------------ the store


def test_apply_backlog_opens_closes_and_reopens(loaded_store: str) -> None:
    item = BacklogItem("tuning:hr", "hr-case-intake-specialist", "tuning", "drift 0.2")
    opening = MaintenancePlan(as_of=AS_OF, open=(item,))
    with session_scope(loaded_store) as s:
        opened, closed = apply_backlog(s, opening, AS_OF)
        assert [t.dedupe_key for t in opened] == ["tuning:hr"] and closed == []
    with session_scope(loaded_store) as s:  # the nightly run re-runs: nothing new
        assert apply_backlog(s, opening, AS_OF) == ([], [])
    later = AS_OF + timedelta(days=1)
    closing = MaintenancePlan(as_of=later, close=(BacklogItem(
        "tuning:hr", "hr-case-intake-specialist", "tuning", "within limits"),))
    with session_scope(loaded_store) as s:
        opened, closed = apply_backlog(s, closing, later)
        assert opened == [] and [t.close_reason for t in closed] == ["within limits"]
    with session_scope(loaded_store) as s:
        assert apply_backlog(s, closing, later) == ([], [])  # already closed
    again = AS_OF + timedelta(days=2)
    with session_scope(loaded_store) as s:
        opened, _ = apply_backlog(s, opening, again)  # the condition came back
        assert len(opened) == 1
    with session_scope(loaded_store) as s:
        tasks = list(s.exec(select(MaintenanceTask)))
        assert [(t.dedupe_key, t.closed_at, t.close_reason) for t in tasks] == [
            ("tuning:hr", None, None)]  # the same row, reopened
        assert tasks[0].opened_at.replace(tzinfo=UTC) == again
        actions = [e.action for e in audit.events(s, package_key="hr-case-intake-specialist")
                   if e.action != "drill_recorded"]  # the example world's drill
    assert actions == ["maintenance_task_opened", "maintenance_task_closed",
                       "maintenance_task_opened"]


def test_nightly_plan_from_the_example_store(loaded_store: str) -> None:
    with session_scope(loaded_store) as s:
        old = Release(package_key="hr-case-intake-specialist", approved_at=D0,
                      deployed_at=D0, rolled_back_at=D0 + timedelta(days=1), retirements=3)
        s.add(old)
        s.flush()
        s.add(Release(package_key="finance-month-end-operator", approved_at=D0,
                      deployed_at=D0, watch_ends_at=D0 + timedelta(days=14)))
        fin = s.get(RolePackage, "finance-month-end-operator")
        fin.state = PackageState.WATCHING
        s.add(fin)
        s.add(HealthCheckResult(release_id=old.id, package_key="hr-case-intake-specialist",
                                check_name="ticket_noise", due_at=D0, measured_at=D0,
                                verdict="failed"))
        s.add(MaintenanceTask(dedupe_key="drill:finance-month-end-operator",
                              package_key="finance-month-end-operator", kind="drill",
                              reason="r", opened_at=D0))
    with session_scope(loaded_store) as s:
        inputs = load_maintenance_inputs(s)
    by_key = {f.key: f for f in inputs.packages}
    assert by_key["finance-month-end-operator"].live
    # HR's latest release was rolled back: it is not live, whatever its state says.
    assert by_key["hr-case-intake-specialist"].deployed_at is None
    # Legacy grants are the release's: HR's plan retired 3, Finance's retires none.
    assert by_key["hr-case-intake-specialist"].has_legacy
    assert not by_key["finance-month-end-operator"].has_legacy
    assert inputs.results[["package_key", "verdict"]].values.tolist() == [
        ["hr-case-intake-specialist", "failed"]]
    assert inputs.open_tasks == [TaskRef("drill:finance-month-end-operator",
                                         "finance-month-end-operator", "drill")]
    p = plan_maintenance(inputs.packages, {"finance-month-end-operator": HEALTHY},
                         inputs.results, inputs.open_tasks,
                         D0 + timedelta(days=31), MaintenanceThresholds())
    # Finance was deployed 31 days ago and never reviewed. As of then no drill is recorded
    # (the example world's drills come later): every drill is pending, whatever the catalog
    # text says, so finance's drill task stays open and the others open.
    assert [i.dedupe_key for i in p.open] == [
        "drill:hr-case-intake-specialist", "drill:procurement-request-coordinator",
        "drill:service-desk-resolver", "drill:warehouse-inventory-poster",
        "ownership_renewal:finance-month-end-operator"]
    assert [i.dedupe_key for i in p.close] == []


@pytest.mark.parametrize("kind", ["tuning", "drill", "anomaly"])
def test_closed_tasks_are_not_open(kind: str) -> None:
    closed = MaintenanceTask(dedupe_key=f"{kind}:a", package_key="a", kind=kind, reason="r",
                             closed_at=AS_OF)
    p = plan([facts("a", fallback_drill="pending", drills=())],
             {"a": {**HEALTHY, "access_drift": 0.5, "export_anomaly": 9.0}},
             tasks=[closed])
    # A closed task is not open: the wanted item is opened again (apply_backlog reopens it).
    assert f"{kind}:a" in [i.dedupe_key for i in p.open]
