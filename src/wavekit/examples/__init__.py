"""The example catalog shipped with wavekit: the seed portal's five role packages."""

from __future__ import annotations

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
