"""Hostile catalogs: every mistake seen in the field is ONE problem naming file, line and field.

Each case starts from the example catalog, breaks one thing and expects exactly one problem
(no traceback, no follow-on rows), then that `wavekit load` writes nothing.
"""

from __future__ import annotations

import shutil
import time
import tracemalloc
from pathlib import Path

import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from wavekit.adapters.catalog import CatalogInvalid, Limits, load_catalog
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import AuditEvent, Identity, RolePackage
from wavekit.examples import EXAMPLE_CATALOG
from wavekit.present.cli import app

FIN = "packages[finance-month-end-operator]"
FIN_HEAD = "    risk: low\n    wave: 1\n    release_date: 2026-04-08\n    watch_days: 14\n"
FOCUS = "    telemetry_focus: Adoption and drift\n"


def _catalog(tmp_path: Path, *edits: tuple[str, str], files: dict | None = None) -> Path:
    root = tmp_path / "catalog"
    shutil.copytree(EXAMPLE_CATALOG, root)
    text = (root / "packages.yaml").read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    (root / "packages.yaml").write_text(text)
    for name, data in (files or {}).items():
        path = root / name
        if data is None:
            path.unlink()
        elif data == "DIR":
            path.unlink()
            path.mkdir()
        else:
            path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return root


def _line(root: Path, text: str, name: str = "packages.yaml") -> int:
    """The line holding `text` (the last one when several do)."""
    lines = (root / name).read_text().splitlines()
    return [i for i, ln in enumerate(lines, 1) if text in ln][-1]


def _one(root: Path, **kw) -> object:
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root, **kw)
    problems = err.value.problems
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


# ------------------------------------------------------------------ files and CSV headers


def test_an_empty_identities_csv_is_one_problem(tmp_path) -> None:
    p = _one(_catalog(tmp_path, files={"identities.csv": ""}))
    assert (p.file, p.line, p.field) == ("identities.csv", 1, "file")
    assert "is empty" in p.message and "id, display_name" in p.message


@pytest.mark.parametrize(("name", "column"), [
    ("entitlements.csv", "system"), ("identities.csv", "active"),
    ("identities.csv", "department"), ("memberships.csv", "identity"),
])
def test_a_missing_column_is_one_problem_and_no_row_is_checked(tmp_path, name, column) -> None:
    root = tmp_path / "src"
    shutil.copytree(EXAMPLE_CATALOG, root)
    lines = (root / name).read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index(column)
    kept = [",".join(c for i, c in enumerate(ln.split(",")) if i != drop) for ln in lines]
    # The rows still hold values in the other columns: none of them is reported.
    catalog = _catalog(tmp_path / "t", files={name: "\n".join(kept) + "\n"})
    p = _one(catalog)
    assert (p.file, p.line, p.field) == (name, 1, column)
    assert p.message == "required column is missing from the header"


def test_a_misspelled_header_names_the_column_it_found(tmp_path) -> None:
    text = (EXAMPLE_CATALOG / "memberships.csv").read_text().replace("package,identity",
                                                                     "package,identty", 1)
    p = _one(_catalog(tmp_path, files={"memberships.csv": text}))
    assert (p.file, p.line, p.field) == ("memberships.csv", 1, "identity")
    assert "'identty'" in p.message


def test_a_directory_where_a_csv_should_be(tmp_path) -> None:
    p = _one(_catalog(tmp_path, files={"memberships.csv": "DIR"}))
    assert (p.file, p.line, p.field, p.message) == ("memberships.csv", None, "file",
                                                     "is a directory, not a file")


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
                                  b"packages: [\xff\xfe]\n"])
def test_a_binary_or_non_utf8_packages_yaml_is_one_problem(tmp_path, data) -> None:
    p = _one(_catalog(tmp_path, files={"packages.yaml": data}))
    assert (p.file, p.field) == ("packages.yaml", "file") and p.line
    assert "UTF-8" in p.message


