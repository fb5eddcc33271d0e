"""The example catalog shipped with wavekit: the seed portal's five role packages."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from wavekit.adapters.targets.base import ApplyResult, Target
from wavekit.domain.grants import Grant

EXAMPLE_CATALOG = Path(__file__).parent / "catalog"
SANDBOX_SEED = EXAMPLE_CATALOG / "sandbox_seed.csv"


def seed_target(target: Target, path: Path = SANDBOX_SEED) -> ApplyResult:
    """Give a target the access people hold before wavekit runs (identity,entitlement CSV)."""
    df = pd.read_csv(path, dtype=str)
    grants = [Grant(i, e) for i, e in zip(df["identity"], df["entitlement"], strict=True)]
    return target.apply(grants, [])


# The example world's rollback drills, recorded (never read from catalog text): the seed
# portal's medium- and high-risk packages whose fallback was rehearsed outside wavekit, each a
# signed manual drill naming who signed it. Service Desk has none: the demo drills it.
EXAMPLE_SIGNED_DRILLS: dict[str, tuple[str, str]] = {
    "hr-case-intake-specialist": (
        "HR Operations (example signer)",
        "case-intake rollback rehearsed on the HR staging tenant (example world)"),
    "warehouse-inventory-poster": (
        "Warehouse Operations (example signer)",
        "legacy control package restore rehearsed in the WMS sandbox (example world)"),
}


def record_example_drills(database_url: str, at: datetime) -> list[str]:
    """Record the example world's signed manual drills as of `at` (the demo's setup and the
    tests' example store); returns the packages drilled. Each is a drill row and an audit
    event, like `wavekit drill PACKAGE --signed-by NAME --note TEXT`."""
    from wavekit.adapters.settings import load_settings
    from wavekit.adapters.targets.sandbox import SandboxTarget
    from wavekit.domain.clock import ManualClock
    from wavekit.workflow.drills import record_manual_drill
    from wavekit.workflow.runtime import Runtime

    # Recording a drill reads the store and the clock only: no target is written, no one told.
    rt = Runtime(load_settings(database_url=database_url), database_url,
                 SandboxTarget(database_url), clock=ManualClock(at))
    for key, (signed_by, note) in EXAMPLE_SIGNED_DRILLS.items():
        record_manual_drill(rt, key, signed_by=signed_by, note=note, actor="example-setup")
    return list(EXAMPLE_SIGNED_DRILLS)
