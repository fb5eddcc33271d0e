"""Re-runs honour decisions stored while no run was waiting (the receiver or the deadline
sweep decided; the run that asked had ended). Ad-hoc runs that do not wait stand for a run
that is down."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from flows.wave import release_wave
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.approvals import settle
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, Release, RolePackage
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.clock import as_utc
from wavekit.domain.decisions import Click
from wavekit.examples import seed_target
from wavekit.workflow import maintenance
from wavekit.workflow.runtime import build_runtime, runtime_override

pytestmark = pytest.mark.usefixtures("prefect_harness")
FIN = "finance-month-end-operator"


def _release(rt_factory: Any) -> dict[str, str]:
    with runtime_override(rt_factory):
        return release_wave(wave=1, packages=[FIN], requested_by="rm-alex",
                            wait_for_owners=False)


def _env(loaded_store: str) -> tuple[Any, SandboxTarget]:
    settings = load_settings(database_url=loaded_store)
    target = SandboxTarget(loaded_store)
    seed_target(target)
    return (lambda: build_runtime(settings, target=target)), target


def _approval(url: str) -> Approval:
    with session_scope(url) as s:
        return s.exec(select(Approval).where(Approval.package_key == FIN)
                      .order_by(Approval.id.desc())).first()  # type: ignore[union-attr]


def test_an_approval_stored_while_down_is_applied_as_if_live(loaded_store: str) -> None:
    factory, _ = _env(loaded_store)
    assert _release(factory) == {FIN: "awaiting_handoff"}
    a = _approval(loaded_store)
    with session_scope(loaded_store) as s:  # the Slack receiver, with no run to resume
        settled = settle(s, a.id, Click("UFINOWNER1", "approve"), channel="slack",
                         proof="slack", now=as_utc(a.requested_at) + timedelta(hours=2))
    assert settled.final
    assert _release(factory) == {FIN: "watching"}
    with session_scope(loaded_store) as s:
        a = s.get(Approval, a.id)
        release = s.get(Release, a.release_id)
        assert release.approved_by == "UFINOWNER1"
        assert as_utc(release.approved_at) == as_utc(a.decided_at)  # the KPI's deploy time
        (applied,) = audit.events(s, action="approval_applied")
        assert applied.release_id == release.id and applied.detail["verified"]
        assert release.deployed_at is not None


def test_a_timeout_stored_while_down_holds_and_closes_the_release_once(
        loaded_store: str) -> None:
    factory, _ = _env(loaded_store)
    assert _release(factory) == {FIN: "awaiting_handoff"}
    a = _approval(loaded_store)
    rt = factory()
    assert maintenance.sweep_approval_deadlines(rt, as_utc(a.deadline) + timedelta(minutes=1)) == 1
    assert _release(factory) == {FIN: "held"}
    with session_scope(loaded_store) as s:
        pkg = s.get(RolePackage, FIN)
        release = s.get(Release, a.release_id)
        assert pkg.state == "held" and "deadline passed" in pkg.state_reason
        assert release.closed and release.deployed_at is None
        held = [e for e in audit.events(s, package_key=FIN, action="held")
                if e.release_id == release.id]
        assert len(held) == 1
    # The next run is a new attempt (a fresh release and approval), not the stuck old one.
    assert _release(factory) == {FIN: "awaiting_handoff"}
    assert _approval(loaded_store).id != a.id
    with session_scope(loaded_store) as s:
        assert len([e for e in audit.events(s, package_key=FIN, action="held")
                    if e.release_id == a.release_id]) == 1


def test_a_rejection_stored_while_down_holds_and_closes_the_release_once(
        loaded_store: str) -> None:
    factory, target = _env(loaded_store)
    assert _release(factory) == {FIN: "awaiting_handoff"}
    a = _approval(loaded_store)
    before = target.read_grants(["fin-gl-journal-post"])
    with session_scope(loaded_store) as s:  # the Slack receiver, with no run to resume
        settled = settle(s, a.id, Click("UFINOWNER1", "reject", comment="close week"),
                         channel="slack", proof="slack",
                         now=as_utc(a.requested_at) + timedelta(hours=1))
    assert settled.final
    assert _release(factory) == {FIN: "held"}
    assert _release(factory) == {FIN: "awaiting_handoff"}  # the next run is a fresh attempt
    with session_scope(loaded_store) as s:
        pkg_reason = s.get(RolePackage, FIN).state_reason
        release = s.get(Release, a.release_id)
        assert release.closed and release.deployed_at is None and release.approved_at is None
        held = [e for e in audit.events(s, package_key=FIN, action="held")
                if e.release_id == release.id]
        assert len(held) == 1 and "rejected by UFINOWNER1: close week" in \
            held[0].detail["reason"]
    assert "waiting for" in pkg_reason
    assert target.read_grants(["fin-gl-journal-post"]) == before  # nothing was deployed


def test_a_blank_requester_is_refused_before_anything_is_staged(loaded_store: str) -> None:
    factory, _ = _env(loaded_store)
    with runtime_override(factory):
        state = release_wave(wave=1, packages=[FIN], requested_by="  ", return_state=True)
    assert state.is_failed() and "requested_by is required" in (state.message or "")
    with session_scope(loaded_store) as s:
        assert s.exec(select(Release)).all() == [] and s.exec(select(Approval)).all() == []
        assert s.get(RolePackage, FIN).state == "release_ready"
