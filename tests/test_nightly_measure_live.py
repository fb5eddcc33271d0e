"""The nightly plan measures every package alike whichever way it reads the target.

plan_from_store reads the target once as a frame (the sandbox's own frame read, or any
target's Grants framed) and measures every live package in one pass (measure_live); a
metrics source without measure_live measures package by package from each package's own
telemetry. All three must give the same metrics, on a store built as the P3 benchmark
builds it (benchmarks/nightly.py) with some grants missing and some added out of band.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlmodel import select

from benchmarks import nightly
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Identity, SandboxGrant
from wavekit.adapters.telemetry import ingest_frame
from wavekit.domain.grants import Grant, GrantSet
from wavekit.workflow import maintenance


class GrantsOnly:
    """A target that can only read Grants (as LDAP and SCIM do)."""

    def __init__(self, target: Any) -> None:
        self.inner = target

    def read_grants(self, entitlements: Collection[str]) -> GrantSet:
        return frozenset(self.inner.read_grants(entitlements))


def _metrics(rt: Any, monkeypatch: pytest.MonkeyPatch) -> Mapping[str, Any]:
    seen: dict[str, Any] = {}
    plan = maintenance.plan_maintenance

    def spy(packages: Any, metrics: Mapping[str, Any], *args: Any, **kw: Any) -> Any:
        seen.update(metrics)
        return plan(packages, metrics, *args, **kw)

    monkeypatch.setattr(maintenance, "plan_maintenance", spy)
    maintenance.plan_from_store(rt, nightly.as_of())
    return seen


def test_nightly_metrics_are_the_same_on_every_path(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = nightly.build_store(f"sqlite:///{tmp_path / 'nightly.db'}", tmp_path, 1 / 1000)
    rt = nightly.nightly_runtime(store, tmp_path)
    with session_scope(store.url) as s:
        held = sorted(rt.target.read_grants(set(s.exec(select(SandboxGrant.entitlement)))))
        people = sorted(s.exec(select(Identity.id)))
    entitlement = held[0].entitlement
    outsider = next(i for i in people if Grant(i, entitlement) not in held)
    rt.target.apply([Grant(outsider, entitlement)], held[1:40:3])
    ingest_frame(store.url, "assignments", pd.DataFrame({
        "identity": [outsider], "entitlement": [entitlement], "action": ["add"],
        "at": [nightly.as_of() - timedelta(hours=3)], "actor": ["it-helpdesk"]}),
        source="out-of-band")

    shared = _metrics(rt, monkeypatch)
    framed = _metrics(replace(rt, target=GrantsOnly(rt.target)), monkeypatch)
    alone = _metrics(replace(rt, metrics=replace_live(rt.metrics)), monkeypatch)
    assert shared and shared == framed == alone
    assert any(m["access_drift"] for m in shared.values())  # the changes above show


def replace_live(metrics: Any) -> Any:
    """The same metrics source without measure_live: measured package by package."""
    class PerPackage:
        def measure(self, *args: Any, **kw: Any) -> Any:
            return metrics.measure(*args, **kw)
    return PerPackage()
