"""The portal's KPIs on the example catalog, worked out by hand from packages.yaml."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.lifecycle import states_as_of, transition
from wavekit.adapters.store.models import (
    Approval,
    HealthCheckResult,
    Identity,
    MaintenanceTask,
    PackageMember,
    Release,
    RolePackage,
)
from wavekit.domain.clock import utcnow
from wavekit.domain.states import PackageState
from wavekit.present.kpis import FACTOR_WEIGHTS, action_for, compute_kpis, deploy_confidence

NOW = datetime(2026, 4, 20, 12, tzinfo=UTC)
S = PackageState
FIN, HR = "finance-month-end-operator", "hr-case-intake-specialist"
PROC, SD, WH = "procurement-request-coordinator", "service-desk-resolver", \
    "warehouse-inventory-poster"


def kpis(url: str, **kw):
    with session_scope(url) as s:
        return compute_kpis(s, NOW, **kw)


def set_state(url: str, **states: PackageState) -> None:
    with session_scope(url) as s:
        for key, state in states.items():
            pkg = s.get(RolePackage, key)
            pkg.state = state
            s.add(pkg)


def release(key: str, approved: datetime, deploy_hours: float | None, *,
            stable_days: float | None = None, rolled_back: bool = False) -> Release:
    deployed = approved + timedelta(hours=deploy_hours) if deploy_hours is not None else None
    return Release(package_key=key, wave=1, started_at=approved, approved_at=approved,
                   deployed_at=deployed,
                   stable_at=approved + timedelta(days=stable_days) if stable_days else None,
                   rolled_back_at=deployed + timedelta(days=1) if rolled_back else None)


def test_example_catalog_before_any_release(loaded_store: str) -> None:
    k = kpis(loaded_store)
    # Wave 1 holds finance (release ready) and HR (needs tuning, never shipped).
    assert (k.wave_ready.wave, k.wave_ready.packages, k.wave_ready.release_ready) == (
        1, (FIN, HR), 1)
    assert k.wave_ready.count == 2
    # HR's "needs tuning" is pre-release: nothing is in production yet.
    assert k.roles_monitored == 0 and k.coverage_health is None and k.coverage == ()
    assert k.maintenance_tasks_open == 0
    assert k.median_deploy_time is None and k.median_time_to_stable is None
    # Every package has a fallback plan; no rollback drill is recorded as of NOW: 0 of 5. Four
    # say "signed" in the catalog: text, shown apart, counted nowhere.
    assert k.fallback_tested == (0, 5) and k.fallback_signed_catalog == 4
    # Now, the example world's two recorded signed drills (HR, warehouse) count, and only they.
    with session_scope(loaded_store) as s:
        later = compute_kpis(s, utcnow())
    assert later.fallback_tested == (2, 5) and later.fallback_signed_catalog == 2
    assert {k for k, d in later.drills.items() if d.tested} == {HR, WH}
    # release_ready -> Release; monitoring, scheduled -> Monitor; needs_tuning -> Tune;
    # rollback_ready -> Rollback
    assert k.action_counts == {"Release": 1, "Monitor": 2, "Tune": 1, "Rollback": 1}
    assert k.active_waves == () and k.review_cadence_days == 30
    rows = {r.key: r for r in k.packages}
    assert [r.key for r in k.packages] == [FIN, HR, PROC, SD, WH]  # by wave, no wave last
    assert {key: (r.members, r.entitlements, r.state_label, r.action)
            for key, r in rows.items()} == {
        FIN: (42, 11, "Release ready", "Release"),
        HR: (24, 8, "Needs tuning", "Tune"),
        PROC: (31, 9, "Scheduled", "Monitor"),
        SD: (58, 14, "Monitoring", "Monitor"),
        WH: (17, 7, "Rollback ready", "Rollback"),
    }
    assert rows[FIN].watch_days == 14 and rows[FIN].telemetry_focus == "Adoption and drift"


def test_deploy_confidence_of_the_example_packages(loaded_store: str) -> None:
    c = kpis(loaded_store).deploy_confidence
    # Nothing has shipped and no drill is recorded as of NOW (the example world's drills are
    # recorded later): every package earns half of "Last watch healthy" (never released) and
    # nothing of the drill factor ("signed" in the catalog is text, not a recorded drill).
    # Finance: 0 + 10 + 20 + 15 + 15 + 10 = 70.
    assert c[FIN].score == 70 and c[FIN].level == "Medium"
    unmet = {key: {f.name: f.points for f in conf.factors if not f.met}
             for key, conf in c.items()}
    half = {"Rollback drill recorded": 0, "Last watch healthy": 10}
    assert unmet == {
        FIN: half,
        HR: {**half, "Risk level": 5},  # medium risk earns half of 10
        PROC: {**half, "Dependencies stable": 0},  # finance is not stable yet
        SD: {**half, "Risk level": 5},  # drill pending
        WH: {**half, "Risk level": 0},  # high risk
    }
    assert {key: conf.score for key, conf in c.items()} == {
        FIN: 70, HR: 65, PROC: 55, SD: 65, WH: 60}
    assert next(f for f in c[PROC].factors if f.name == "Dependencies stable").detail == (
        f"not stable: {FIN}")


def test_a_recorded_drill_and_a_stable_release_earn_full_confidence(loaded_store: str) -> None:
    from wavekit.adapters.store.models import DrillRun

    with session_scope(loaded_store) as s:
        s.add(release(FIN, NOW - timedelta(days=20), 10, stable_days=15))
        s.add(DrillRun(package_key=FIN, kind="automated", target="drill-sandbox",
                       started_at=NOW - timedelta(days=2), finished_at=NOW - timedelta(days=2),
                       status="passed", duration_seconds=3.0, objective_minutes=30))
    set_state(loaded_store, **{FIN: PackageState.STABLE})
    c = kpis(loaded_store).deploy_confidence[FIN]
    assert (c.score, c.level) == (100, "High") and all(f.met for f in c.factors)
    # As of before the drill and before stable, the same store tells the earlier story.
    with session_scope(loaded_store) as s:
        early = compute_kpis(s, NOW - timedelta(days=10)).deploy_confidence[FIN]
    assert {f.name: f.points for f in early.factors if not f.met} == {
        "Rollback drill recorded": 0, "Last watch healthy": 10}


def test_after_wave_one_ships(loaded_store: str) -> None:
    approved = NOW - timedelta(days=5)
    with session_scope(loaded_store) as s:
        s.add_all([release(FIN, approved, 28), release(HR, approved, 20)])
    set_state(loaded_store, **{FIN: PackageState.WATCHING, HR: PackageState.NEEDS_TUNING})
    k = kpis(loaded_store)
    assert k.roles_monitored == 2  # finance watching; HR needs tuning with a live release
    assert (k.wave_ready.wave, k.wave_ready.packages) == (2, (PROC, SD))
    assert k.wave_ready.release_ready == 0
    assert k.active_waves == (1,)  # finance is being watched; HR's tuning is not in flight
    # Both live roles' members are all active identities matching their rules: 2 / 2.
    assert k.coverage_health == 1.0
    assert [(c.key, c.members, c.matching, c.population) for c in k.coverage] == [
        (FIN, 42, 42, 62), (HR, 24, 24, 30)]
    # (20 h, 28 h): the median of two is their mean
    assert k.median_deploy_time == timedelta(hours=24)

    set_state(loaded_store, **{FIN: PackageState.STABLE})
    assert kpis(loaded_store).deploy_confidence[PROC].score == 70  # its dependency is stable
    # Asking that members also cover 90% of the rule's population: finance 42/62 and HR 24/30
    # fall short, so no role is aligned.
    assert kpis(loaded_store, min_population_share=0.9).coverage_health == 0.0


@pytest.mark.parametrize(("movers", "aligned"), [(4, True), (5, False)])
def test_coverage_drops_when_members_leave_the_population(loaded_store: str, movers: int,
                                                          aligned: bool) -> None:
    with session_scope(loaded_store) as s:
        s.add(release(FIN, NOW - timedelta(days=3), 24))
        members = sorted(s.exec(select(PackageMember.identity_id)
                                .where(PackageMember.package_key == FIN)))
        for ident in members[:movers]:
            person = s.get(Identity, ident)
            person.department = "Sales"  # moved team, kept the access
            s.add(person)
    set_state(loaded_store, **{FIN: PackageState.WATCHING})
    k = kpis(loaded_store)
    # 4 movers: 38 / 42 = 0.905 >= 0.9; 5 movers: 37 / 42 = 0.881 < 0.9
    assert k.coverage[0].matching == 42 - movers
    assert k.coverage_health == (1.0 if aligned else 0.0)


def test_inactive_members_do_not_match(loaded_store: str) -> None:
    with session_scope(loaded_store) as s:
        s.add(release(HR, NOW - timedelta(days=3), 24))
        members = sorted(s.exec(select(PackageMember.identity_id)
                                .where(PackageMember.package_key == HR)))
        for ident in members[:3]:
            person = s.get(Identity, ident)
            person.active = False  # left the company
            s.add(person)
    set_state(loaded_store, **{HR: PackageState.STABLE})
    cov = kpis(loaded_store).coverage
    # 21 / 24 = 0.875 < 0.9; the population shrinks to the 27 active HR Ops people
    assert [(c.matching, c.population, c.aligned) for c in cov] == [(21, 27, False)]


def test_median_deploy_and_stable_times(loaded_store: str) -> None:
    t = NOW - timedelta(days=30)
    with session_scope(loaded_store) as s:
        s.add_all([
            release(FIN, t, 20, stable_days=15),
            release(FIN, t, 28, rolled_back=True),  # a rolled-back deploy still took 28 h
            release(HR, t, 40, stable_days=8),
            release(HR, t, None),  # approved, never deployed: no deploy time
            release(HR, NOW - timedelta(hours=1), 2),  # deployed after as_of
        ])
    k = kpis(loaded_store)
    assert k.median_deploy_time == timedelta(hours=28)  # median of 20, 28, 40 h
    assert k.median_time_to_stable == timedelta(days=11.5)  # median of 15 and 8 days


def test_single_release_and_open_tasks_as_of(loaded_store: str) -> None:
    with session_scope(loaded_store) as s:
        s.add(release(FIN, NOW - timedelta(days=2), 30))
        s.add_all([
            MaintenanceTask(dedupe_key="a", kind="tuning", reason="r",
                            opened_at=NOW - timedelta(days=3)),  # open: counts
            MaintenanceTask(dedupe_key="b", kind="tuning", reason="r",
                            opened_at=NOW - timedelta(days=3),
                            closed_at=NOW - timedelta(days=1)),  # closed before: no
            MaintenanceTask(dedupe_key="c", kind="drill", reason="r",
                            opened_at=NOW - timedelta(days=3),
                            closed_at=NOW + timedelta(days=1)),  # closed later: counts
            MaintenanceTask(dedupe_key="d", kind="drill", reason="r",
                            opened_at=NOW + timedelta(hours=1)),  # opened later: no
        ])
    k = kpis(loaded_store)
    assert k.median_deploy_time == timedelta(hours=30)
    assert k.maintenance_tasks_open == 2


def test_state_kpis_show_the_state_of_as_of(loaded_store: str) -> None:
    """Finance goes Release ready -> Scheduled -> ... -> Stable -> Rolled back over days;
    the KPIs at each date in between show that date's state, not today's."""
    day = NOW - timedelta(days=20)
    path = [(0, S.SCHEDULED), (1, S.AWAITING_HANDOFF), (2, S.DEPLOYING), (3, S.WATCHING),
            (5, S.STABLE), (8, S.ROLLING_BACK), (8.5, S.ROLLED_BACK)]
    with session_scope(loaded_store) as s:
        fin = s.get(RolePackage, FIN)
        for days, state in path:
            transition(s, fin, state, at=day + timedelta(days=days))

    def at(days: float):
        with session_scope(loaded_store) as s:
            return compute_kpis(s, day + timedelta(days=days))

    def state_of(k, key: str) -> str:
        return next(r.state for r in k.packages if r.key == key)

    # (as_of in days, finance's state, roles monitored, wave 1 queue, release ready, active)
    expected = [
        (-1, "release_ready", 0, (FIN, HR), 1, ()),  # before its first change: as loaded
        (0, "scheduled", 0, (FIN, HR), 0, ()),  # a change at as_of counts
        (1.5, "awaiting_handoff", 0, (FIN, HR), 0, (1,)),
        (2.5, "deploying", 0, (FIN, HR), 0, (1,)),
        (4, "watching", 1, (HR,), 0, (1,)),
        (6, "stable", 1, (HR,), 0, ()),
        (8.2, "rolling_back", 0, (HR,), 0, (1,)),
        (9, "rolled_back", 0, (HR,), 0, ()),
    ]
    for days, state, monitored, queue, ready, active in expected:
        k = at(days)
        got = (state_of(k, FIN), k.roles_monitored, k.wave_ready.packages,
               k.wave_ready.release_ready, k.active_waves)
        assert got == (state, monitored, queue, ready, active), days
    # Actions and the confidence of a dependent follow the date too.
    assert at(6).action_counts["Monitor"] == 3 and at(9).action_counts["Rollback"] == 2
    deps = {d: next(f for f in at(d).deploy_confidence[PROC].factors
                    if f.name == "Dependencies stable").met for d in (4, 6, 9)}
    assert deps == {4: False, 6: True, 9: False}
    # Live as of day 4, finance is in the coverage figure (with today's members).
    assert [c.key for c in at(4).coverage] == [FIN] and at(9).coverage == ()


def test_states_as_of_reads_the_audit_trail(loaded_store: str) -> None:
    t = NOW - timedelta(days=3)
    with session_scope(loaded_store) as s:
        fin = s.get(RolePackage, FIN)
        transition(s, fin, S.SCHEDULED, at=t)
        transition(s, fin, S.HELD, at=t)  # the same instant: recorded order decides
    with session_scope(loaded_store) as s:
        assert states_as_of(s, t)[FIN] == S.HELD
        assert states_as_of(s, t - timedelta(seconds=1))[FIN] == S.RELEASE_READY
        # Packages with no state change keep their stored state; every package is there.
        assert states_as_of(s, t) == {FIN: S.HELD, HR: S.NEEDS_TUNING, PROC: S.SCHEDULED,
                                      SD: S.MONITORING, WH: S.ROLLBACK_READY}


def test_coverage_says_members_are_not_versioned() -> None:
    from wavekit.present.kpis import DEFINITIONS

    assert "not versioned" in DEFINITIONS["Coverage health"]


def test_failed_checks_and_rollbacks_cost_confidence(loaded_store: str) -> None:
    with session_scope(loaded_store) as s:
        r = release(HR, NOW - timedelta(days=4), 10, rolled_back=True)
        s.add(r)
        s.flush()
        s.add(HealthCheckResult(release_id=r.id, package_key=HR, check_name="ticket_noise",
                                due_at=NOW, measured_at=NOW, verdict="failed"))
    factor = next(f for f in kpis(loaded_store).deploy_confidence[HR].factors
                  if f.name == "Clean release history")
    assert (factor.points, factor.detail) == (0, "1 failed check(s), 1 rollback(s)")
    last = next(f for f in kpis(loaded_store).deploy_confidence[HR].factors
                if f.name == "Last watch healthy")
    assert (last.points, last.detail) == (0, "last release rolled back")
    assert kpis(loaded_store).deploy_confidence[HR].score == 35  # 65 - 20 - 10


def test_failures_after_as_of_or_before_the_period_do_not_count(loaded_store: str) -> None:
    # A failure on 25 April must not lower confidence as of 20 April (it used to).
    with session_scope(loaded_store) as s:
        r = release(HR, NOW - timedelta(days=4), 10)
        old = release(HR, NOW - timedelta(days=200), 10)
        s.add_all([r, old])
        s.flush()
        s.add(HealthCheckResult(release_id=r.id, package_key=HR, check_name="ticket_noise",
                                due_at=NOW + timedelta(days=5), measured_at=NOW,
                                verdict="failed"))
        s.add(HealthCheckResult(release_id=old.id, package_key=HR, check_name="ticket_noise",
                                due_at=NOW - timedelta(days=199), measured_at=NOW,
                                verdict="failed"))
    factors = {f.name: f for f in kpis(loaded_store).deploy_confidence[HR].factors}
    assert factors["Clean release history"].met  # one failure is later, one is out of period
    assert factors["Last watch healthy"].detail == "watching, no failed check"
    # With a period long enough to reach the old failure, it counts.
    factors = {f.name: f for f in kpis(loaded_store, period_days=365)
               .deploy_confidence[HR].factors}
    assert factors["Clean release history"].detail == "1 failed check(s), 0 rollback(s)"


def test_a_package_missing_everything_scores_zero() -> None:
    from wavekit.present.kpis import History

    bare = RolePackage(key="bare", name="Bare", owner_name="Ops", risk="high", watch_days=7,
                       fallback_drill="pending")
    c = deploy_confidence(bare, {"dep": PackageState.WATCHING},
                          History(failed_checks=1, rollbacks=0, last_release="failed"))
    assert c.score == 0 and c.level == "Low"
    assert [f.name for f in c.factors] == list(FACTOR_WEIGHTS)
    assert sum(FACTOR_WEIGHTS.values()) == 100
    delegate_only = RolePackage(key="d", name="D", owner_name="Ops", risk="low",
                                delegates=[{"name": "Ann", "slack_id": "U1"}])
    reach = deploy_confidence(delegate_only, {}).factors[3]
    assert reach.name == "Owner reachable" and reach.met


def test_text_alone_earns_nothing() -> None:
    # A fallback plan, a telemetry focus and an owner name are words, not facts: a package
    # with all of them and no drill, no Slack id and high risk scores only its never-released
    # half and its clean (empty) history.
    wordy = RolePackage(key="w", name="W", owner_name="Ops", risk="high", watch_days=14,
                        fallback_plan="restore the old groups", telemetry_focus="everything",
                        fallback_drill="pending")
    c = deploy_confidence(wordy, {})
    assert {f.name: f.points for f in c.factors} == {
        "Rollback drill recorded": 0, "Last watch healthy": 10, "Clean release history": 20,
        "Owner reachable": 0, "Dependencies stable": 15, "Risk level": 0}


def test_every_kpi_has_a_definition() -> None:
    from wavekit.present.kpis import CONFIDENCE_MODEL, DEFINITIONS
    from wavekit.present.views import kpi_lines  # noqa: F401  (labels shown by status)

    for name, _, why in CONFIDENCE_MODEL:
        assert name in DEFINITIONS["Deploy confidence"] and why


@pytest.mark.parametrize(("state", "action"), [
    ("release_ready", "Release"), ("awaiting_handoff", "Release"), ("deploying", "Release"),
    ("scheduled", "Monitor"), ("monitoring", "Monitor"), ("watching", "Monitor"),
    ("stable", "Monitor"), ("needs_tuning", "Tune"), ("held", "Tune"),
    ("rollback_ready", "Rollback"), ("rolling_back", "Rollback"), ("rolled_back", "Rollback"),
])
def test_action_for_every_state(state: str, action: str) -> None:
    assert action_for(state) == action
    assert action_for(PackageState(state)) == action


def test_every_state_has_an_action() -> None:
    assert {action_for(s) for s in PackageState} == {"Release", "Monitor", "Tune", "Rollback"}


def test_deploy_time_counts_from_the_handoff_request(loaded_store: str) -> None:
    # Staged, handed off, approved 27 h later, deployed a minute after: the portal's 28 h
    # is the handoff wait plus the deploy, not the minute after approval.
    asked = NOW - timedelta(days=3)
    with session_scope(loaded_store) as s:
        r = Release(package_key=FIN, wave=1, started_at=asked - timedelta(minutes=5),
                    approved_at=asked + timedelta(hours=27),
                    deployed_at=asked + timedelta(hours=28))
        too_old = release(HR, NOW - timedelta(days=120), 5)  # outside the 90-day period
        s.add_all([r, too_old])
        s.flush()
        s.add(Approval(release_id=r.id, package_key=FIN, requested_at=asked,
                       decided_at=asked + timedelta(hours=27), decision="approved"))
    k = kpis(loaded_store)
    assert k.median_deploy_time == timedelta(hours=28) and k.period_days == 90
    assert kpis(loaded_store, period_days=365).median_deploy_time == timedelta(hours=16.5)


def test_status_explain_states_the_kpi_period(loaded_store: str) -> None:
    from typer.testing import CliRunner

    from wavekit.present.cli import app

    done = CliRunner().invoke(app, ["status", "--explain", "--database-url", loaded_store],
                              env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "deployed in the last 90 days up to as_of" in text  # median deploy time
    assert "no rollback in the last 90 days up to as_of" in text  # clean release history
