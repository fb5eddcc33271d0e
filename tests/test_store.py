"""The store on SQLite and PostgreSQL: catalog round trip, atomic writes, audit, bulk grants."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from wavekit.adapters.catalog import write_catalog
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import RowMissing, get_one, session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import Identity, PackageMember, RolePackage
from wavekit.adapters.store.packages import load_package_view, package_keys_in_wave
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.grants import Grant
from wavekit.domain.states import IllegalTransition, PackageState


def test_catalog_round_trip(store_url, example_catalog) -> None:
    with session_scope(store_url) as s:
        write_catalog(s, example_catalog)
    with session_scope(store_url) as s:
        assert s.exec(select(func.count()).select_from(Identity)).one() == 244
        assert s.exec(select(func.count()).select_from(PackageMember)).one() == 172
        assert package_keys_in_wave(s, 1) == ["finance-month-end-operator",
                                              "hr-case-intake-specialist"]
        hr = load_package_view(s, "hr-case-intake-specialist")
    assert len(hr.members) == 24 and len(hr.entitlements) == 8
    assert hr.retires == {"hr-archive-reporting", "hr-archive-export"}
    assert hr.approvers == {"UHROWNER01", "UHRDELEG01"}


def test_get_one_returns_the_row_or_names_the_missing_one(store_url, example_catalog) -> None:
    # The workflow reads rows that must exist with get_one: a missing one is a clear error,
    # not an AttributeError on None further down.
    with session_scope(store_url) as s:
        write_catalog(s, example_catalog)
    with session_scope(store_url) as s:
        assert get_one(s, RolePackage, "hr-case-intake-specialist").key == (
            "hr-case-intake-specialist")
        with pytest.raises(RowMissing, match="no RolePackage 'no-such-package' in the store"):
            get_one(s, RolePackage, "no-such-package")


def test_failed_transaction_writes_nothing(store_url, example_catalog) -> None:
    with pytest.raises(RuntimeError), session_scope(store_url) as s:
        write_catalog(s, example_catalog)
        raise RuntimeError("crash after the write, before commit")
    with session_scope(store_url) as s:
        assert s.exec(select(func.count()).select_from(Identity)).one() == 0


def test_transitions_are_checked_and_audited(store_url, example_catalog) -> None:
    with session_scope(store_url) as s:
        write_catalog(s, example_catalog)
    with session_scope(store_url) as s:
        pkg = s.get(RolePackage, "finance-month-end-operator")
        transition(s, pkg, PackageState.AWAITING_HANDOFF, "asked owner")
        with pytest.raises(IllegalTransition, match="Awaiting handoff to Stable"):
            transition(s, pkg, PackageState.STABLE)
    with session_scope(store_url) as s:
        assert s.get(RolePackage, "finance-month-end-operator").state == "awaiting_handoff"
        [ev] = audit.events(s, action="state_changed")
        assert ev.detail["from_state"] == "release_ready"
        assert ev.detail["to_state"] == "awaiting_handoff"


def test_sandbox_bulk_apply_on_both_stores(store_url) -> None:
    target = SandboxTarget(store_url)
    grants = [Grant(f"user{i:05d}", f"group{i % 7}") for i in range(3000)]
    first = target.apply(grants, [], batch_size=400)
    # 7 groups of ~430 at 400 a batch: each group is cut in two, no batch spans two groups.
    assert first.added == 3000 and len(first.batches) == 14
    assert target.read_grants({f"group{i}" for i in range(7)}) == frozenset(grants)
    again = target.apply(grants, grants[:1000], batch_size=400)
    assert again.added == 0 and again.removed == 1000 and again.unchanged == 3000
