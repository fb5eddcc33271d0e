"""The wave DAG end to end on the sandbox, under one Prefect test harness."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlmodel import select

from flows.watch import watch_packages
from flows.wave import release_wave, rollback_package
from tests.support.flows import ScriptedMetrics, approver, artifact_head
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import HealthCheckResult, Release, RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.clock import as_utc
from wavekit.domain.grants import Grant, GrantSet
from wavekit.examples import seed_target
from wavekit.workflow.runtime import build_runtime, runtime_override

pytestmark = pytest.mark.usefixtures("prefect_harness")
FIN, HR = "finance-month-end-operator", "hr-case-intake-specialist"


@dataclass
class WaveEnv:
    url: str
    target: SandboxTarget
    metrics: ScriptedMetrics
    seeded: GrantSet

    def state(self, key: str) -> str:
        with session_scope(self.url) as s:
            return s.get(RolePackage, key).state

    def release(self, key: str) -> Release:
        with session_scope(self.url) as s:
            return s.exec(select(Release).where(Release.package_key == key)
                          .order_by(Release.id.desc())).first()

    def grants(self) -> GrantSet:
        with session_scope(self.url) as s:
            from wavekit.adapters.store.models import Entitlement
            ents = list(s.exec(select(Entitlement.key)))
        return self.target.read_grants(ents)

    def view(self, key: str):  # type: ignore[no-untyped-def]
        with session_scope(self.url) as s:
            return load_package_view(s, key)

    def watch_days(self, key: str, days: int) -> None:
        """Run the watch deployment's flow once per day of the window (time is handed in)."""
        start = as_utc(self.release(key).deployed_at)
        for day in range(1, days + 1):
            watch_packages(as_of=start + timedelta(days=day, minutes=1))


@pytest.fixture
def wave_env(loaded_store: str, monkeypatch) -> Iterator[WaveEnv]:
    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    monkeypatch.setenv("WAVEKIT_APPROVALS_UNVERIFIED", "true")  # the auto-approver has no code
    settings = load_settings(database_url=loaded_store, batch_size=50)
    target = SandboxTarget(loaded_store)
    seed_target(target)
    metrics = ScriptedMetrics()
    env = WaveEnv(loaded_store, target, metrics, frozenset())
    env.seeded = env.grants()
    with runtime_override(lambda: build_runtime(settings, target=target, metrics=metrics)):
        yield env


def test_full_wave_deploys_watches_retires_and_ends_stable(wave_env: WaveEnv) -> None:
    with approver(wave_env.url):
        result = release_wave(wave=1, requested_by="rm-alex")
    assert result == {FIN: "watching", HR: "watching"}
    fin, hr = wave_env.view(FIN), wave_env.view(HR)
    live = wave_env.grants()
    # Every member holds every granted entitlement; the two legacy reports are gone.
    assert {Grant(m, e) for m in fin.members for e in fin.entitlements} <= live
    assert not {g for g in live if g.identity in fin.members and g.entitlement in fin.removes}
    # HR retires its legacy archive grants in the launch window (the seed portal's case).
    assert not {g for g in live if g.identity in hr.members and g.entitlement in hr.retires}
    assert wave_env.release(HR).legacy_retired_at is not None
    # Grants outside both packages are untouched.
    scope = fin.scope | hr.scope
    assert {g for g in live if g.entitlement not in scope} == \
        {g for g in wave_env.seeded if g.entitlement not in scope}

    wave_env.watch_days(FIN, 15)
    assert wave_env.state(FIN) == "stable" and wave_env.state(HR) == "stable"
    with session_scope(wave_env.url) as s:
        drift_checks = s.exec(select(HealthCheckResult).where(
            HealthCheckResult.package_key == FIN,
            HealthCheckResult.check_name == "access_drift")).all()
        # A 14-day watch with a daily drift check: day 0 (at deploy) through day 14.
        assert len(drift_checks) == 15
        assert all(r.verdict == "passed" for r in drift_checks)
        stable = audit.events(s, package_key=FIN, action="state_changed")[-1]
        assert stable.detail["to_state"] == "stable"


