"""The nightly run's shared telemetry load measures every package exactly as `measure` does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.telemetry import LiveMeasurement, TelemetryMetrics, ingest_frame
from wavekit.domain.grants import Grant
from wavekit.examples.synth_telemetry import generate_telemetry

FIN, HR = "finance-month-end-operator", "hr-case-intake-specialist"
D0 = datetime(2026, 4, 8, 9, tzinfo=UTC)


def test_live_measurements_equal_one_package_at_a_time(loaded_store: str) -> None:
    frames = generate_telemetry(loaded_store, start=D0 - timedelta(days=28), deployed_at=D0,
                                days=28 + 3, seed=5, packages=[FIN, HR], anomaly=FIN,
                                privileged=None)
    with session_scope(loaded_store) as s:
        fin, hr = load_package_view(s, FIN), load_package_view(s, HR)
    member, other = sorted(fin.members)[1], sorted(hr.members)[0]
    entitlement = sorted(fin.entitlements)[0]
    late = D0 + timedelta(days=2, hours=12)
    # Out-of-band changes the metrics count (any actor but wavekit, however it is spelled
    # apart from case and spaces), next to wavekit's own that they never do.
    extra = pd.DataFrame({
        "identity": [other, other, member],
        "entitlement": [entitlement, entitlement, entitlement],
        "action": ["add", "add", "remove"],
        "at": [late, late + timedelta(minutes=1), late],
        "actor": ["it-helpdesk", " WaveKit ", "wavekit-bot"],
    })
    frames["assignments"] = pd.concat([frames["assignments"], extra], ignore_index=True)
    for kind, df in frames.items():
        ingest_frame(loaded_store, kind, df, source="test")
    metrics = TelemetryMetrics(loaded_store)
    as_of = D0 + timedelta(days=3, hours=2)
    held = frozenset({Grant(other, entitlement)})  # the out-of-band grant is still there
    todo = [LiveMeasurement(view, D0, as_of - timedelta(days=1), held, frozenset())
            for view in (fin, hr)]
    shared = metrics.measure_live(todo, as_of)
    alone = {m.package.key: metrics.measure(m.package, deployed_at=m.deployed_at,
                                            since=m.since, as_of=as_of,
                                            target_grants=m.target_grants)
             for m in todo}
    assert shared == alone
    assert shared[FIN]["escalation_anomaly"] is not None
    assert shared[FIN]["access_drift"] is not None
