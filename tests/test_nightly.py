"""The nightly maintenance run on the example data with synthetic telemetry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlmodel import select

from flows.maintenance import nightly_maintenance
from flows.watch import watch_packages
from flows.wave import release_wave
from tests.support.flows import approver, artifact_head
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import (
    HealthCheckResult,
    MaintenanceTask,
    Release,
    RolePackage,
)
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.adapters.telemetry import ingest_frame
from wavekit.domain.clock import as_utc, utcnow
from wavekit.domain.grants import Grant
from wavekit.examples import seed_target
from wavekit.examples.synth_telemetry import generate_telemetry
from wavekit.present.kpis import compute_kpis
from wavekit.workflow.runtime import build_runtime, runtime_override

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]
FIN, HR = "finance-month-end-operator", "hr-case-intake-specialist"


@pytest.fixture
def launched(loaded_store: str, monkeypatch, tmp_path) -> Iterator:  # type: ignore[type-arg]
    """Wave 1 released on the sandbox, with telemetry where HR degrades after launch."""
    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    monkeypatch.setenv("WAVEKIT_APPROVALS_UNVERIFIED", "true")  # the auto-approver has no code
    target = SandboxTarget(loaded_store)
    seed_target(target)
    settings = load_settings(database_url=loaded_store, data_dir=tmp_path)

    def telemetry(days: int = 43, **extra):  # type: ignore[no-untyped-def]
        launch = utcnow()
        frames = generate_telemetry(loaded_store, start=launch - timedelta(days=28),
                                    deployed_at=launch, days=days, seed=7, **extra)
        for kind, df in frames.items():
            ingest_frame(loaded_store, kind, df, source="test")
        return launch

    with runtime_override(lambda: build_runtime(settings, target=target)):
        yield loaded_store, telemetry


def _deployed_at(url: str, key: str):  # type: ignore[no-untyped-def]
    with session_scope(url) as s:
        return as_utc(s.exec(select(Release.deployed_at).where(Release.package_key == key)).one())


def test_nightly_run_rolls_back_the_degrading_package_and_keeps_the_backlog(launched) -> None:
    url, telemetry = launched
    telemetry(degrading=HR)
    with approver(url):
        release_wave(wave=1, requested_by="rm-alex")
    night = _deployed_at(url, HR) + timedelta(days=3, hours=2)
    summary = nightly_maintenance(as_of=night)
    with session_scope(url) as s:
        states = {p.key: p.state for p in s.exec(select(RolePackage))}
        rollback = audit.events(s, package_key=HR, action="rollback_started")
        tasks = {t.dedupe_key: t for t in s.exec(select(MaintenanceTask))}
    assert states[HR] == "rolled_back" and states[FIN] == "watching"
    assert rollback and "ticket_noise" in rollback[0].detail["reason"]
    # The backlog: HR's failed checks open tuning/exception work; the Service Desk drill is
    # still pending (the seed's "close the fallback gap"); healthy Finance opens nothing but
    # its own drill item (its catalog's "drill: signed" is text, not a recorded drill).
    assert summary["opened"] == len(tasks) > 0
    assert not [k for k in tasks if FIN in k and not k.startswith("drill:")]
    assert tasks[f"drill:{FIN}"].reason.startswith("rollback drill pending")
    assert any(k.startswith("drill:") and "service-desk-resolver" in k for k in tasks), tasks
    assert all(t.reason for t in tasks.values())
    # A second run the same night opens no twins.
    again = nightly_maintenance(as_of=night + timedelta(minutes=30))
    with session_scope(url) as s:
        assert len(s.exec(select(MaintenanceTask)).all()) == len(tasks)
    assert again["opened"] == 0
    # Each artifact of the night ends with a chain head the chain still holds: the rollback
    # proof (written after the rollback was verified), the summary, the dashboard's location.
    from wavekit.present.reports import artifact_key

    with session_scope(url) as s:
        verified = audit.events(s, package_key=HR, action="rollback_verified")[0].seq
    assert artifact_head(url, artifact_key("rollback", HR), "data").seq >= verified
    summary_head = artifact_head(url, "nightly-maintenance")
    assert summary_head.seq > verified
    assert artifact_head(url, "readiness-dashboard-location", "data").seq >= summary_head.seq


def test_bulk_export_spike_contains_its_package(launched) -> None:
    url, telemetry = launched
    # The synthetic spike (and an out-of-band privileged grant) lands midway through the last
    # generated day: day 10.5, inside Finance's 14-day watch.
    launch = telemetry(anomaly=FIN, days=28 + 11)
    with approver(url):
        release_wave(wave=1, requested_by="rm-alex", packages=[FIN])
    with session_scope(url) as s:
        fin = load_package_view(s, FIN)
    target = SandboxTarget(url)
    deployed = target.read_grants(fin.entitlements)
    watch_packages(as_of=launch + timedelta(days=10, hours=20))  # catches up to the spike
    with session_scope(url) as s:
        pkg = s.get(RolePackage, FIN)
        [contained] = audit.events(s, package_key=FIN, action="package_contained")
        [suspended] = audit.events(s, package_key=FIN, action="grants_suspended")
        failed = s.exec(select(HealthCheckResult.check_name).where(
            HealthCheckResult.package_key == FIN, HealthCheckResult.verdict == "failed")).all()
    assert sorted(failed) == ["escalation_anomaly", "export_anomaly"]  # nothing before the spike
    assert pkg.state == "contained" and "export_anomaly" in pkg.state_reason
    # Containment contains: the member who exported loses the package's grants, nobody else.
    spiker = sorted(fin.members)[0]
    assert contained.detail["identities"] == [spiker]
    lost = {Grant(spiker, e) for e in fin.entitlements}
    assert target.read_grants(fin.entitlements) == deployed - lost
    assert suspended.detail["count"] == len(lost)
    # The nightly run still judges it (and does not contain it twice or roll it back).
    summary = nightly_maintenance(as_of=launch + timedelta(days=10, hours=22))
    assert summary["contain"] == 1 and summary["rollback"] == 0
    with session_scope(url) as s:
        assert s.get(RolePackage, FIN).state == "contained"
        assert len(audit.events(s, package_key=FIN, action="package_contained")) == 1
        assert compute_kpis(s, launch + timedelta(days=11)).roles_monitored == 1
