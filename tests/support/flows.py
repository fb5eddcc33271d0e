"""Flow-test helpers: one Prefect test harness per session, approvers, scripted telemetry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from wavekit.clock import as_utc
from wavekit.grants import GrantSet
from wavekit.models import Approval
from wavekit.packages import PackageView
from wavekit.store import session_scope

HEALTHY = {"adoption": 0.9, "access_drift": 0.0, "ticket_noise": 1.0, "exception_growth": 0.0,
           "export_anomaly": 0.5, "escalation_anomaly": 0.0}


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server for the whole session (it takes ~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


class ScriptedMetrics:
    """Metric values by package and day since deploy: healthy unless a script says otherwise."""

    def __init__(self, script: Mapping[str, Callable[[float], Mapping[str, float | None]]]
                 | None = None) -> None:
        self.script = dict(script or {})
        self.calls: list[tuple[str, datetime]] = []

    def measure(self, package: PackageView, deployed_at: datetime, as_of: datetime,
                target_grants: GrantSet) -> Mapping[str, float | None]:
        self.calls.append((package.key, as_of))
        day = (as_utc(as_of) - as_utc(deployed_at)) / timedelta(days=1)
        values = dict(HEALTHY)
        if package.key in self.script:
            values.update(self.script[package.key](day))
        return values


Decider = Callable[[Approval], tuple[str, str, str] | None]


def approve_all(_: Approval) -> tuple[str, str, str]:
    return ("approve", "owner (test)", "looks good")


@contextmanager
def approver(database_url: str, decide: Decider = approve_all) -> Iterator[list[str]]:
    """Resume every paused owner handoff with the decision `decide` returns (None: leave it)."""
    from prefect.flow_runs import resume_flow_run

    handled: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with session_scope(database_url) as s:
                pending = list(s.exec(select(Approval).where(Approval.decided_at.is_(None),  # type: ignore[union-attr]
                                                             Approval.flow_run_id.is_not(None))))  # type: ignore[union-attr]
            for a in pending:
                key = f"{a.id}:{a.flow_run_id}"
                if key in handled or (choice := decide(a)) is None:
                    continue
                decision, who, comment = choice
                try:
                    resume_flow_run(a.flow_run_id, run_input={
                        "decision": decision, "approver": who, "comment": comment})
                    handled.append(key)
                except Exception:
                    pass
            time.sleep(0.5)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield handled
    finally:
        stop.set()
        thread.join(timeout=5)