def test_a_latin1_csv_names_the_line_of_the_bad_byte(tmp_path) -> None:
    text = (EXAMPLE_CATALOG / "identities.csv").read_bytes().replace(b"Henry Wilson",
                                                                     b"Henr\xe9 Wilson")
    p = _one(_catalog(tmp_path, files={"identities.csv": text}))
    assert (p.file, p.line, p.field) == ("identities.csv", 2, "file")
    assert "not UTF-8" in p.message


def test_file_size_caps_are_configurable(tmp_path, monkeypatch) -> None:
    root = _catalog(tmp_path)
    p = _one(root, limits=Limits(csv_bytes=10_000))
    assert (p.file, p.field) == ("identities.csv", "file") and "larger than" in p.message
    monkeypatch.setenv("WAVEKIT_MAX_YAML_MB", "0.001")
    p = _one(root)
    assert (p.file, p.field) == ("packages.yaml", "file") and "1,048 bytes allowed" in p.message
    monkeypatch.setenv("WAVEKIT_MAX_YAML_MB", "lots")
    p = _one(root)
    assert (p.file, p.field) == ("environment", "limits")
    assert "WAVEKIT_MAX_YAML_MB" in p.message


def test_a_row_with_too_many_fields_is_one_problem(tmp_path) -> None:
    text = (EXAMPLE_CATALOG / "identities.csv").read_text().replace(
        "hwilson,Henry Wilson,", "hwilson,Wilson, Henry,", 1)
    p = _one(_catalog(tmp_path, files={"identities.csv": text}))
    assert (p.file, p.line, p.field) == ("identities.csv", 2, "row")
    assert p.message == "has 12 fields; the header has 11"


def test_a_control_character_in_a_cell(tmp_path) -> None:
    text = (EXAMPLE_CATALOG / "entitlements.csv").read_text().replace(
        "GL journal posting", "GL journal\u202e posting", 1)
    p = _one(_catalog(tmp_path, files={"entitlements.csv": text}))
    assert (p.file, p.line, p.field) == ("entitlements.csv", 2, "name")
    assert "bidirectional" in p.message


def test_csv_lines_count_blank_lines_and_quoted_line_breaks(tmp_path) -> None:
    text = (EXAMPLE_CATALOG / "memberships.csv").read_text()
    head, first, rest = text.split("\n", 2)
    text = f'{head}\n\n"{first.split(",")[0]}",achen\n{rest}finance-month-end-operator,ghost\n'
    root = _catalog(tmp_path, files={"memberships.csv": text})
    p = _one(root)
    assert (p.file, p.field) == ("memberships.csv", "identity")
    assert p.line == _line(root, "ghost", "memberships.csv")


# ------------------------------------------------------------------ packages.yaml as YAML


def test_a_yaml_indentation_error_is_one_line_with_column(tmp_path) -> None:
    root = _catalog(tmp_path, ("    risk: medium\n    wave: 2", "    risk: medium\n     wave: 2"))
    p = _one(root)
    assert (p.file, p.line, p.field) == ("packages.yaml", _line(root, "     wave: 2"), "yaml")
    assert p.message.startswith(f"line {p.line}, column ")
    assert "\n" not in p.message and "^" not in p.message  # not pyyaml's dump


def test_duplicate_yaml_keys_are_reported_not_last_wins(tmp_path) -> None:
    root = _catalog(tmp_path, (FIN_HEAD, FIN_HEAD + "    risk: High\n"))
    p = _one(root)
    assert (p.file, p.line, p.field) == ("packages.yaml", _line(root, "risk: High"),
                                         f"{FIN}.risk")
    assert p.message == f"duplicate key 'risk' (first at line {p.line - 4})"