def test_failed_health_check_rolls_back_to_the_prior_bundle_exactly(wave_env: WaveEnv) -> None:
    before = wave_env.grants()
    wave_env.metrics.script[HR] = lambda day: {"ticket_noise": 4.5 if day >= 2 else 1.0}
    with approver(wave_env.url):
        release_wave(wave=1, requested_by="rm-alex")
    wave_env.watch_days(HR, 3)
    assert wave_env.state(HR) == "rolled_back"
    assert wave_env.state(FIN) == "watching"  # the other package is unaffected
    hr, fin = wave_env.view(HR), wave_env.view(FIN)
    live = wave_env.grants()
    # HR's scope reads back exactly as before the wave, including the retired archive grants
    # and grants that predate the wave.
    assert {g for g in live if g.entitlement in hr.scope} == \
        {g for g in before if g.entitlement in hr.scope}
    assert {g for g in before if g.entitlement in hr.retires}  # there was something to restore
    with session_scope(wave_env.url) as s:
        [proof] = audit.events(s, package_key=HR, action="rollback_verified")
        release = s.exec(select(Release).where(Release.package_key == HR)).one()
    assert proof.detail["equal"] is True
    assert proof.detail["prior_count"] == proof.detail["readback_count"] == \
        len({g for g in before if g.entitlement in hr.scope})
    assert "ticket_noise" in release.rollback_reason
    assert {Grant(m, e) for m in fin.members for e in fin.entitlements} <= live

    # Rolling back again (a re-run after a crash) changes nothing and proves the same.
    rollback_package(HR, "re-run", release_id=release.id)
    assert wave_env.grants() == live


def test_rejection_holds_the_package_and_writes_nothing(wave_env: WaveEnv) -> None:
    def decide(a):  # type: ignore[no-untyped-def]
        if a.package_key == FIN:
            return ("reject", "UFINOWNER1", "close calendar conflict")
        return ("approve", "UHROWNER01", "")

    with approver(wave_env.url, decide):
        result = release_wave(wave=1, requested_by="rm-alex")
    assert result[FIN] == "held" and result[HR] == "watching"
    with session_scope(wave_env.url) as s:
        pkg = s.get(RolePackage, FIN)
    assert pkg.state == "held" and "close calendar conflict" in pkg.state_reason
    fin = wave_env.view(FIN)
    assert {g for g in wave_env.grants() if g.entitlement in fin.scope} == \
        {g for g in wave_env.seeded if g.entitlement in fin.scope}


def test_approval_timeout_holds_the_package(wave_env: WaveEnv, monkeypatch) -> None:
    monkeypatch.setenv("WAVEKIT_APPROVAL_DEADLINE_HOURS", str(3 / 3600))  # three seconds
    settings = load_settings(database_url=wave_env.url)
    with runtime_override(lambda: build_runtime(settings, target=wave_env.target,
                                                metrics=wave_env.metrics)):
        result = release_wave(wave=1, requested_by="rm-alex", packages=[FIN])
    assert result == {FIN: "held"}
    with session_scope(wave_env.url) as s:
        assert "deadline passed" in s.get(RolePackage, FIN).state_reason
    assert wave_env.grants() == wave_env.seeded


def test_failed_gate_blocks_only_its_package(wave_env: WaveEnv) -> None:
    # A Finance member already releases payments: granting journal posting violates SoD.
    member = sorted(wave_env.view(FIN).members)[0]
    wave_env.target.apply([Grant(member, "fin-payment-release")], [])
    with approver(wave_env.url):
        result = release_wave(wave=1, requested_by="rm-alex")
    assert result == {FIN: "held", HR: "watching"}
    with session_scope(wave_env.url) as s:
        reason = s.get(RolePackage, FIN).state_reason
    assert "separation_of_duties" in reason and member in reason


def test_dry_run_writes_nothing(wave_env: WaveEnv) -> None:
    result = release_wave(wave=1, requested_by="rm-alex", dry_run=True)
    assert result == {FIN: "dry-run", HR: "dry-run"}
    assert wave_env.grants() == wave_env.seeded
    assert wave_env.state(FIN) == "release_ready"
    with session_scope(wave_env.url) as s:  # the dry-run table shows the chain's head
        assert artifact_head(wave_env.url, "wave-1-dry-run") == audit.head(s)


def test_watch_catches_up_after_downtime(wave_env: WaveEnv) -> None:
    with approver(wave_env.url):
        release_wave(wave=1, requested_by="rm-alex", packages=[FIN])
    start = as_utc(wave_env.release(FIN).deployed_at)
    watch_packages(as_of=start + timedelta(days=2, minutes=1))
    # Everything is down from day 2 to day 9; the first tick after restart owes days 3-9.
    watch_packages(as_of=start + timedelta(days=9, minutes=1))
    with session_scope(wave_env.url) as s:
        dues = sorted(as_utc(r.due_at) for r in s.exec(select(HealthCheckResult).where(
            HealthCheckResult.package_key == FIN,
            HealthCheckResult.check_name == "access_drift")))
    assert dues == [start + timedelta(days=d) for d in range(10)]
    assert wave_env.state(FIN) == "watching"
    assert as_utc(wave_env.release(FIN).next_check_at) > start + timedelta(days=9)


