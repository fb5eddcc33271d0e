"""The watch, containment and retirement through the workflow functions (no Prefect needed).

Each test releases example packages on the sandbox with a manual clock, then ticks the watch
with the time handed in, as the watch deployment would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlmodel import select

from tests.support.flows import ScriptedMetrics, owner_of
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit, suspensions
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import HealthCheckResult, Release, RolePackage, Suspension
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.adapters.telemetry import TelemetryMetrics, ingest_frame
from wavekit.domain.clock import ManualClock, as_utc
from wavekit.domain.grants import Grant, GrantSet
from wavekit.domain.states import PackageState
from wavekit.examples import record_example_drills, seed_target
from wavekit.examples.synth_telemetry import generate_telemetry
from wavekit.present.kpis import compute_kpis
from wavekit.workflow import containment, rollout, watch
from wavekit.workflow.maintenance import load_maintenance_inputs
from wavekit.workflow.runtime import Runtime, build_runtime

FIN, HR = "finance-month-end-operator", "hr-case-intake-specialist"
D0 = datetime(2026, 4, 8, 9, tzinfo=UTC)
DAY = timedelta(days=1)
S = PackageState


@dataclass
class Env:
    url: str
    rt: Runtime
    clock: ManualClock
    target: SandboxTarget
    metrics: ScriptedMetrics

    def release(self, key: str) -> int:
        """Stage, approve and deploy `key` now; returns the release id."""
        staged = rollout.stage_package(self.rt, key, wave=1)
        assert staged.release_id and not staged.held, staged
        request = rollout.request_handoff(self.rt, staged.release_id)
        assert rollout.record_decision(self.rt, request.approval_id, "approve",
                                       owner_of(self.url, key), proof="unverified") == "approved"
        assert all(g.passed for g in rollout.enforce_gates(self.rt, staged.release_id))
        rollout.deploy_package(self.rt, staged.release_id)
        return staged.release_id

    def tick(self, release_id: int, at: datetime) -> watch.TickOutcome:
        self.clock.set(at)
        return watch.watch_tick(self.rt, release_id, at, self.rt.metrics)

    def days(self, release_id: int, first: int, last: int) -> list[watch.TickOutcome]:
        """One tick a day, a minute after each due time, until something other than continue."""
        out = []
        for day in range(first, last + 1):
            out.append(self.tick(release_id, D0 + day * DAY + timedelta(minutes=1)))
            if out[-1].action != "continue":
                break
        return out

    def state(self, key: str) -> str:
        with session_scope(self.url) as s:
            return s.get(RolePackage, key).state

    def view(self, key: str):  # type: ignore[no-untyped-def]
        with session_scope(self.url) as s:
            return load_package_view(s, key)

    def grants(self, key: str) -> GrantSet:
        view = self.view(key)
        return self.target.read_grants(view.scope)

    def results(self, release_id: int, check: str) -> list[tuple[float, str, str]]:
        with session_scope(self.url) as s:
            rows = s.exec(select(HealthCheckResult).where(
                HealthCheckResult.release_id == release_id,
                HealthCheckResult.check_name == check).order_by(HealthCheckResult.due_at))
            return [((as_utc(r.due_at) - D0) / DAY, r.verdict, r.detail) for r in rows]


@pytest.fixture
def env(loaded_store: str) -> Iterator[Env]:
    target = SandboxTarget(loaded_store)
    seed_target(target)
    record_example_drills(loaded_store, D0 - timedelta(days=1))  # this clock's drill evidence
    clock = ManualClock(D0)
    metrics = ScriptedMetrics()
    rt = build_runtime(load_settings(database_url=loaded_store), target=target, clock=clock,
                       metrics=metrics)
    yield Env(loaded_store, rt, clock, target, metrics)


def member(env: Env, key: str = FIN, index: int = 0) -> str:
    return sorted(env.view(key).members)[index]


# ------------------------------------------------------------------ windows and no data


def test_one_ticket_on_launch_day_does_not_roll_back(env: Env) -> None:
    """Real telemetry: no tickets before launch, one on launch day (it scored 28 on day 1 and
    14 on day 2 when metrics were averaged since deploy, and the package was rolled back)."""
    frames = generate_telemetry(env.url, start=D0 - 30 * DAY, deployed_at=D0, days=34, seed=7)
    t = frames["tickets"]
    frames["tickets"] = pd.concat([
        t[t["package"] != FIN],
        pd.DataFrame({"package": [FIN], "at": [D0 + timedelta(hours=2)],
                      "category": ["how-to"]})])
    for kind, df in frames.items():
        ingest_frame(env.url, kind, df, source="test")
    env.rt.metrics = TelemetryMetrics(env.url)
    rid = env.release(FIN)
    ticks = env.days(rid, 1, 3)
    assert [t.action for t in ticks] == ["continue"] * 3
    assert env.state(FIN) == "watching"
    # Day 1 judges launch day alone: one ticket over a zero baseline is no evidence; the
    # days after judge their own (empty) windows.
    assert [(d, v) for d, v, _ in env.results(rid, "ticket_noise")] == [
        (1.0, "inconclusive"), (2.0, "passed"), (3.0, "passed")]


def test_every_measurement_judges_its_own_window(env: Env) -> None:
    rid = env.release(FIN)
    env.days(rid, 1, 2)
    windows = {(as_utc(until) - D0) / DAY: (as_utc(since) - D0) / DAY
               for key, since, until, _ in env.metrics.windows if key == FIN}
    # Daily checks judge [day - 1, day); the six-hourly anomaly checks [t - 6 h, t).
    assert windows[1.0] in (0.0, 0.75) and windows[2.0] in (1.0, 1.75)
    assert windows[1.25] == 1.0 and windows[0.25] == 0.0
    pairs = {(round((as_utc(s) - D0) / DAY, 2), round((as_utc(u) - D0) / DAY, 2))
             for k, s, u, _ in env.metrics.windows if k == FIN}
    assert {(0.0, 1.0), (1.0, 2.0), (0.75, 1.0), (1.75, 2.0)} <= pairs


def test_no_data_is_inconclusive_until_too_many_in_a_row(env: Env) -> None:
    gaps = {2.0, 3.0, 5.0, 6.0, 7.0}  # never four in a row
    env.metrics.script[FIN] = lambda day: {"ticket_noise": None} if day in gaps else {}
    rid = env.release(FIN)
    assert env.days(rid, 1, 7)[-1].action == "continue"
    env.metrics.script[FIN] = lambda day: {"ticket_noise": None}
    ticks = env.days(rid, 8, 9)  # 5, 6, 7, 8: the fourth in a row
    assert [t.action for t in ticks] == ["inconclusive"]
    assert "ticket_noise had too little data 4 time(s) in a row (limit 3)" in ticks[-1].reason
    assert env.state(FIN) == "needs_tuning"


def test_measurement_errors_are_a_third_outcome_with_their_own_limit(env: Env) -> None:
    def broken(day: float):  # type: ignore[no-untyped-def]
        if day >= 2:
            raise ConnectionError("telemetry store unreachable")
        return {}

    env.metrics.script[FIN] = broken
    rid = env.release(FIN)
    ticks = env.days(rid, 1, 5)
    # The six-hourly anomaly checks reach their limit first: errors at 2.0, 2.25, ... 3.0.
    assert [t.action for t in ticks] == ["continue", "continue", "error"]
    assert ticks[-1].reason == ("export_anomaly could not be measured 5 time(s) in a row "
                                "(limit 4): a human must decide")
    assert env.state(FIN) == "needs_tuning"  # never rolled back for broken telemetry
    assert env.results(rid, "ticket_noise")[-2:] == [
        (2.0, "error", "error: ConnectionError: telemetry store unreachable"),
        (3.0, "error", "error: ConnectionError: telemetry store unreachable")]


def test_catch_up_measures_past_due_times_with_the_grants_of_then(env: Env) -> None:
    seen: list[tuple[float, GrantSet, bool]] = []
    measure = env.metrics.measure

    def recording(package, **kw):  # type: ignore[no-untyped-def]
        seen.append(((as_utc(kw["as_of"]) - D0) / DAY, kw["target_grants"],
                     kw["from_history"]))
        return measure(package, **kw)

    env.metrics.measure = recording  # type: ignore[method-assign]
    rid = env.release(FIN)
    env.days(rid, 1, 2)
    deployed = env.grants(FIN)
    # Down from day 2 to day 7; on day 5 someone removes a member's grant on the target.
    gone = Grant(member(env), sorted(env.view(FIN).entitlements)[0])
    env.target.apply([], [gone])
    seen.clear()
    env.tick(rid, D0 + 7 * DAY + timedelta(minutes=1))
    by_day = {day: (grants, history) for day, grants, history in seen}
    assert set(by_day) >= {3.0, 4.0, 5.0, 6.0, 7.0}
    for day in (3.0, 4.0, 5.0, 6.0):  # owed in the past: rebuilt from the release's bundles
        grants, history = by_day[day]
        assert history and grants == deployed, day
    grants, history = by_day[7.0]  # owed now: the target as it is
    assert not history and gone not in grants and grants == deployed - {gone}


# ------------------------------------------------------------------ containment


DEPLOYED: dict[str, GrantSet] = {}


def contained(env: Env, key: str = FIN, *, names: frozenset[str] | None = None
              ) -> tuple[int, containment.ContainOutcome]:
    """Release `key`, spike its exports at day 1.25, tick, and contain as the flow does.

    DEPLOYED[key] holds the package's scope as the deploy left it.
    """
    env.metrics.script[key] = lambda day: {"export_anomaly": 9.0} if day == 1.25 else {}
    env.metrics.names[key] = frozenset({member(env, key)}) if names is None else names
    rid = env.release(key)
    DEPLOYED[key] = env.grants(key)
    env.tick(rid, D0 + DAY + timedelta(minutes=1))
    tick = env.tick(rid, D0 + 1.25 * DAY + timedelta(minutes=1))
    assert tick.action == "contain", tick
    assert watch.next_actions(env.rt, tick).contain
    return rid, containment.contain(env.rt, rid, tick.reason, tick.identities,
                                    checks=tick.checks, as_of=tick.as_of)


def test_an_export_spike_suspends_the_grants_of_who_exported(env: Env) -> None:
    rid, outcome = contained(env)
    before = DEPLOYED[FIN]
    spiker = member(env)
    fin = env.view(FIN)
    mine = {Grant(spiker, e) for e in fin.entitlements}
    assert mine <= before
    assert outcome.identities == {spiker} and outcome.suspended == mine and mine
    # The spiker's package grants are gone from the target; everyone else's are live.
    assert env.grants(FIN) == before - mine
    assert env.state(FIN) == "contained"
    with session_scope(env.url) as s:
        [row] = suspensions.suspensions(s, rid)
        assert (row.scope, row.identities, row.checks, row.from_state) == (
            "identities", [spiker], ["export_anomaly"], "watching")
        assert row.applied_at is not None and row.lifted_at is None
        assert suspensions.suspended_grants(s, row.id) == mine
        [event] = audit.events(s, package_key=FIN, action="package_contained")
        assert event.detail["identities"] == [spiker]
        assert len(event.detail["grants"]) == len(mine)
        pkg = s.get(RolePackage, FIN)
        assert spiker in pkg.state_reason and "wavekit contain restore" in pkg.state_reason
    # Containing again for the same anomaly suspends nothing new.
    again = containment.contain(env.rt, rid, "again", {spiker})
    assert not again.new and not again.suspended


def test_a_contained_package_stays_watched_monitored_and_judged(env: Env) -> None:
    rid, _ = contained(env)
    assert rid in watch.releases_due(env.rt, D0 + 2 * DAY + timedelta(minutes=1))
    ticks = env.days(rid, 2, 15)
    assert {t.action for t in ticks} == {"continue"}  # measured, never promoted while contained
    assert env.results(rid, "access_drift")[-1][0] == 14.0
    assert env.state(FIN) == "contained"
    with session_scope(env.url) as s:
        kpis = compute_kpis(s, D0 + 5 * DAY)
        facts = {f.key: f for f in load_maintenance_inputs(s).packages}
    assert kpis.roles_monitored == 1  # still in production, still counted
    assert facts[FIN].live  # the nightly run keeps judging it
    # A failure past its limit still rolls a contained package back.
    env.metrics.script[FIN] = lambda day: {"access_drift": 0.5}
    with session_scope(env.url) as s:
        s.get(Release, rid).watch_ends_at = D0 + 30 * DAY
    assert [t.action for t in env.days(rid, 16, 18)][-1] == "rollback"


def test_a_new_anomaly_while_contained_widens_the_containment(env: Env) -> None:
    rid, _ = contained(env)
    other = member(env, FIN, 1)
    env.metrics.script[FIN] = lambda day: {"escalation_anomaly": 1.0} if day == 2.5 else {}
    env.metrics.names[FIN] = frozenset({other})
    env.tick(rid, D0 + 2 * DAY + timedelta(minutes=1))
    tick = env.tick(rid, D0 + 2.5 * DAY + timedelta(minutes=1))
    assert tick.action == "contain" and tick.identities == {other}
    widened = containment.contain(env.rt, rid, tick.reason, tick.identities, checks=tick.checks)
    assert widened.new and {g.identity for g in widened.suspended} == {other}
    assert not {g for g in env.grants(FIN) if g.identity in {member(env), other}
                and g.entitlement in env.view(FIN).entitlements}
    # The same old anomaly does not contain again.
    assert env.tick(rid, D0 + 3 * DAY + timedelta(minutes=1)).action == "continue"


def test_containment_can_take_the_whole_package(env: Env) -> None:
    with session_scope(env.url) as s:
        pkg = s.get(RolePackage, FIN)
        pkg.health = {**pkg.health, "containment": "package"}
        s.add(pkg)
    _, outcome = contained(env)
    before = DEPLOYED[FIN]
    fin = env.view(FIN)
    assert outcome.identities == fin.members and outcome.scope == "package"
    theirs = {g for g in before if g.identity in fin.members and g.entitlement in fin.entitlements}
    assert outcome.suspended == theirs
    # Only the package's own grants of its members: others' holdings stay.
    assert env.grants(FIN) == before - theirs


def test_an_anomaly_that_names_nobody_contains_the_whole_package(env: Env) -> None:
    _, outcome = contained(env, names=frozenset())
    assert outcome.identities == env.view(FIN).members


def test_restore_gives_the_grants_back_and_the_watch_starts_afresh(env: Env) -> None:
    rid, _ = contained(env)
    before = DEPLOYED[FIN]
    with pytest.raises(containment.NotContained):
        containment.restore(env.rt, HR)
    env.clock.set(D0 + 2 * DAY)
    done = containment.restore(env.rt, FIN, actor="rm-alex", reason="export was approved")
    assert done.state == "watching" and done.identities == {member(env)}
    assert env.grants(FIN) == before
    assert env.state(FIN) == "watching"
    with session_scope(env.url) as s:
        [row] = suspensions.suspensions(s, rid)
        assert (row.lifted_by, row.lift_reason) == ("rm-alex", "export was approved")
        [event] = audit.events(s, package_key=FIN, action="containment_restored")
        assert event.actor == "rm-alex" and event.detail["restored"] == done.re_granted > 0
    # The anomaly that was reviewed does not contain the package again; the watch goes on
    # to its end and passes.
    ticks = env.days(rid, 2, 15)
    assert [t.action for t in ticks][-1] == "stable"
    assert env.state(FIN) == "stable"


def test_roll_back_from_containment_restores_the_prior_bundle_exactly(env: Env) -> None:
    spiker = member(env)
    held_before = Grant(spiker, sorted(env.view(FIN).entitlements)[0])
    env.target.apply([held_before], [])  # the spiker held one of the grants before the release
    before = env.grants(FIN)
    rid, outcome = contained(env)
    assert held_before in outcome.suspended
    result = containment.roll_back(env.rt, FIN, actor="rm-alex")
    assert result.proof.equal
    assert env.grants(FIN) == before  # held_before is back, the release's adds are gone
    assert env.state(FIN) == "rolled_back"
    with session_scope(env.url) as s:
        [row] = suspensions.suspensions(s, rid)
        assert row.lifted_by == "rollback"


def test_release_again_from_containment(env: Env) -> None:
    old, _ = contained(env)
    # Staging again is allowed from Contained (it was Held -> Deploying: IllegalTransition).
    new = env.release(FIN)
    assert new != old and env.state(FIN) == "watching"
    fin = env.view(FIN)
    assert {Grant(m, e) for m in fin.members for e in fin.entitlements} <= env.grants(FIN)
    with session_scope(env.url) as s:
        assert s.get(Release, old).closed
        [row] = suspensions.suspensions(s, old)
        assert row.lifted_by == f"release {new}"
        [event] = audit.events(s, package_key=FIN, action="release_superseded")
        assert event.release_id == old
    assert watch.releases_due(env.rt, D0 + 3 * DAY) == [new]


def test_a_held_new_release_leaves_the_package_contained(env: Env) -> None:
    old, _ = contained(env)
    staged = rollout.stage_package(env.rt, FIN, wave=1)
    assert staged.release_id != old
    request = rollout.request_handoff(env.rt, staged.release_id)
    assert env.state(FIN) == "awaiting_handoff"
    rollout.record_decision(env.rt, request.approval_id, "reject", owner_of(env.url, FIN),
                            "not yet", proof="unverified")
    assert env.state(FIN) == "contained"
    with session_scope(env.url) as s:
        assert "not yet" in s.get(RolePackage, FIN).state_reason
        assert not s.get(Release, old).closed and s.get(Release, staged.release_id).closed
        assert s.exec(select(Suspension).where(Suspension.lifted_at == None)).all()  # noqa: E711
    # Still watched under its old release.
    assert watch.releases_due(env.rt, D0 + 3 * DAY) == [old]


# ------------------------------------------------------------------ retirement


def test_launch_window_legacy_grants_retire_once_deployed(env: Env) -> None:
    rid = env.release(HR)
    tick = env.tick(rid, D0 + timedelta(minutes=1))
    assert tick.action == "continue" and watch.next_actions(env.rt, tick).retire_legacy


def test_legacy_grants_never_retire_while_a_human_decides(env: Env) -> None:
    with session_scope(env.url) as s:
        pkg = s.get(RolePackage, HR)
        pkg.retire_in_launch_window = False
        s.add(pkg)
    env.metrics.script[HR] = lambda day: {"ticket_noise": None}
    rid = env.release(HR)
    assert env.days(rid, 1, 7)[-1].action == "inconclusive"
    assert env.state(HR) == "needs_tuning"
    after_window = D0 + 20 * DAY
    # The watch's sweep and the nightly run ask the same rule: Needs tuning keeps the old
    # access, even past the watch window.
    assert rollout.releases_awaiting_retirement(env.rt, after_window) == []
    assert not rollout.retirement_due_for(env.rt, rid, after_window)
    with session_scope(env.url) as s:
        [hr] = [f for f in load_maintenance_inputs(s).packages if f.key == HR]
    from wavekit.domain.retirement import retirement_due

    assert retirement_due(hr.retirement(failing=False), after_window) is None


# ------------------------------------------------------------------ the command line


def test_contain_restore_command(env: Env) -> None:
    from typer.testing import CliRunner

    from wavekit.present.cli import app

    _, outcome = contained(env)
    runner = CliRunner()
    args = ["contain", "restore", FIN, "--database-url", env.url, "--as", "rm-alex"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"restored: {len(outcome.suspended)} suspended grant(s)" in result.output
    assert env.state(FIN) == "watching" and env.grants(FIN) == DEPLOYED[FIN]
    again = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 1 and "nothing to restore" in again.output


def test_a_stable_package_contained_overnight_is_restored_to_stable(env: Env) -> None:
    rid = env.release(FIN)
    assert env.days(rid, 1, 15)[-1].action == "stable"
    spiker = member(env)
    # What the nightly run does for an anomaly it finds in a stable package.
    outcome = containment.contain(env.rt, containment.live_release_id(env.rt, FIN),
                                  "nightly maintenance: bulk export spike", {spiker},
                                  checks=("export_anomaly",), as_of=D0 + 20 * DAY)
    assert outcome.new and env.state(FIN) == "contained"
    assert not {g for g in env.grants(FIN) if g.identity == spiker
                and g.entitlement in env.view(FIN).entitlements}
    env.clock.set(D0 + 21 * DAY)
    assert containment.restore(env.rt, FIN).state == "stable"
    assert env.state(FIN) == "stable"
    with session_scope(env.url) as s:
        release = s.get(Release, rid)
        assert as_utc(release.analysis_from) == D0 + 21 * DAY
        assert not rollout.release_failing(s, release)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_restore_from_the_ui_deployment_names_who_asked(env: Env) -> None:
    from flows.containment import restore_contained
    from wavekit.workflow.runtime import runtime_override

    contained(env)
    with runtime_override(lambda: env.rt):
        refused = restore_contained(FIN, requested_by=" ", return_state=True)
        assert refused.is_failed() and "requested_by is required" in refused.message
        assert env.state(FIN) == "contained"
        state = restore_contained(FIN, requested_by="rm-alex", reason="export approved",
                                  return_state=True)
        assert state.is_completed(), state.message
        again = restore_contained(FIN, requested_by="rm-alex", return_state=True)
        assert again.is_failed() and "nothing to restore" in again.message
    assert env.grants(FIN) == DEPLOYED[FIN] and env.state(FIN) == "watching"
    with session_scope(env.url) as s:
        [event] = audit.events(s, package_key=FIN, action="containment_restored")
        assert event.actor == "rm-alex"
