"""Catalog validation: every problem reported with file, line and field; nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlmodel import func, select

from wavekit.adapters.catalog import CatalogInvalid, load_catalog, write_catalog
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import AuditEvent, Identity, RolePackage
from wavekit.examples import EXAMPLE_CATALOG


def test_example_catalog_has_the_portal_numbers(example_catalog) -> None:
    got = {p.name: (len(p.members), len(p.entitlements), p.wave, p.risk)
           for p in example_catalog.packages}
    assert got == {
        "Finance Month-End Operator": (42, 11, 1, "low"),
        "Service Desk Resolver": (58, 14, 2, "medium"),
        "Procurement Request Coordinator": (31, 9, 2, "low"),
        "HR Case Intake Specialist": (24, 8, 1, "medium"),
        "Warehouse Inventory Poster": (17, 7, None, "high"),
    }
    assert example_catalog.package("service-desk-resolver").fallback_drill == "pending"
    assert example_catalog.package("warehouse-inventory-poster").rollback_only
    assert example_catalog.package("hr-case-intake-specialist").retires == [
        "hr-archive-reporting", "hr-archive-export"]


def _broken_catalog(tmp_path: Path) -> Path:
    root = tmp_path / "catalog"
    shutil.copytree(EXAMPLE_CATALOG, root)
    ids = (root / "identities.csv").read_text().splitlines()
    ids.append(ids[1])  # 1: duplicate identity id (line 247)
    ids.append("zz-new,Zed New,not-an-email,Finance,Finance,,,person,maybe,,")  # 2: email 3: active
    (root / "identities.csv").write_text("\n".join(ids) + "\n")
    mem = (root / "memberships.csv").read_text().rstrip("\n")
    mem += "\nfinance-month-end-operator,ghost-user\nno-such-package,hwilson\n"  # 4, 5
    (root / "memberships.csv").write_text(mem)
    y = (root / "packages.yaml").read_text()
    y = y.replace("owner: {name: Procurement Excellence, slack_id: UPROOWNER1, "
                  "email: procurement-lead@example.com}", "owner: {slack_id: UPROOWNER1}")  # 6
    y = y.replace("    wave: 2\n    release_date: 2026-04-15", "    wave: two\n"
                  "    release_date: 2026-04-15")  # 7
    y = y.replace("hr-letter-templates]", "hr-letter-templatez]")  # 8: unknown entitlement
    y = y.replace("    risk: low\n    wave: two", "    risk: extreme\n    wave: two")  # 9
    # 10: a dependency cycle finance -> procurement -> finance
    y = y.replace("    risk: low\n    wave: 1\n    release_date: 2026-04-08\n    watch_days: 14",
                  "    risk: low\n    wave: 1\n    release_date: 2026-04-08\n    watch_days: 14\n"
                  "    depends_on: [procurement-request-coordinator]")
    (root / "packages.yaml").write_text(y)
    return root


def test_ten_mistakes_are_all_reported_and_nothing_is_written(tmp_path, loaded_store) -> None:
    root = _broken_catalog(tmp_path)
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    found = {(p.file, p.field, p.line) for p in err.value.problems}
    text = "\n".join(str(p) for p in err.value.problems)
    proc, hr = "packages[procurement-request-coordinator]", "packages[hr-case-intake-specialist]"
    expected = [
        ("identities.csv", "id", 246, "duplicate identity id 'hwilson'"),
        ("identities.csv", "email", 247, "not an email address"),
        ("identities.csv", "active", 247, "'maybe' is not true/false"),
        ("memberships.csv", "identity", 174, "'ghost-user' is not an identity"),
        ("memberships.csv", "package", 175, "unknown package 'no-such-package'"),
        ("packages.yaml", f"{proc}.owner", None, "owner is missing"),
        ("packages.yaml", f"{proc}.wave", None, "'two' is not a wave number"),
        ("packages.yaml", f"{hr}.entitlements", None,
         "unknown entitlement 'hr-letter-templatez'"),
        ("packages.yaml", f"{proc}.risk", None, "'extreme' is not one of"),
        # The cycle is reported on the package that closes it (procurement -> finance).
        ("packages.yaml", f"{proc}.depends_on", None, "dependency cycle"),
    ]
    assert len(err.value.problems) == len(expected), text
    for file, fld, line, message in expected:
        matches = [p for p in err.value.problems if p.file == file and p.field == fld
                   and message in p.message]
        assert matches, f"missing {file} {fld} {message!r} in:\n{text}"
        if line is not None:
            assert matches[0].line == line, str(matches[0])
        else:
            assert matches[0].line is None or matches[0].line > 0
    assert all(p.line for p in err.value.problems), found
    # The store still holds the catalog it had: nothing was half-written.
    with session_scope(loaded_store) as s:
        assert s.exec(select(func.count()).select_from(Identity)).one() == 244
        assert s.get(RolePackage, "procurement-request-coordinator").owner_name == \
            "Procurement Excellence"


def test_yaml_lines_point_at_the_field(tmp_path) -> None:
    root = _broken_catalog(tmp_path)
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    lines = (root / "packages.yaml").read_text().splitlines()
    wave = next(p for p in err.value.problems if p.field.endswith(".wave"))
    assert lines[wave.line - 1].strip() == "wave: two"


def test_missing_files_and_columns(tmp_path) -> None:
    (tmp_path / "identities.csv").write_text("name\nbob\n")
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(tmp_path)
    msgs = {(p.file, p.field) for p in err.value.problems}
    assert ("identities.csv", "id") in msgs
    assert ("entitlements.csv", "file") in msgs
    assert ("packages.yaml", "file") in msgs


def test_write_keeps_package_state_on_reload(loaded_store, example_catalog) -> None:
    with session_scope(loaded_store) as s:
        pkg = s.get(RolePackage, "finance-month-end-operator")
        pkg.state = "stable"
        s.add(pkg)
    with session_scope(loaded_store) as s:
        write_catalog(s, example_catalog)
    with session_scope(loaded_store) as s:
        assert s.get(RolePackage, "finance-month-end-operator").state == "stable"
        loads = s.exec(select(AuditEvent).where(AuditEvent.action == "catalog_loaded")).all()
        assert len(loads) == 2


def test_a_bad_population_rule_is_reported_for_each_package_using_it(tmp_path) -> None:
    root = tmp_path / "catalog"
    shutil.copytree(EXAMPLE_CATALOG, root)
    y = (root / "packages.yaml").read_text()
    y = y.replace("population_rule: \"department == 'HR Ops'\"",
                  "population_rule: \"departmnt == 'HR Ops'\"")
    y = y.replace("population_rule: \"department == 'Procurement'\"",
                  "population_rule: \"departmnt == 'HR Ops'\"")
    (root / "packages.yaml").write_text(y)
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    bad = [p for p in err.value.problems if p.field.endswith("population_rule")]
    assert {p.field for p in bad} == {"packages[hr-case-intake-specialist].population_rule",
                                      "packages[procurement-request-coordinator].population_rule"}
    assert all("departmnt" in p.message and p.line for p in bad)


def test_problems_are_capped_per_field_and_the_rest_counted() -> None:
    from wavekit.adapters.problems import Problem, capped
    from wavekit.adapters.telemetry import TelemetryInvalid

    out = capped("f.csv", [(i, "x", "bad") for i in range(1, 26)] + [(1, "y", "bad")], 20,
                 "column")
    assert len(out) == 22
    assert str(out[-1]) == "f.csv: x: ... and 5 more rows with a problem in this column"
    # Both input errors list their problems the same way, each up to its own bound.
    many = [Problem("f", i, "x", "bad") for i in range(1, 61)]
    assert str(CatalogInvalid(many)).splitlines()[0] == "60 problem(s) in the catalog:"
    assert str(TelemetryInvalid(many)).splitlines()[-1] == "  ... and 10 more"