def test_an_alias_bomb_is_refused_quickly_and_small(tmp_path) -> None:
    # Each level doubles: 2**40 nodes if expanded. Refused by the alias count, and with fewer
    # aliases (25 levels, 50 aliases) by the expansion bound.
    for levels, reason in ((40, "more than 50 aliases"), (25, "aliases expand")):
        bomb = "a0: &a0 [x, x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n"
                                            for i in range(1, levels))
        root = _catalog(tmp_path / str(levels), files={"packages.yaml": bomb})
        tracemalloc.start()
        started = time.perf_counter()
        p = _one(root)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (p.file, p.field) == ("packages.yaml", "yaml") and p.line
        assert reason in p.message
        assert elapsed < 10 and peak < 100 * 2**20, (elapsed, peak)


@pytest.mark.parametrize(("text", "reason"), [
    ("packages: &p [*p]\n", "recursive"),
    ("packages: !!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
    ("waves: [{number: " + "9" * 5000 + "}]\n", "more than 4,300 digits"),
    ("packages:\n  - key: a\n---\npackages: []\n", "but found another document"),
    ("packages: " + "[" * 60 + "]" * 60 + "\n", "nested more than 50 levels"),
])
def test_yaml_that_cannot_be_used_is_one_problem(tmp_path, text, reason) -> None:
    p = _one(_catalog(tmp_path, files={"packages.yaml": text}))
    assert (p.file, p.field) == ("packages.yaml", "yaml") and p.line
    assert reason in p.message


# ------------------------------------------------------------------ the schema


CASES = [
    # (edits, field, text on the reported line, words in the message)
    ([("    window_end: 2026-05-06", "    window_end: next tuesday")],
     "waves[2].window_end", "next tuesday", "is not a date"),
    ([("    window_start: 2026-04-08", "    window_start: 12")],
     "waves[1].window_start", "window_start: 12", "12 is not a date"),
    ([("  - key: request-and-master", "  - key: post-and-pay")],
     "sod_rules[post-and-pay].key", "- key: post-and-pay", "duplicate rule key 'post-and-pay'"),
    ([(FOCUS, FOCUS + "    health: {acces_drift: {threshold: 0.1}}\n")],
     f"{FIN}.health", "acces_drift", "unknown health check 'acces_drift' (did you mean "
     "'access_drift'?"),
    ([(FOCUS, FOCUS + "    health:\n      ticket_noise: {threshold: high}\n")],
     f"{FIN}.health.ticket_noise.threshold", "threshold: high", "'high' is not a number"),
    ([(FOCUS, FOCUS + "    health: {ticket_noise: {threshold: .nan}}\n")],
     f"{FIN}.health.ticket_noise.threshold", ".nan", "not a finite number"),
    ([(FOCUS, FOCUS + "    health:\n      access_drift: {interval_hours: 0}\n")],
     f"{FIN}.health.access_drift.interval_hours", "interval_hours: 0", "0 is out of range"),
    ([(FOCUS, FOCUS + "    health:\n      access_drift: {interval_hours: 400}\n")],
     f"{FIN}.health.access_drift.interval_hours", "interval_hours: 400",
     "longer than the watch window (14 days = 336 hours)"),
    ([(FOCUS, FOCUS + "    health:\n      adoption: {failure_limit: -1}\n")],
     f"{FIN}.health.adoption.failure_limit", "failure_limit: -1", "-1 is out of range"),
    ([(FOCUS, FOCUS + "    health:\n      adoption: {bound: above}\n")],
     f"{FIN}.health.adoption.bound", "bound: above", "not one of min, max"),
    ([(FIN_HEAD, FIN_HEAD.replace("watch_days: 14", "watch_days: 1000000000"))],
     f"{FIN}.watch_days", "watch_days: 1000000000", "out of range"),
    ([(FIN_HEAD, FIN_HEAD.replace("wave: 1", "wave: " + "1" + "0" * 29))],
     f"{FIN}.wave", "wave: 1000", "out of range"),
    ([(FIN_HEAD, FIN_HEAD.replace("wave: 1", "wave: 1.0"))],
     f"{FIN}.wave", "wave: 1.0", "is not a wave number"),
    ([(FIN_HEAD, FIN_HEAD.replace("2026-04-08", "2026-13-45"))],
     f"{FIN}.release_date", "2026-13-45", "'2026-13-45' is not a valid date"),
    ([(FIN_HEAD, FIN_HEAD.replace("2026-04-08", "1900-04-08"))],
     f"{FIN}.release_date", "1900-04-08", "out of range"),
    ([("removes: [fin-legacy-close-report, fin-legacy-gl-extract]",
       "removes: [fin-legacy-close-report, fin-close-dashboard]")],
     f"{FIN}.removes", "removes:", "'fin-close-dashboard' is both granted (entitlements) and "
     "removed"),
    ([("    state: release_ready", "    state: watching")],
     f"{FIN}.state", "state: watching", "'watching' is a state wavekit sets"),
    ([("    rollback_only: true", '    rollback_only: "no"')],
     "packages[warehouse-inventory-poster].rollback_only", 'rollback_only: "no"',
     "'no' is text, not true or false"),
    ([(FIN_HEAD, FIN_HEAD + "    depends_on: [service-desk-resolver]\n")],
     f"{FIN}.depends_on", "depends_on: [service-desk-resolver]",
     "depends on 'service-desk-resolver' of wave 2, released after this package's wave 1"),
    ([(FIN_HEAD, FIN_HEAD + "    depends_on: [warehouse-inventory-poster]\n")],
     f"{FIN}.depends_on", "depends_on: [warehouse-inventory-poster]", "which is in no wave"),
    ([(FIN_HEAD, FIN_HEAD + "    watchdays: 3\n")],
     FIN, "watchdays: 3", "unknown field 'watchdays' (did you mean 'watch_days'?)"),
    ([("    name: Finance Month-End Operator", "    name: 2026")],
     f"{FIN}.name", "name: 2026", "2026 is a number, not text"),
    ([("owner: {name: Finance Shared Services, slack_id: UFINOWNER1,",
       "owner: {name: Finance Shared Services, slack_id: ufin owner,")],
     f"{FIN}.owner.slack_id", "ufin owner", "is not a valid Slack id"),
    ([("    guards: [mfa, session_timeout]", "    guards: [mfa, mfa; rm -rf]")],
     f"{FIN}.guards", "mfa; rm -rf", "is not a valid guard name"),
    ([("fin-fx-revaluation, fin-close-checklist", "fin-fx-revaluation, fin-fx-revaluation")],
     f"{FIN}.entitlements", "fin-fx-revaluation, fin-fx-revaluation",
     "'fin-fx-revaluation' is listed twice"),
]


@pytest.mark.parametrize(("edits", "field", "text", "words"), CASES,
                         ids=[c[1] + ":" + c[3][:30] for c in CASES])
def test_one_mistake_is_one_problem_at_its_line(tmp_path, edits, field, text, words) -> None:
    root = _catalog(tmp_path, *edits)
    p = _one(root)
    assert (p.file, p.field) == ("packages.yaml", field), str(p)
    assert p.line == _line(root, text), str(p)
    assert words in p.message, str(p)


def test_a_dependency_cycle_names_the_package_that_closes_it(tmp_path) -> None:
    root = _catalog(tmp_path,
                    (FIN_HEAD, FIN_HEAD + "    depends_on: [hr-case-intake-specialist]\n"),
                    ("    watch_days: 7\n", "    watch_days: 7\n"
                     "    depends_on: [finance-month-end-operator]\n"))
    p = _one(root)
    hr = "packages[hr-case-intake-specialist]"
    assert (p.file, p.field) == ("packages.yaml", f"{hr}.depends_on")
    assert p.line == _line(root, "    watch_days: 7") + 1
    assert p.message == ("dependency cycle: finance-month-end-operator -> "
                         "hr-case-intake-specialist -> finance-month-end-operator")


@pytest.mark.parametrize("key", ["x/../../../outside/EVIL", "finance\\nmonth", "fin\\u202eance",
                                 "Finance", "-finance", "a" * 64])
def test_package_keys_are_plain_and_a_bad_one_is_one_problem(tmp_path, key) -> None:
    # The catalog uses the bad key consistently (depends_on, memberships): one problem. A key
    # with a control character in memberships.csv would be a problem of that file as well.
    written = key.encode().decode("unicode_escape")
    rows = (EXAMPLE_CATALOG / "memberships.csv").read_text().splitlines(keepends=True)
    members = "".join(r.replace("finance-month-end-operator", f'"{written}"') for r in rows
                      if written.isprintable() or "finance-month-end-operator" not in r)
    root = _catalog(tmp_path / "t", ("  - key: finance-month-end-operator", f'  - key: "{key}"'),
                    ("    depends_on: [finance-month-end-operator]",
                     f'    depends_on: ["{key}"]'),
                    files={"memberships.csv": members})
    p = _one(root)
    assert (p.file, p.field) == ("packages.yaml", "packages[#1].key")
    assert p.line == _line(root, f'  - key: "{key}"')
    assert "is not a valid package key" in p.message


def test_an_entitlement_key_with_a_path_is_refused(tmp_path) -> None:
    text = (EXAMPLE_CATALOG / "entitlements.csv").read_text().replace(
        "fin-gl-period-close,", "../fin-gl-period-close,", 1)
    root = _catalog(tmp_path, files={"entitlements.csv": text})
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    first = err.value.problems[0]
    assert (first.file, first.line, first.field) == ("entitlements.csv", 3, "key")
    assert "not a valid entitlement key" in first.message


def test_a_yaml_error_has_no_follow_on_rows(tmp_path) -> None:
    # memberships.csv names packages; with packages.yaml unreadable they are not "unknown".
    root = _catalog(tmp_path, ("  - key: post-and-pay\n", "  - key: post-and-pay\n  bad\n"))
    p = _one(root)
    assert (p.file, p.field) == ("packages.yaml", "yaml")


def test_the_example_catalog_and_a_generated_one_stay_valid(tmp_path) -> None:
    from wavekit.examples.synth import generate_catalog

    assert len(load_catalog(EXAMPLE_CATALOG).packages) == 5
    generate_catalog(tmp_path, identities=500, packages=30, waves=3, members_per_package=(5, 40))
    assert len(load_catalog(tmp_path).packages) == 30


# ------------------------------------------------------------------ nothing is written


@pytest.mark.parametrize("edits", [
    [("  - key: request-and-master", "  - key: post-and-pay")],
    [("    window_end: 2026-05-06", "    window_end: next tuesday")],
    [(FIN_HEAD, FIN_HEAD.replace("wave: 1", "wave: " + "1" + "0" * 29))],
])
def test_wavekit_load_of_a_bad_catalog_writes_nothing(tmp_path, edits) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    runner = CliRunner()
    assert runner.invoke(app, ["load", str(EXAMPLE_CATALOG), "--database-url", url]
                         ).exit_code == 0
    with session_scope(url) as s:
        before = [s.exec(select(func.count()).select_from(t)).one()
                  for t in (Identity, RolePackage, AuditEvent)]
    result = runner.invoke(app, ["load", str(_catalog(tmp_path, *edits)), "--database-url", url],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert "1 problem(s); nothing was written" in result.output
    with session_scope(url) as s:
        after = [s.exec(select(func.count()).select_from(t)).one()
                 for t in (Identity, RolePackage, AuditEvent)]
    assert after == before


def test_report_file_names_cannot_leave_their_directory(tmp_path) -> None:
    from wavekit.adapters.store.models import Release
    from wavekit.present.reports import _inside, rollback_filename

    name = rollback_filename(Release(id=7, package_key="x/../../../outside/EVIL"))
    assert "/" not in name and name.endswith("-7.md")
    assert _inside(tmp_path, name).parent == tmp_path
    with pytest.raises(ValueError, match="leaves"):
        _inside(tmp_path, "../../outside/EVIL.md")
    assert rollback_filename(Release(id=1, package_key="finance-month-end-operator")) == \
        "rollback-finance-month-end-operator-1.md"
    from wavekit.adapters.store.models import DrillRun
    from wavekit.present.drill_report import drill_filename

    for key in ("x/../../../outside/EVIL", "..", "a\nb", "fin\u202eance", "/etc/passwd"):
        for name in (drill_filename(DrillRun(id=3, package_key=key)),
                     rollback_filename(Release(id=3, package_key=key))):
            assert "/" not in name and name.isprintable() and ".." not in name.strip("."), name
            assert _inside(tmp_path, name).parent == tmp_path
    assert drill_filename(DrillRun(id=2, package_key="service-desk-resolver")) == \
        "drill-service-desk-resolver-2.md"


# ------------------------------------------------------------------ package-wide health settings


def test_the_documented_package_wide_health_settings_are_accepted(tmp_path) -> None:
    from wavekit.adapters.catalog import write_catalog
    from wavekit.adapters.store.packages import load_package_view
    from wavekit.domain.containment import containment_scope

    root = _catalog(tmp_path, (FOCUS, FOCUS + "    health: {containment: package, "
                                             "rollback_on_anomaly: true, "
                                             "ticket_noise: {threshold: 3}}\n"))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with session_scope(url) as s:
        write_catalog(s, load_catalog(root), source=str(root))
    with session_scope(url) as s:
        health = load_package_view(s, "finance-month-end-operator").health
    assert health == {"containment": "package", "rollback_on_anomaly": True,
                      "ticket_noise": {"threshold": 3}}
    assert containment_scope(health) == "package"


@pytest.mark.parametrize(("setting", "said"), [
    ("containment: all", "health.containment: 'all' is not one of identities, package"),
    ('rollback_on_anomaly: "no"', "health.rollback_on_anomaly: 'no' is not true or false"),
])
def test_a_wrong_package_wide_health_setting_is_one_problem(tmp_path, setting: str,
                                                            said: str) -> None:
    root = _catalog(tmp_path, (FOCUS, FOCUS + f"    health: {{{setting}}}\n"))
    p = _one(root)
    assert (p.file, p.line) == ("packages.yaml", _line(root, "    health: {"))
    assert p.field.startswith(FIN) and said in p.message


# ------------------------------------------------------------------ four eyes


def test_four_eyes_approvals_come_from_the_catalog(tmp_path) -> None:
    from wavekit.adapters.catalog import write_catalog
    from wavekit.adapters.store.engine import reset_store
    from wavekit.adapters.store.packages import load_package_view

    root = _catalog(tmp_path, (FIN_HEAD, FIN_HEAD + (
        "    approvals:\n      required: 2\n      from: [owner, security]\n"
        "      security: [{name: Sam Reyes, email: sam@example.com}]\n")))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    reset_store(url)
    with session_scope(url) as s:
        write_catalog(s, load_catalog(root), source=str(root))
    with session_scope(url) as s:
        fin = load_package_view(s, "finance-month-end-operator")
        hr = load_package_view(s, "hr-case-intake-specialist")
    # The delegate is not among `from`; the security approver, reached by e-mail, is.
    assert fin.approvers == {"UFINOWNER1", "sam@example.com"}
    assert fin.required_approvals == 2
    assert hr.required_approvals == 1 and hr.approvers == {"UHROWNER01", "UHRDELEG01"}


def test_high_risk_defaults_to_two_approvers() -> None:
    from wavekit.domain.packages import PackageView
    from wavekit.domain.states import PackageState

    assert PackageView("k", "n", PackageState.SCHEDULED, risk="high").required_approvals == 2
    assert PackageView("k", "n", PackageState.SCHEDULED, risk="medium").required_approvals == 1


def test_an_unknown_approver_source_is_one_problem(tmp_path) -> None:
    root = _catalog(tmp_path, (FIN_HEAD, FIN_HEAD + "    approvals: {from: [boss]}\n"))
    problem = _one(root)
    assert "approvals" in str(problem) and "packages.yaml" in str(problem)
