"""Every package of a wave is handed to its owner at once, however many there are.

Before, each package subflow blocked in its owner handoff inside a four-thread task runner:
with six packages the fifth and sixth owners heard of their release only when one of the first
four was decided (a day later with the real deadline).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from flows.wave import release_wave
from tests.support.flows import ScriptedMetrics, approver
from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store.engine import reset_store, session_scope
from wavekit.adapters.store.models import Approval, RolePackage
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.clock import as_utc
from wavekit.examples.synth import generate_catalog
from wavekit.workflow.runtime import build_runtime, runtime_override

pytestmark = pytest.mark.usefixtures("prefect_harness")
PACKAGES = 8


def _eight_independent_packages(tmp_path: Path) -> str:
    cat = tmp_path / "catalog"
    generate_catalog(cat, identities=400, packages=PACKAGES, waves=1,
                     members_per_package=(5, 10), seed=3)
    doc = yaml.safe_load((cat / "packages.yaml").read_text())
    for pkg in doc["packages"]:
        # Every gate passes, so each package reaches its handoff: the test is about timing.
        pkg.update(risk="low", depends_on=[], guards=[])
        pkg["fallback"] = {"plan": "Revert to the prior bundle", "drill": "signed"}
    (cat / "packages.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    reset_store(url)
    with session_scope(url) as s:
        write_catalog(s, load_catalog(cat), source=str(cat))
    return url


def test_a_wave_of_eight_packages_hands_all_eight_off_at_once(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    monkeypatch.setenv("WAVEKIT_APPROVALS_UNVERIFIED", "true")  # the auto-approver has no code
    # The watchdog: a regression to a bounded runner would leave owners 5-8 unasked until a
    # paused package times out, a day later with the real deadline. With three minutes the
    # first packages time out, the rest are asked late, and the timing assertion fails fast.
    monkeypatch.setenv("WAVEKIT_APPROVAL_DEADLINE_HOURS", "0.05")
    url = _eight_independent_packages(tmp_path)
    settings = load_settings(database_url=url)
    target = SandboxTarget(url)
    all_asked = threading.Event()

    def decide(a: Approval):  # type: ignore[no-untyped-def]
        # Nobody decides until every owner has been asked; then every package is rejected.
        with session_scope(url) as s:
            asked = len(list(s.exec(select(Approval.id))))
        if asked < PACKAGES:
            return None
        all_asked.set()
        return ("reject", None, "timing test only")

    with runtime_override(lambda: build_runtime(settings, target=target,
                                                metrics=ScriptedMetrics())), \
            approver(url, decide):
        t0 = time.monotonic()
        result = release_wave(wave=1, requested_by="U0RELMGR1")

    took = time.monotonic() - t0
    assert all_asked.is_set(), "the owners were never all asked while the wave waited"
    with session_scope(url) as s:
        asked = sorted(as_utc(a.requested_at) for a in s.exec(select(Approval)))
        states = {p.key: p.state for p in s.exec(select(RolePackage))}
    assert len(asked) == PACKAGES
    # All eight requested within seconds of each other while each run waited for its owner.
    # (The old four-thread runner never asked owners 5-8 here: nobody decides until all 8 are
    # asked. The bound leaves room for a loaded two-core CI box.)
    assert asked[-1] - asked[0] < timedelta(seconds=45), [t - asked[0] for t in asked]
    assert set(result.values()) == {"held"} and set(states.values()) == {"held"}
    # Rejected as soon as all were asked, well before the three-minute deadline.
    assert took < 150, f"the wave took {took:.0f} s"
    assert target.read_grants({"nothing"}) == frozenset()