def test_process_killed_mid_deploy_then_rerun_converges(wave_env: WaveEnv) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.support.servers import wait_until

    before = wave_env.grants()
    from prefect.settings import PREFECT_API_URL

    # The harness's server, so the killed process leaves no ephemeral server of its own behind.
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.crash_run", wave_env.url],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def some_batches_landed() -> bool:
            r = wave_env.release(FIN)
            return r is not None and r.applied_batches >= 3

        wait_until(some_batches_landed, timeout=180, what="deploy batches")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    fin = wave_env.view(FIN)
    assert wave_env.state(FIN) == "deploying"
    partial = wave_env.grants()
    intended = {Grant(m, e) for m in fin.members for e in fin.entitlements}
    assert 0 < len(intended & partial - before) < len(intended - before)

    with approver(wave_env.url):
        assert release_wave(wave=1, requested_by="rm-alex", packages=[FIN]) == {FIN: "watching"}
    live = wave_env.grants()
    assert intended <= live
    assert not {g for g in live if g.identity in fin.members and g.entitlement in fin.removes}
    with session_scope(wave_env.url) as s:
        [release] = s.exec(select(Release).where(Release.package_key == FIN)).all()
        batches = audit.events(s, package_key=FIN, action="deploy_batch")
        from wavekit.adapters.store.bundles import load_bundle
        bundle = load_bundle(s, release.id, FIN)
    # One release, its prior bundle the state before the crash (not the half-written one),
    # and every planned add written exactly once across both runs.
    assert bundle.prior == {g for g in before if g.entitlement in fin.scope}
    assert sum(b.detail["added"] for b in batches) == len(intended - before)


def test_a_run_killed_between_deployed_and_the_launch_retirement_is_completed(
        wave_env: WaveEnv) -> None:
    """A real roll-out-package process SIGKILLed after "deployed", as it starts retiring HR's
    legacy grants in the launch window: the re-run is skipped (Watching) and retires them."""
    import os
    import signal
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    hr = wave_env.view(HR)
    legacy = {g for g in wave_env.seeded if g.identity in hr.members
              and g.entitlement in hr.retires}
    assert legacy and hr.retire_in_launch_window
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    died = subprocess.run([sys.executable, "-m", "tests.support.crash_run", wave_env.url,
                           "--die-before-retirement", HR], env=env, timeout=600,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert died.returncode == -signal.SIGKILL
    assert wave_env.state(HR) == "watching"
    assert wave_env.release(HR).legacy_retired_at is None and legacy <= wave_env.grants()

    with approver(wave_env.url):
        release_wave(wave=1, requested_by="rm-alex", packages=[HR])
    assert wave_env.release(HR).legacy_retired_at is not None
    assert not legacy & wave_env.grants()
    with session_scope(wave_env.url) as s:
        assert len(s.exec(select(Release).where(Release.package_key == HR)).all()) == 1
        [retired] = audit.events(s, package_key=HR, action="legacy_retired")
    assert retired.detail["count"] == len(legacy)


def test_legacy_grants_retire_after_a_clean_watch(wave_env: WaveEnv) -> None:
    with session_scope(wave_env.url) as s:
        pkg = s.get(RolePackage, HR)
        pkg.retire_in_launch_window = False
        s.add(pkg)
    hr = wave_env.view(HR)
    legacy_before = {g for g in wave_env.seeded if g.identity in hr.members
                     and g.entitlement in hr.retires}
    assert legacy_before
    with approver(wave_env.url):
        release_wave(wave=1, requested_by="rm-alex", packages=[HR])
    # Watching: the legacy archive grants are still there.
    assert legacy_before <= wave_env.grants()
    wave_env.watch_days(HR, 8)  # a 7-day watch
    assert wave_env.state(HR) == "stable"
    assert not legacy_before & wave_env.grants()
    with session_scope(wave_env.url) as s:
        [retired] = audit.events(s, package_key=HR, action="legacy_retired")
    assert retired.detail["count"] == len(legacy_before)


def test_a_held_dependent_is_ready_once_its_dependency_is_stable(wave_env: WaveEnv) -> None:
    from wavekit.adapters.store.models import PackageDependency
    from wavekit.workflow.rollout import dependents_ready
    from wavekit.workflow.runtime import current_runtime

    with session_scope(wave_env.url) as s:  # HR now depends on Finance, in the same wave
        s.add(PackageDependency(package_key=HR, depends_on=FIN))
    with approver(wave_env.url):
        result = release_wave(wave=1, requested_by="rm-alex")
    assert result == {FIN: "watching", HR: "held"}
    with session_scope(wave_env.url) as s:
        assert "finance-month-end-operator is Watching" in s.get(RolePackage, HR).state_reason
    assert dependents_ready(current_runtime(), FIN) == {}  # Finance is not Stable yet
    wave_env.watch_days(FIN, 15)
    assert wave_env.state(FIN) == "stable"
    with session_scope(wave_env.url) as s:
        [ready] = audit.events(s, package_key=HR, action="dependents_ready")
    assert ready.detail["after"] == FIN
    # Re-running the wave (what the watch deployment starts) releases the dependent.
    with approver(wave_env.url):
        assert release_wave(wave=1, requested_by="rm-alex") == {FIN: "stable", HR: "watching"}
