"""Flow-test helpers: one Prefect test harness per session, approvers, scripted telemetry."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta

import pytest

from wavekit.adapters.store.models import Approval
from wavekit.domain.clock import as_utc
from wavekit.domain.grants import GrantSet
from wavekit.domain.packages import PackageView
from wavekit.workflow.approvals import auto_approver

HEALTHY = {"adoption": 0.9, "access_drift": 0.0, "ticket_noise": 1.0, "exception_growth": 0.0,
           "export_anomaly": 0.5, "escalation_anomaly": 0.0}


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server for the whole session (it takes ~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


class ScriptedMetrics:
    """Metric values by package and day since deploy (the window's end): healthy unless a
    script says otherwise. A script may raise, to stand for a broken feed; `names` says who
    an anomaly implicates, by package."""

    def __init__(self, script: Mapping[str, Callable[[float], Mapping[str, float | None]]]
                 | None = None) -> None:
        self.script = dict(script or {})
        self.names: dict[str, frozenset[str]] = {}
        self.calls: list[tuple[str, datetime]] = []
        self.windows: list[tuple[str, datetime, datetime, bool]] = []

    def measure(self, package: PackageView, *, deployed_at: datetime, since: datetime,
                as_of: datetime, target_grants: GrantSet, suspended: GrantSet = frozenset(),
                from_history: bool = False) -> Mapping[str, float | None]:
        self.calls.append((package.key, as_of))
        self.windows.append((package.key, as_utc(since), as_utc(as_of), from_history))
        day = (as_utc(as_of) - as_utc(deployed_at)) / timedelta(days=1)
        values = dict(HEALTHY)
        if package.key in self.script:
            values.update(self.script[package.key](day))
        return values

    def implicated(self, package: PackageView, metric: str, *, deployed_at: datetime,
                   since: datetime, as_of: datetime, threshold: float) -> frozenset[str]:
        return self.names.get(package.key, frozenset())


def approve_all(_: Approval) -> tuple[str, str | None, str]:
    return ("approve", None, "looks good")  # None: the next eligible approver (local mode)


def owner_of(database_url: str, key: str) -> str:
    """The package owner's approver id (Slack id, else e-mail)."""
    from wavekit.adapters.store.engine import session_scope
    from wavekit.adapters.store.packages import load_package_view

    with session_scope(database_url) as s:
        return next(p.id for p in load_package_view(s, key).approver_people
                    if p.role == "owner")


def approver(database_url: str, decide=approve_all):  # type: ignore[no-untyped-def]
    """The library's auto-approver with a test decision."""
    return auto_approver(database_url, decide)


def artifact_head(database_url: str, key: str, field: str = "description"):  # type: ignore[no-untyped-def]
    """The audit chain head printed in the newest Prefect artifact `key` (its description or
    its data), checked to be a head the chain still holds (not truncated, not forked)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from wavekit.adapters.store import audit
    from wavekit.adapters.store.engine import session_scope

    with get_client(sync_client=True) as client:
        [newest] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC, limit=1)
    head = audit.head_from_text(str(getattr(newest, field) or ""))
    assert head is not None, f"artifact {key} shows no audit chain head"
    with session_scope(database_url) as s:
        assert audit.verify_chain(s, expect_head=head.hash).ok
    return head
