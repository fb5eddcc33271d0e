"""Stepped packages end to end on the sandbox, under the session's Prefect harness: a cohort
deploys, soaks, widens on healthy checks; a failure at step two rolls back exactly steps one
and two; promote, pause and abort from the cohort-action flow."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from flows.cohorts import CohortAction, cohort_action
from flows.watch import watch_packages
from flows.wave import release_wave
from tests.support.flows import ScriptedMetrics, approver
from tests.test_wave_targets import GROUPS, scim_example  # noqa: F401  (the SCIM fixture)
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import CohortMember, Entitlement, Release, RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.clock import ManualClock, as_utc, utcnow
from wavekit.domain.grants import Grant, GrantSet
from wavekit.examples import seed_target
from wavekit.workflow.runtime import build_runtime, runtime_override

pytestmark = pytest.mark.usefixtures("prefect_harness")
FIN = "finance-month-end-operator"
STEPS = {"steps": [{"members": 10.0}, {"soak_hours": 48.0}, {"members": 50.0},
                   {"soak_hours": 24.0}, {"members": 100.0}], "cohort_by": "location"}


@dataclass
class Env:
    url: str
    target: SandboxTarget
    metrics: ScriptedMetrics
    clock: ManualClock

    def grants(self) -> GrantSet:
        with session_scope(self.url) as s:
            ents = list(s.exec(select(Entitlement.key)))
        return self.target.read_grants(ents)

    def state(self) -> tuple[str, str]:
        with session_scope(self.url) as s:
            pkg = s.get(RolePackage, FIN)
            return pkg.state, pkg.state_reason

    def release(self) -> Release:
        with session_scope(self.url) as s:
            return s.exec(select(Release).where(Release.package_key == FIN)
                          .order_by(Release.id.desc())).first()

    def holders(self) -> set[str]:
        """Members holding every entitlement the package grants."""
        view = self.view()
        live = self.grants()
        return {m for m in view.members if all(Grant(m, e) in live for e in view.entitlements)}

    def view(self):  # type: ignore[no-untyped-def]
        with session_scope(self.url) as s:
            return load_package_view(s, FIN)

    def cohort(self, step: int) -> set[str]:
        with session_scope(self.url) as s:
            return set(s.exec(select(CohortMember.identity).where(
                CohortMember.release_id == self.release().id, CohortMember.step <= step)))

    def watch_at(self, at: datetime) -> list[dict]:
        self.clock.set(at)
        return watch_packages(as_of=at)

    def hours_after_deploy(self, hours: float) -> datetime:
        return as_utc(self.release().deployed_at) + timedelta(hours=hours)


@pytest.fixture
def env(loaded_store: str, monkeypatch) -> Iterator[Env]:
    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    monkeypatch.setenv("WAVEKIT_RELEASE_MANAGERS", "rm-alex,rm-sam")
    with session_scope(loaded_store) as s:
        s.get(RolePackage, FIN).rollout = STEPS
    settings = load_settings(database_url=loaded_store, batch_size=50, approvals_unverified=True)
    target = SandboxTarget(loaded_store)
    seed_target(target)
    clock = ManualClock(utcnow().replace(microsecond=0))
    e = Env(loaded_store, target, ScriptedMetrics(), clock)
    with runtime_override(lambda: build_runtime(settings, target=target, metrics=e.metrics,
                                                clock=clock)):
        yield e


def test_a_stepped_package_widens_step_by_step_on_healthy_checks(env: Env) -> None:
    before = env.grants()
    with approver(env.url):
        assert release_wave(wave=1, packages=[FIN], requested_by="rm-alex") == {FIN: "watching"}
    members = env.view().members
    first = env.cohort(0)
    assert len(first) == 5 and env.holders() == first  # 10% of 42, rounded up
    state, reason = env.state()
    assert state == "watching" and "step 1/3 · 10% (5 of 42 members): soaking 48 h" in reason
    # Nobody outside the cohort was written.
    assert {g for g in env.grants() if g.identity not in first} == \
        {g for g in before if g.identity not in first}

    env.watch_at(env.hours_after_deploy(24))  # mid-soak: no widening
    assert env.holders() == first
    [row] = env.watch_at(env.hours_after_deploy(48) + timedelta(minutes=1))
    assert row["action"] == "widen"
    second = env.cohort(1)
    assert len(second) == 21 and first < second and env.holders() == second
    assert "step 2/3 · 50% (21 of 42 members)" in env.state()[1]

    [row] = env.watch_at(env.hours_after_deploy(73))
    assert row["action"] == "widen" and env.holders() == members
    assert "step 3/3 · 100% (42 of 42 members): every member; watching for 14 days" in \
        env.state()[1]
    ends = as_utc(env.release().watch_ends_at)
    assert ends == env.hours_after_deploy(73) + timedelta(days=14)  # the window follows 100%
    env.watch_at(ends + timedelta(minutes=1))
    assert env.state()[0] == "stable"
    with session_scope(env.url) as s:
        steps = [e.detail["label"] for e in audit.events(s, package_key=FIN,
                                                          action="cohort_step_deployed")]
    assert steps == ["step 1/3 · 10% (5 of 42 members)", "step 2/3 · 50% (21 of 42 members)",
                     "step 3/3 · 100% (42 of 42 members)"]
    # The Prefect UI shows each step as a task run named for its cohort, and the progress.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        TaskRunFilter,
        TaskRunFilterName,
    )

    with get_client(sync_client=True) as client:
        names = {t.name for t in client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="step ")))}
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"cohort-{FIN}"])))
    assert {"deploy step 1/3 · 10% (5 of 42 members)",
            "widen to step 2/3 · 50% (21 of 42 members)",
            "widen to step 3/3 · 100% (42 of 42 members)"} <= names, names
    assert {a.type for a in progress} == {"progress"}
    assert {a.data for a in progress} >= {100 * 5 / 42, 100 * 21 / 42, 100.0}
    assert any("step 3/3, 42 of 42 members granted" in (a.description or "")
               for a in progress)


def test_a_failure_at_step_two_rolls_back_exactly_steps_one_and_two(env: Env) -> None:
    with session_scope(env.url) as s:  # ticket noise measured every 6 h, no second chance
        s.get(RolePackage, FIN).health = {"ticket_noise": {"interval_hours": 6,
                                                           "failure_limit": 0}}
    before = env.grants()
    with approver(env.url):
        release_wave(wave=1, packages=[FIN], requested_by="rm-alex")
    env.watch_at(env.hours_after_deploy(49))
    granted = env.cohort(1)
    later = sorted(env.view().members - granted)
    assert len(granted) == 21 and later
    # Someone grants a later-step member one of the package's entitlements by hand: the
    # package never gave it, so its rollback must not take it away.
    by_hand = Grant(later[0], "fin-close-dashboard")
    env.target.apply([by_hand], [], batch_size=50)
    env.metrics.script[FIN] = lambda day: {"ticket_noise": 4.5 if day >= 2.5 else 1.0}
    [row] = env.watch_at(env.hours_after_deploy(60))
    assert row["action"] == "rollback" and env.state()[0] == "rolled_back"
    after = env.grants()
    view = env.view()
    # The 21 members of steps one and two read back exactly as before the release ...
    assert {g for g in after if g.identity in granted and g.entitlement in view.scope} == \
        {g for g in before if g.identity in granted and g.entitlement in view.scope}
    # ... and the later members were never written (the grant given by hand is still there).
    assert {g for g in after if g.identity in later} == \
        {g for g in before if g.identity in later} | {by_hand}
    with session_scope(env.url) as s:
        [proof] = audit.events(s, package_key=FIN, action="rollback_verified")
    assert proof.detail["touched_restored"] is True
    assert proof.detail["drift_outside"] == [list(by_hand)]  # reported, not "restored"
    from wavekit.present.reports import render_rollback_report

    report = render_rollback_report(env.url, env.release().id)
    assert "step 2 of 3, with 21 of 42 members granted" in report
    # Withdrawn: what the package added to its 21 members (not to all 42).
    assert after ^ before == {by_hand}
    with session_scope(env.url) as s:
        from wavekit.present.reports import rollback_report_context

        ctx = rollback_report_context(s, env.release().id)
    adds_for_granted = {Grant(m, x) for m in granted for x in view.entitlements} - before
    assert ctx["withdrawn"] == len(adds_for_granted) > 0


def test_promote_pause_and_abort_from_the_cohort_action_flow(env: Env) -> None:
    before = env.grants()
    with approver(env.url):
        release_wave(wave=1, packages=[FIN], requested_by="rm-alex")
    first = env.cohort(0)
    # Refused: no actor. Nothing recorded.
    refused = cohort_action(FIN, CohortAction.promote, "  ", return_state=True)
    assert refused.is_failed() and "say who you are" in refused.message
    assert env.cohort(1) == first

    env.clock.advance(timedelta(hours=2))
    done = cohort_action(FIN, CohortAction.promote, "rm-alex", "canary looks fine",
                         return_state=True)
    assert done.is_completed(), done.message
    assert len(env.cohort(1)) == 21 and env.holders() == env.cohort(1)

    cohort_action(FIN, CohortAction.pause, "rm-alex", "waiting for the close")
    [row] = env.watch_at(env.hours_after_deploy(2 + 25))  # the soak passed, but paused
    assert row["action"] == "continue" and "paused by rm-alex" in row["reason"]
    assert len(env.cohort(2)) == 21

    aborted = cohort_action(FIN, CohortAction.abort, "rm-sam", return_state=True)
    assert aborted.is_completed(), aborted.message
    assert env.state()[0] == "rolled_back"
    assert env.grants() == before
    with session_scope(env.url) as s:
        acts = [(e.action, e.actor) for e in audit.events(s, package_key=FIN)
                if e.action.startswith("cohort_") and e.action != "cohort_step_started"
                and e.action != "cohort_step_deployed"]
        rollback = audit.events(s, package_key=FIN, action="rollback_started")
    # The nameless promote was refused and audited; the rest done, each with its actor.
    assert acts == [("cohort_action_refused", "unknown"), ("cohort_promote", "rm-alex"),
                    ("cohort_pause", "rm-alex"), ("cohort_abort", "rm-sam")]
    assert rollback[0].actor == "rm-sam" and "aborted by rm-sam at step 2/3" in \
        rollback[0].detail["reason"]


def test_a_widening_cut_off_mid_write_is_finished_by_the_next_watch_run(env: Env,
                                                                          monkeypatch) -> None:
    with approver(env.url):
        release_wave(wave=1, packages=[FIN], requested_by="rm-alex")
    real_apply = env.target.apply
    calls = {"n": 0}

    def cut_off(adds, removes, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        some = sorted(adds)[: len(adds) // 2]
        real_apply(some, [], **kw)  # half the step's writes land, then the process dies
        raise ConnectionError("target went away mid-step")

    monkeypatch.setattr(env.target, "apply", cut_off)
    with pytest.raises(ConnectionError):
        watch_packages(as_of=env.hours_after_deploy(49))
    assert len(env.cohort(1)) == 21  # recorded before the write: a rollback would cover them
    assert env.holders() < env.cohort(1)
    monkeypatch.setattr(env.target, "apply", real_apply)
    [row] = env.watch_at(env.hours_after_deploy(50))
    assert row["action"] == "widen" and "finishing step 2/3" in row["reason"]
    assert env.holders() == env.cohort(1) and len(env.cohort(2)) == 21
    assert "step 2/3 · 50% (21 of 42 members): soaking 24 h" in env.state()[1]


def test_the_cohort_action_deployment_asks_for_a_typed_action_and_who_acts() -> None:
    import yaml
    from prefect.utilities.callables import parameter_schema

    from wavekit import project

    spec = yaml.safe_load((project.project_dir() / "prefect.yaml").read_text())
    [dep] = [d for d in spec["deployments"] if d["name"] == "cohort-action"]
    fn = project.load_entrypoint(dep["entrypoint"])
    schema = parameter_schema(fn).model_dump()
    assert set(schema["required"]) == {"package_key", "action", "actor"}
    assert "actor" not in dep["parameters"]  # no default anywhere: the UI form asks who acts
    action = schema["definitions"]["CohortAction"]
    assert action["enum"] == ["promote", "pause", "resume", "abort"]


@pytest.mark.slow
def test_promote_and_abort_from_the_cli_as_a_subprocess(env: Env, tmp_path) -> None:
    import os
    import subprocess
    import sys

    before = env.grants()
    with approver(env.url):
        release_wave(wave=1, packages=[FIN], requested_by="rm-alex")
    first = env.cohort(0)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "WAVEKIT_"))}
    clean.update(WAVEKIT_DATABASE_URL=env.url, WAVEKIT_DATA_DIR=str(tmp_path / "data"),
                 PREFECT_HOME=str(tmp_path / "prefect"), COLUMNS="160",
                 PREFECT_SERVER_ANALYTICS_ENABLED="false",
                 WAVEKIT_RELEASE_MANAGERS="rm-alex,rm-sam")

    def wavekit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wavekit.present.cli", "cohort", *args],
                              env=clean, capture_output=True, text=True, timeout=400,
                              stdin=subprocess.DEVNULL)

    nobody = wavekit("promote", FIN, "--as", " ")
    assert nobody.returncode == 1 and "say who you are" in nobody.stderr
    assert "Traceback" not in nobody.stderr + nobody.stdout

    promoted = wavekit("promote", FIN, "--as", "rm-alex")
    out = promoted.stdout + promoted.stderr
    assert promoted.returncode == 0, out
    assert "promoted by rm-alex from step 1/3" in out and "step 2/3, 21 of 42" in out, out
    assert first < env.cohort(1) and env.holders() == env.cohort(1)
    aborted = wavekit("abort", FIN, "--as", "rm-sam", "--reason", "ticket spike")
    out = aborted.stdout + aborted.stderr
    assert aborted.returncode == 0, out
    assert "Traceback" not in out and env.state()[0] == "rolled_back"
    assert env.grants() == before
    again = wavekit("abort", FIN, "--as", "rm-sam")
    assert again.returncode == 1 and "cannot abort" in again.stderr


@pytest.mark.slow
def test_on_a_scim_server_steps_widen_and_a_failure_at_step_two_rolls_back_both(
        loaded_store: str, request: pytest.FixtureRequest, monkeypatch) -> None:
    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    target, fresh = request.getfixturevalue("scim_example")
    seed_target(target)
    with session_scope(loaded_store) as s:
        pkg = s.get(RolePackage, FIN)
        pkg.rollout = STEPS
        pkg.health = {"ticket_noise": {"interval_hours": 6, "failure_limit": 0}}
    before = fresh().read_grants(GROUPS)
    clock = ManualClock(utcnow().replace(microsecond=0))
    e = Env(loaded_store, target, ScriptedMetrics(), clock)
    settings = load_settings(database_url=loaded_store, batch_size=100,
                             approvals_unverified=True)
    with runtime_override(lambda: build_runtime(settings, target=target, metrics=e.metrics,
                                                clock=clock)):
        with approver(loaded_store):
            release_wave(wave=1, packages=[FIN], requested_by="rm-alex")
        assert e.holders() == e.cohort(0) and len(e.cohort(0)) == 5
        [row] = e.watch_at(e.hours_after_deploy(49))
        assert row["action"] == "widen" and len(e.cohort(1)) == 21
        granted, view = e.cohort(1), e.view()
        live = fresh().read_grants(GROUPS)  # a new connection reads the widened cohort
        assert {m for m in view.members
                if all(Grant(m, x) in live for x in view.entitlements)} == granted
        e.metrics.script[FIN] = lambda day: {"ticket_noise": 4.5 if day >= 2.5 else 1.0}
        [row] = e.watch_at(e.hours_after_deploy(60))
        assert row["action"] == "rollback" and e.state()[0] == "rolled_back"
    after = fresh().read_grants(GROUPS)
    assert after == before  # steps one and two restored; later members never written
