"""Reports: wave and rollback Markdown, the dashboard HTML, and that no secret ever leaks."""

from __future__ import annotations

import html
import itertools
import re
import sqlite3
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt
from sqlmodel import select

from wavekit.adapters.catalog import write_catalog
from wavekit.adapters.settings import masked_url
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import (
    Approval,
    BundleGrant,
    HealthCheckResult,
    MaintenanceTask,
    PackageMember,
    Release,
    RolePackage,
)
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.grants import grant_set
from wavekit.domain.planning import plan_package, prove_restore
from wavekit.domain.states import PackageState as S
from wavekit.examples import SANDBOX_SEED
from wavekit.present import reports
from wavekit.workflow.failures import redact

T0 = datetime(2026, 4, 8, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Scenario:
    """What `populate` wrote: release ids and the numbers reports must repeat."""

    finance_release: int
    hr_release: int
    desk_release: int
    procurement_release: int
    hr_prior: int
    hr_touched: int
    finance_adds: int
    finance_removes: int
    hr_retirements: int
    as_of: datetime
    url: str = ""


def _seed_grants():
    df = pd.read_csv(SANDBOX_SEED, dtype=str)
    return grant_set(zip(df["identity"], df["entitlement"], strict=True))


def _stage(s, key: str, wave: int, started: datetime):
    """A release with its plan and prior bundle, as the stage step writes them."""
    view = load_package_view(s, key)
    plan = plan_package(view, frozenset(g for g in _seed_grants() if g.entitlement in view.scope))
    rel = Release(package_key=key, wave=wave, started_at=started, triggered_by="release-manager",
                  **plan.counts())
    s.add(rel)
    s.flush()
    for kind, grants in (("prior", plan.prior), ("add", plan.adds), ("remove", plan.removes),
                         ("retire", plan.retirements)):
        s.add_all(BundleGrant(release_id=rel.id, kind=kind, identity=g.identity,
                              entitlement=g.entitlement) for g in grants)
    audit.record(s, "plan_staged", package_key=key, wave=wave, release_id=rel.id, at=started,
                 **plan.counts())
    return rel, plan


def _approve(s, rel: Release, approver: str, at: datetime) -> None:
    audit.record(s, "approval_requested", package_key=rel.package_key, wave=rel.wave,
                 release_id=rel.id, at=at - timedelta(hours=2))
    audit.record(s, "approval_decided", actor=approver, package_key=rel.package_key,
                 wave=rel.wave, release_id=rel.id, at=at, decision="approve", approver=approver,
                 comment="ok for close | cycle")
    rel.approved_at, rel.approved_by = at, approver


def _gates(s, rel: Release, at: datetime, failing: dict[str, str] | None = None) -> None:
    failing = failing or {}
    names = ["owner_named", "fallback_defined", "rollback_drill", "dependencies_stable",
             "sod_conflicts"]
    audit.record(s, "gates_checked", package_key=rel.package_key, wave=rel.wave,
                 release_id=rel.id, at=at, results=[
                     {"name": n, "passed": n not in failing,
                      "reason": failing.get(n, f"{n} satisfied")} for n in names])


def _deploy(s, rel: Release, plan, at: datetime, watch_days: int) -> None:
    audit.record(s, "deploy_batch", package_key=rel.package_key, release_id=rel.id, at=at,
                 index=0, added=len(plan.adds), removed=0)
    audit.record(s, "deploy_batch", package_key=rel.package_key, release_id=rel.id, at=at,
                 index=1, added=0, removed=len(plan.removes))
    audit.record(s, "deployed", package_key=rel.package_key, wave=rel.wave, release_id=rel.id,
                 at=at, added=len(plan.adds), removed=len(plan.removes))
    rel.deploy_started_at, rel.deployed_at = at - timedelta(minutes=30), at
    rel.watch_ends_at = at + watch_days * DAY
    rel.applied_batches = 2


def _check(s, rel: Release, name: str, due: datetime, value: float, threshold: float,
           bound: str) -> str:
    ok = value >= threshold if bound == "min" else value <= threshold
    verdict = "passed" if ok else "failed"
    s.add(HealthCheckResult(release_id=rel.id, package_key=rel.package_key, check_name=name,
                            due_at=due, measured_at=due + timedelta(minutes=1), value=value,
                            threshold=threshold, verdict=verdict,
                            detail="" if ok else f"{name} {value} breaches {threshold}"))
    audit.record(s, "health_checked", package_key=rel.package_key, release_id=rel.id,
                 at=due + timedelta(minutes=1), check=name, value=value, threshold=threshold,
                 verdict=verdict)
    return verdict


def populate(url: str) -> Scenario:
    """Write a deployed package, a rolled-back one, a held one and a pending approval."""
    with session_scope(url) as s:
        pkgs = {p.key: p for p in s.exec(select(RolePackage))}

        # Finance: approved, gates passed, deployed, 10 days into a 14-day watch, healthy.
        fin = pkgs["finance-month-end-operator"]
        rel_f, plan_f = _stage(s, fin.key, 1, T0 - 3 * timedelta(hours=1))
        transition(s, fin, S.AWAITING_HANDOFF, "asked the owner", release_id=rel_f.id,
                   at=T0 - 3 * timedelta(hours=1))
        _approve(s, rel_f, "UFINDELEG1", T0 - timedelta(hours=1))
        _gates(s, rel_f, T0 - timedelta(minutes=50))
        transition(s, fin, S.DEPLOYING, "approved", release_id=rel_f.id,
                   at=T0 - timedelta(minutes=30))
        _deploy(s, rel_f, plan_f, T0, fin.watch_days)
        transition(s, fin, S.WATCHING, "watching for 14 days", release_id=rel_f.id, at=T0)
        for day in range(0, 11):
            due = T0 + day * DAY
            _check(s, rel_f, "access_drift", due, 0.01 * (day % 3), 0.05, "max")
            if day >= 3:
                _check(s, rel_f, "adoption", due, 0.40 + 0.04 * day, 0.5, "min")
        # adoption below 0.5 on day 3 and 4 (0.52 at day 3? 0.40+0.12) — see test for counts.

        # HR: deployed two hours later, access drift breaks on day 2, rolled back, verified.
        hr = pkgs["hr-case-intake-specialist"]
        t_hr = T0 + timedelta(hours=2)
        rel_h, plan_h = _stage(s, hr.key, 1, t_hr - 3 * timedelta(hours=1))
        transition(s, hr, S.AWAITING_HANDOFF, "asked the owner", release_id=rel_h.id,
                   at=t_hr - 3 * timedelta(hours=1))
        _approve(s, rel_h, "UHROWNER01", t_hr - timedelta(hours=1))
        _gates(s, rel_h, t_hr - timedelta(minutes=50))
        transition(s, hr, S.DEPLOYING, "approved", release_id=rel_h.id,
                   at=t_hr - timedelta(minutes=30))
        _deploy(s, rel_h, plan_h, t_hr, hr.watch_days)
        audit.record(s, "legacy_retired", package_key=hr.key, release_id=rel_h.id, at=t_hr,
                     count=len(plan_h.retirements))
        rel_h.legacy_retired_at = t_hr
        transition(s, hr, S.WATCHING, "watching for 7 days", release_id=rel_h.id, at=t_hr)
        for day in range(0, 3):
            verdict = _check(s, rel_h, "access_drift", t_hr + day * DAY,
                             0.12 if day == 2 else 0.0, 0.05, "max")
        assert verdict == "failed"
        fail_at = t_hr + 2 * DAY + timedelta(minutes=1)
        reason = "access_drift 0.12 breaches 0.05"
        transition(s, hr, S.ROLLING_BACK, reason, release_id=rel_h.id, at=fail_at)
        audit.record(s, "rollback_started", package_key=hr.key, wave=1, release_id=rel_h.id,
                     at=fail_at + timedelta(minutes=1), reason=reason)
        proof = prove_restore(plan_h.prior, plan_h.touched, plan_h.prior)
        restored_at = fail_at + timedelta(minutes=16)
        audit.record(s, "rollback_verified", package_key=hr.key, wave=1, release_id=rel_h.id,
                     at=restored_at, prior_count=proof.prior_count,
                     readback_count=proof.readback_count, equal=proof.equal,
                     touched=len(plan_h.touched), touched_restored=proof.touched_restored,
                     re_granted=len(plan_h.touched & plan_h.prior),
                     removed=len(plan_h.touched - plan_h.prior), mismatched=[],
                     drift_outside=[])
        rel_h.rolled_back_at, rel_h.rollback_reason, rel_h.closed = restored_at, reason, True
        transition(s, hr, S.ROLLED_BACK, reason, release_id=rel_h.id, at=restored_at)

        # Service desk: the rollback drill gate fails, the package is held.
        desk = pkgs["service-desk-resolver"]
        rel_d, _ = _stage(s, desk.key, 2, T0 + 3 * DAY)
        _gates(s, rel_d, T0 + 3 * DAY, {"rollback_drill": "medium risk needs a signed drill"})
        transition(s, desk, S.HELD, "rollback_drill: medium risk needs a signed drill",
                   release_id=rel_d.id, at=T0 + 3 * DAY)

        # Procurement: waiting for its owner.
        proc = pkgs["procurement-request-coordinator"]
        rel_p, _ = _stage(s, proc.key, 2, T0 + 4 * DAY)
        transition(s, proc, S.AWAITING_HANDOFF, "asked the owner", release_id=rel_p.id,
                   at=T0 + 4 * DAY)
        s.add(Approval(release_id=rel_p.id, package_key=proc.key, requested_at=T0 + 4 * DAY,
                       deadline=T0 + 6 * DAY))
        audit.record(s, "approval_requested", package_key=proc.key, wave=2,
                     release_id=rel_p.id, at=T0 + 4 * DAY)

        s.add(MaintenanceTask(dedupe_key="hr:tuning", package_key=hr.key, kind="tuning",
                              reason="Re-scope archive access after the rollback",
                              opened_at=restored_at))
        s.add(MaintenanceTask(dedupe_key="fin:renewal", package_key=fin.key,
                              kind="ownership_renewal", reason="closed one",
                              opened_at=T0, closed_at=T0 + DAY, close_reason="renewed"))
        s.flush()
        return Scenario(
            finance_release=rel_f.id, hr_release=rel_h.id, desk_release=rel_d.id,
            procurement_release=rel_p.id, hr_prior=len(plan_h.prior),
            hr_touched=len(plan_h.touched), finance_adds=len(plan_f.adds),
            finance_removes=len(plan_f.removes), hr_retirements=len(plan_h.retirements),
            as_of=T0 + 10 * DAY + timedelta(hours=1),
        )


@pytest.fixture(scope="module")
def _populated(tmp_path_factory, example_catalog) -> tuple[Path, Scenario]:
    """Build the scenario once per module; tests get their own copy of the file."""
    path = tmp_path_factory.mktemp("populated") / "wavekit.db"
    url = f"sqlite:///{path}"
    with session_scope(url) as s:
        write_catalog(s, example_catalog)
    return path, populate(url)


@pytest.fixture
def scenario(_populated, tmp_path: Path) -> Scenario:
    """A store holding the example catalog and `populate`'s releases (a private copy)."""
    src_path, built = _populated
    dst_path = tmp_path / "populated.db"
    with sqlite3.connect(src_path) as src, sqlite3.connect(dst_path) as dst:
        src.backup(dst)
    return replace(built, url=f"sqlite:///{dst_path}")


# --------------------------------------------------------------------------- helpers

_md = MarkdownIt("commonmark").enable("table")


def md_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of cell texts (header row first), parsed by markdown-it."""
    tables, rows, row, cell = [], None, None, None
    for tok in _md.parse(text):
        if tok.type == "table_open":
            rows = []
        elif tok.type == "table_close":
            tables.append(rows)
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            rows.append(row)
        elif tok.type in ("th_open", "td_open"):
            cell = ""
        elif tok.type == "inline" and row is not None and cell is not None:
            cell = tok.content
        elif tok.type in ("th_close", "td_close"):
            row.append(cell)
            cell = None
    return tables


def headings(text: str) -> list[tuple[int, str]]:
    toks = _md.parse(text)
    return [(int(t.tag[1]), toks[i + 1].content) for i, t in enumerate(toks)
            if t.type == "heading_open"]


def section(text: str, title: str) -> str:
    """The Markdown under the `## title` heading, up to the next heading of that level."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"no section {title!r}"
    return m.group(1)


def table_blocks(text: str) -> list[list[str]]:
    """Runs of consecutive lines starting with a pipe."""
    blocks: list[list[str]] = []
    prev = False
    for ln in text.splitlines():
        if ln.startswith("|"):
            if not prev:
                blocks.append([])
            blocks[-1].append(ln)
        prev = ln.startswith("|")
    return blocks


def assert_well_formed(text: str) -> None:
    """One H1 first, no skipped heading levels, every pipe block a table of even width."""
    hs = headings(text)
    assert hs and hs[0][0] == 1 and [h for h in hs if h[0] == 1] == hs[:1]
    for (a, _), (b, _) in itertools.pairwise(hs):
        assert b <= a + 1, f"heading level jumps {a}->{b}"
    blocks = table_blocks(text)
    assert len(md_tables(text)) == len(blocks), "a pipe block did not parse as a table"
    for block in blocks:
        assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", block[1]), block[:2]
        widths = {len(re.findall(r"(?<!\\)\|", ln)) for ln in block}
        assert len(widths) == 1, f"uneven table: {block}"


class ByTestId(HTMLParser):
    """Text inside each element carrying a data-testid, by testid (a list per repeated id)."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "source", "wbr"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: dict[str, list[str]] = {}
        self.attrs_of: dict[str, list[dict[str, str]]] = {}
        self._stack: list[tuple[str, str | None, list[str]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        tid = a.get("data-testid")
        if tid:
            self.attrs_of.setdefault(tid, []).append(a)
        if tag not in self.VOID:
            self._stack.append((tag, tid, []))

    def handle_startendtag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tid := a.get("data-testid"):
            self.attrs_of.setdefault(tid, []).append(a)
            self.found.setdefault(tid, []).append("")

    def handle_endtag(self, tag):
        while self._stack:
            open_tag, tid, buf = self._stack.pop()
            text = " ".join("".join(buf).split())
            if tid:
                self.found.setdefault(tid, []).append(text)
            if self._stack:
                self._stack[-1][2].append(" " + "".join(buf) + " ")
            if open_tag == tag:
                break

    def handle_data(self, data):
        if self._stack:
            self._stack[-1][2].append(data)

    def one(self, tid: str) -> str:
        values = self.found.get(tid, [])
        assert len(values) == 1, f"{tid}: {values}"
        return values[0]


# --------------------------------------------------------------------------- wave report


def test_wave_report_repeats_the_plan_approval_deploy_and_health_numbers(scenario: Scenario):
    text = reports.render_wave_report(scenario.url, 1, scenario.as_of)
    assert_well_formed(text)
    assert headings(text)[0] == (1, "Wave 1 report")

    summary = md_tables(section(text, "Summary"))[0]
    header, *rows = summary
    assert header[:6] == ["Package", "Release", "Risk", "Adds", "Removes", "Retirements"]
    by_name = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    fin, hr = by_name["Finance Month-End Operator"], by_name["HR Case Intake Specialist"]
    assert (fin["Adds"], fin["Removes"], fin["Outcome"]) == (
        str(scenario.finance_adds), str(scenario.finance_removes), "Watching")
    assert (hr["Retirements"], hr["Outcome"]) == (str(scenario.hr_retirements), "Rolled back")
    assert fin["Approved by"] == "UFINDELEG1"

    fin_text = section(text, "Finance Month-End Operator · release 1")
    tables = md_tables(fin_text)
    plan = {r[0]: r[1] for r in tables[0][1:]}
    assert plan == {"Add": str(scenario.finance_adds), "Remove at launch":
                    str(scenario.finance_removes), "Retire (legacy)": "0"}
    approval = tables[1]
    assert approval[-1][1:4] == ["approval decided", "UFINDELEG1", "approve"]
    assert approval[-1][4] == "ok for close | cycle"  # the pipe did not split the cell
    gates = tables[2]
    assert len(gates) == 6 and all(r[1] == "✓ passed" for r in gates[1:])
    assert (f"in 2 batch(es): {scenario.finance_adds} grants added, "
            f"{scenario.finance_removes} removed") in fin_text
    checks = {r[0]: r for r in tables[3][1:]}
    assert checks["access_drift"][1:4] == ["11", "11", "0"]  # days 0..10, all passed
    assert checks["adoption"][1:4] == ["8", "8", "0"]  # from day 3 on
    assert "19 check runs: 19 passed, 0 failed" in fin_text
    timeline = tables[4]
    assert timeline[0] == ["Day (UTC)", "adoption", "access_drift"] and len(timeline) == 1 + 11
    assert timeline[4] == ["2026-04-11", "0.52 ✓ passed", "0 ✓ passed"]  # day 3

    hr_text = section(text, "HR Case Intake Specialist · release 2")
    assert f"Legacy grants retired: {scenario.hr_retirements}" in hr_text
    assert "3 check runs: 2 passed, 1 failed" in hr_text
    assert "**Rolled back** 2026-04-10 11:17 UTC: access_drift 0.12 breaches 0.05" in hr_text
    assert f"rollback-hr-case-intake-specialist-{scenario.hr_release}.md" in hr_text


def test_wave_report_shows_a_held_package_with_its_failed_gate(scenario: Scenario):
    text = reports.render_wave_report(scenario.url, 2, scenario.as_of)
    assert_well_formed(text)
    desk = section(text, f"Service Desk Resolver · release {scenario.desk_release}")
    gates = {r[0]: r for r in md_tables(desk)[1][1:]}  # no approval table: plan, gates, ...
    assert gates["rollback_drill"][1:] == ["✗ failed", "medium risk needs a signed drill"]
    assert "Not deployed." in desk and "No health checks have run." in desk
    assert "**Held**: rollback_drill: medium risk needs a signed drill." in desk
    proc = section(text, f"Procurement Request Coordinator · release "
                         f"{scenario.procurement_release}")
    assert "**Awaiting handoff**" in proc and "Gates were not checked." in proc


def test_wave_report_for_a_wave_not_started_lists_nothing_released(loaded_store: str):
    text = reports.render_wave_report(loaded_store, 1)
    assert_well_formed(text)
    assert "No package of wave 1 has been released yet." in text
    assert "Finance Month-End Operator (Release ready)" in text


# --------------------------------------------------------------------------- rollback report


def test_rollback_report_ends_with_the_read_back_proof(scenario: Scenario):
    text = reports.render_rollback_report(scenario.url, scenario.hr_release)
    assert_well_formed(text)
    titles = [t for level, t in headings(text) if level == 2]
    assert titles == ["What", "Why", "When", "What was restored",
                      "Proof: target read back against the prior bundle"]
    proof = section(text, titles[-1])
    counts = {r[0]: r[1] for r in md_tables(proof)[0][1:]}
    n = str(scenario.hr_prior)
    assert counts == {"Prior bundle": n, "Read back from the target": n}
    assert f"**Equal: yes.** The target read back equals the prior bundle: {n} == {n}" in proof
    assert text.startswith("# Rollback: HR Case Intake Specialist")
    assert f"({n} == {n} grants)" in text.splitlines()[2]


def test_rollback_report_says_what_why_when_and_what_was_restored(scenario: Scenario):
    text = reports.render_rollback_report(scenario.url, scenario.hr_release)
    what = {r[0]: r[1] for r in md_tables(section(text, "What"))[0][1:]}
    assert what["Legacy grants the release retired"] == str(scenario.hr_retirements)
    assert what["Package state now"] == "Rolled back"
    why = section(text, "Why")
    assert "access_drift 0.12 breaches 0.05" in why
    failed = md_tables(why)[0]
    assert failed[1][1:4] == ["access_drift", "0.12", "0.05"]
    when = {r[0]: r[1] for r in md_tables(section(text, "When"))[0][1:]}
    assert when["Rollback started"] == "2026-04-10 11:02 UTC"
    assert when["Prior access restored"] == "2026-04-10 11:17 UTC"
    assert when["Time to restore"] == "15m"
    restored = section(text, "What was restored")
    per_ent = md_tables(restored)[0][1:]
    regranted = sum(int(r[1]) for r in per_ent)
    withdrawn = sum(int(r[2]) for r in per_ent)
    # Retired legacy grants were held before: rollback gives them back; the adds go away.
    assert regranted == scenario.hr_retirements
    assert regranted + withdrawn == scenario.hr_touched
    assert f"re-granted {regranted} that the release had removed or retired" in restored
    assert f"{regranted} grant(s) re-granted, {withdrawn} removed" in restored


def test_rollback_report_flags_a_read_back_that_differs(scenario: Scenario):
    with session_scope(scenario.url) as s:
        audit.record(s, "rollback_verified", package_key="hr-case-intake-specialist",
                     release_id=scenario.hr_release, at=scenario.as_of,
                     prior_count=scenario.hr_prior, readback_count=scenario.hr_prior - 1,
                     equal=False, mismatched=[["amartin", "hr-archive-export"]],
                     drift_outside=[])
    text = reports.render_rollback_report(scenario.url, scenario.hr_release)
    assert_well_formed(text)
    assert "NOT verified equal" in text.splitlines()[2]
    proof = section(text, "Proof: target read back against the prior bundle")
    counts = {r[0]: r[1] for r in md_tables(proof)[0][1:]}
    assert counts["Read back from the target"] == str(scenario.hr_prior - 1)
    assert "**Equal: NO.** 1 grant(s) the release touched differ" in proof
    assert "- amartin → hr-archive-export" in proof


def test_rollback_report_without_a_read_back_claims_nothing(scenario: Scenario):
    with session_scope(scenario.url) as s:
        audit.record(s, "rollback_started", package_key="service-desk-resolver",
                     release_id=scenario.desk_release, at=scenario.as_of,
                     reason="operator asked | <b>now</b>")
    text = reports.render_rollback_report(scenario.url, scenario.desk_release)
    assert_well_formed(text)
    assert "Rollback not verified yet" in text
    assert "**Not verified.**" in section(text, "Proof: target read back against the prior "
                                                "bundle")
    assert "operator asked \\| &lt;b&gt;now&lt;/b&gt;" in section(text, "Why")
    assert "<b>" not in text


def test_rollback_report_for_an_unknown_release_raises(loaded_store: str):
    with pytest.raises(KeyError):
        reports.render_rollback_report(loaded_store, 999)


# --------------------------------------------------------------------------- charts


def test_health_charts_place_points_across_the_watch_window(scenario: Scenario):
    with session_scope(scenario.url) as s:
        rows = list(s.exec(select(HealthCheckResult)
                           .where(HealthCheckResult.release_id == scenario.hr_release)))
        rel = s.get(Release, scenario.hr_release)
        start, end = reports.as_utc(rel.deployed_at), reports.as_utc(rel.watch_ends_at)
    charts = {c.key: c for c in reports.health_charts(rows, start, end,
                                                      [(start + DAY, "now", "now")])}
    assert list(charts) == ["health", "access_drift"]
    drift = charts["access_drift"]
    assert [p.verdict for p in drift.points] == ["passed", "passed", "failed"]
    xs = [p.x for p in drift.points]
    assert xs == sorted(xs) and xs[0] == pytest.approx(reports.PAD, abs=1)
    # Day 2 of a 7-day window sits 2/7 of the way across.
    assert xs[2] == pytest.approx(reports.PAD + reports.PLOT_W * (2 * 1440 + 1) / (7 * 1440),
                                  abs=0.5)
    # The failing value is drawn above (smaller y than) the threshold line.
    assert drift.points[2].y < drift.threshold_y < drift.points[0].y
    assert [p.value for p in charts["health"].points] == [1.0, 1.0, 0.0]
    assert drift.markers[0]["kind"] == "now"


# --------------------------------------------------------------------------- templates


def test_templates_directory_can_be_overridden_and_undefined_names_fail(
        tmp_path, monkeypatch, loaded_store: str):
    import shutil

    from jinja2 import UndefinedError

    shutil.copytree(reports.templates_dir(), tmp_path / "t")
    (tmp_path / "t" / "wave_report.md.j2").write_text("# Custom {{ wave }}\n")
    monkeypatch.setenv("WAVEKIT_TEMPLATES_DIR", str(tmp_path / "t"))
    assert reports.render_wave_report(loaded_store, 1) == "# Custom 1\n"
    (tmp_path / "t" / "wave_report.md.j2").write_text("# {{ no_such_name }}\n")
    reports.environment.cache_clear()
    with pytest.raises(UndefinedError):
        reports.render_wave_report(loaded_store, 1)
    reports.environment.cache_clear()


def test_the_store_url_is_shown_masked():
    shown = masked_url("postgresql://wavekit:pg-S3cret@db.internal:5432/wavekit")
    assert shown == "postgresql://wavekit:***@db.internal:5432/wavekit"
    assert masked_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert masked_url("postgresql://wavekit:pg-S3cret@db:bad-port/x") == "<unreadable URL>"


def test_one_redact_masks_urls_key_values_and_known_secrets():
    text = ('<p>postgresql://wavekit:pg-S3cret@db/w password=hunter22 Bearer abc.def '
            'and the token "s3cr&t-value"</p>')
    shown = redact(text, ['s3cr&t-value'], limit=None)
    assert "pg-S3cret" not in shown and "hunter22" not in shown and "abc.def" not in shown
    assert "s3cr&t-value" not in shown and "postgresql://wavekit:***@db/w" in shown
    assert redact(html.escape(text), ['s3cr&t-value'], limit=None).count("s3cr") == 0
    assert redact("x" * 400) == "x" * 299 + "…"  # failure messages stay one short line


# --------------------------------------------------------------------------- dashboard


def _kpis(url: str, as_of: datetime):
    from wavekit.present.kpis import compute_kpis

    with session_scope(url) as s:
        return compute_kpis(s, as_of)


def test_dashboard_shows_the_same_figures_as_compute_kpis(scenario: Scenario):
    html = reports.render_dashboard(scenario.url, scenario.as_of, review_cadence_days=30)
    ids = ByTestId(html)
    k = _kpis(scenario.url, scenario.as_of)
    # Wave 1 has nothing left to release; wave 2 holds the held desk and procurement.
    assert ids.one("kpi-wave-ready-label") == "Wave 2 ready" == f"Wave {k.wave_ready.wave} ready"
    # The figure is what is ready now, beside what is queued: "Wave 2 ready 2" can no longer
    # stand next to "0 of them release ready".
    assert ids.one("kpi-wave-ready-value") == f"{k.wave_ready.release_ready} of 2 queued"
    assert ids.one("kpi-wave-queued") == "of 2 queued" and k.wave_ready.count == 2
    terms = ids.found["kpi-definition-term"]
    assert terms[:2] == ["Wave ready", "Roles monitored"] and "Deploy confidence" in terms
    assert ids.one("kpi-roles-monitored-value") == "1" == str(k.roles_monitored)  # finance
    assert ids.one("kpi-maintenance-tasks-value") == "1" == str(k.maintenance_tasks_open)
    assert ids.one("kpi-coverage-health-value") == reports.fmt_pct(k.coverage_health)
    for action, n in k.action_counts.items():
        assert ids.one(f"action-count-{action.lower()}") == f"{action} {n}"
    assert ids.one("active-waves").split()[0] == str(len(k.active_waves))
    assert ids.one("median-deploy-time") == "3h"  # handed off 3 h before each deploy
    assert ids.one("fallback-tested") == "{}/{}".format(*k.fallback_tested)
    assert ids.one("review-cadence") == "30 days"


def test_dashboard_package_table_matches_the_store(scenario: Scenario):
    html = reports.render_dashboard(scenario.url, scenario.as_of)
    ids = ByTestId(html)
    with session_scope(scenario.url) as s:
        pkgs = {p.key: p for p in s.exec(select(RolePackage))}
        members = pd.DataFrame(s.exec(select(PackageMember.package_key)).all(),
                               columns=["key"])["key"].value_counts()
    keys = [a["data-package-key"] for a in ids.attrs_of["package-row"]]
    assert sorted(keys) == sorted(pkgs)
    states = dict(zip(keys, ids.found["cell-state"], strict=True))
    assert states == {k: S(p.state).label for k, p in pkgs.items()}
    assert states["hr-case-intake-specialist"] == "Rolled back"
    assert dict(zip(keys, map(int, ids.found["cell-members"]), strict=True)) == members.to_dict()
    confidence = dict(zip(keys, ids.found["cell-confidence"], strict=True))
    k = _kpis(scenario.url, scenario.as_of)
    assert confidence == {r.key: f"{r.confidence.score}%" for r in k.packages}


def test_dashboard_focus_lists_held_approvals_and_tasks_with_reasons(scenario: Scenario):
    ids = ByTestId(reports.render_dashboard(scenario.url, scenario.as_of))
    items = {(a["data-kind"], a["data-package-key"]) for a in ids.attrs_of["focus-item"]}
    assert items == {("held", "service-desk-resolver"),
                     ("approval", "procurement-request-coordinator"),
                     ("maintenance", "hr-case-intake-specialist")}  # the closed task is gone
    assert ids.one("focus-count") == "3"
    text = " ".join(ids.found["focus-item"])
    assert "rollback_drill: medium risk needs a signed drill" in text
    assert "overdue" in text  # the approval deadline passed before as_of
    assert "Re-scope archive access after the rollback" in text


def test_dashboard_activity_is_newest_first_and_skips_passing_checks(scenario: Scenario):
    ids = ByTestId(reports.render_dashboard(scenario.url, scenario.as_of))
    actions = [a["data-action"] for a in ids.attrs_of["activity-item"]]
    assert len(actions) == reports.ACTIVITY_LIMIT
    assert actions[0] == "approval_requested"  # procurement, day 4: the newest event
    assert "rollback_verified" in actions
    assert "deploy_batch" not in actions
    first = ids.found["activity-item"][0]
    assert first.startswith("Procurement Request Coordinator: approval requested")


def test_dashboard_selected_package_has_charts_over_its_watch(scenario: Scenario):
    html = reports.render_dashboard(scenario.url, scenario.as_of,
                                    selected="finance-month-end-operator")
    ids = ByTestId(html)
    [sel] = ids.attrs_of["selected-package"]
    assert sel["data-package-key"] == "finance-month-end-operator"
    assert ids.found["chart-adoption-last"][0] == "0.8"  # day 10: 0.40 + 0.04 * 10
    assert ids.found["chart-health-last"][0] == "100%"
    # One circle per measurement: 8 adoption checks in the finance chart.
    fin = html[html.index('id="pkg-finance-month-end-operator"'):]
    fin = fin[:fin.index("</article>")]
    adoption = fin[fin.index('data-testid="chart-adoption"'):]
    adoption = adoption[:adoption.index("</figure>")]
    assert adoption.count("<circle") == 8
    assert "closed one" not in fin  # a closed maintenance task is not shown as open
    # By default the lead package is selected.
    default = ByTestId(reports.render_dashboard(scenario.url, scenario.as_of))
    assert (default.attrs_of["selected-package"][0]["data-package-key"]
            == default.attrs_of["lead-package"][0]["data-package-key"])
    with pytest.raises(KeyError):
        reports.render_dashboard(scenario.url, scenario.as_of, selected="no-such-package")


def test_dashboard_is_self_contained_and_escapes_catalog_text(loaded_store: str):
    with session_scope(loaded_store) as s:
        pkg = s.get(RolePackage, "finance-month-end-operator")
        pkg.name = "<img src=x onerror=alert(1)>"
        s.add(pkg)
    html = reports.render_dashboard(loaded_store)
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    for forbidden in ("<script", "<link", "http://", "https://", "@import", "url("):
        assert forbidden not in html, forbidden


# --------------------------------------------------------------------------- files and secrets


def test_write_reports_writes_dashboard_wave_and_rollback_files(scenario: Scenario, tmp_path):
    paths = reports.write_reports(scenario.url, tmp_path / "out", scenario.as_of)
    assert [p.name for p in paths] == [
        "dashboard.html", "wave-1.md", "wave-2.md",
        f"rollback-hr-case-intake-specialist-{scenario.hr_release}.md"]
    assert all(p.stat().st_size > 0 for p in paths)
    for p in paths[1:]:
        assert_well_formed(p.read_text())


def test_every_report_written_carries_the_current_chain_head(scenario: Scenario, tmp_path):
    """Dashboard, wave and rollback reports (drills: test_drill_flow) end with the head, so a
    truncated audit tail is caught against any of them."""
    paths = reports.write_reports(scenario.url, tmp_path / "out", scenario.as_of)
    with session_scope(scenario.url) as s:
        head = audit.head(s)
    assert head is not None
    assert {p.name: audit.head_from_text(p.read_text()) for p in paths} == {
        p.name: head for p in paths}


def test_every_template_shows_the_head_render_template_supplies() -> None:
    """One place reads the head (render_template); each report template must show it."""
    pages = [p for p in reports.templates_dir().glob("*.j2") if not p.name.startswith("_")]
    assert len(pages) >= 5
    assert [p.name for p in pages if "{{ audit_head }}" not in p.read_text()] == []
    assert reports.audit_head(None).startswith("audit chain head: unknown")


def test_no_report_contains_a_secret(scenario: Scenario, tmp_path,
                                     monkeypatch, capsys):
    token, signing = "xoxb-1111-2222-canary-token", "canary-signing-secret-8f3c"
    pg_password, ldap_password = "pg-S3cret-canary", "ldap-bind-canary"
    other_url = "mysql://app:hunter2-canary@db.other/app"
    monkeypatch.setenv("WAVEKIT_SLACK_BOT_TOKEN", token)
    monkeypatch.setenv("WAVEKIT_SLACK_SIGNING_SECRET", signing)
    monkeypatch.setenv("WAVEKIT_LDAP_BIND_PASSWORD", ldap_password)
    monkeypatch.setenv("WAVEKIT_DATABASE_URL",
                       f"postgresql://wavekit:{pg_password}@db.internal:5432/wavekit")
    # Secrets smuggled into the data, as an error message or a careless comment would.
    with session_scope(scenario.url) as s:
        desk = s.get(RolePackage, "service-desk-resolver")
        desk.state_reason = f"slack auth failed with token {token}"
        s.add(desk)
        rel = s.get(Release, scenario.hr_release)
        rel.rollback_reason = (f"store unreachable: postgresql://wavekit:{pg_password}"
                               f"@db.internal:5432/wavekit; also {other_url}")
        s.add(rel)
        audit.record(s, "approval_decided", package_key="finance-month-end-operator", wave=1,
                     release_id=scenario.finance_release, at=T0, decision="approve",
                     approver="UFINOWNER1", comment=f"signing secret is {signing}")
        s.add(MaintenanceTask(dedupe_key="leak", package_key="finance-month-end-operator",
                              kind="anomaly", reason=f"bind with {ldap_password} failed",
                              opened_at=T0))
    paths = reports.write_reports(scenario.url, tmp_path, scenario.as_of)
    texts = [p.read_text() for p in paths]
    texts.append(reports.render_dashboard(scenario.url, scenario.as_of,
                                          selected="service-desk-resolver"))
    for text in texts:
        for secret in (token, signing, pg_password, ldap_password, "hunter2-canary"):
            assert secret not in text
    everything = "\n".join(texts)
    assert "postgresql://wavekit:***@db.internal:5432/wavekit" in everything
    assert "mysql://app:***@db.other/app" in everything
    assert "slack auth failed with token ***" in everything
    out = capsys.readouterr()
    assert not any(s in out.out + out.err for s in (token, pg_password))


def test_artifact_keys_are_what_prefect_accepts():
    assert reports.artifact_key("wave", 1, "report") == "wave-1-report"
    assert (reports.artifact_key("rollback", "HR_Case.Intake", 7)
            == "rollback-hr-case-intake-7")


def test_an_inconclusive_measurement_reads_as_missing_not_nan(scenario: Scenario):
    with session_scope(scenario.url) as s:
        s.add(HealthCheckResult(release_id=scenario.finance_release,
                                package_key="finance-month-end-operator",
                                check_name="ticket_noise", due_at=T0 + 10 * DAY,
                                measured_at=T0 + 10 * DAY, value=None, threshold=2.0,
                                verdict="inconclusive"))
    text = reports.render_wave_report(scenario.url, 1, scenario.as_of)
    checks = {r[0]: r for r in md_tables(section(text, "Finance Month-End Operator · "
                                                       "release 1"))[3][1:]}
    assert checks["ticket_noise"][1:] == ["1", "0", "0", "1", "—", "2", "? inconclusive"]
    html = reports.render_dashboard(scenario.url, scenario.as_of,
                                    selected="finance-month-end-operator")
    assert "nan" not in text.lower().split() and ">nan<" not in html.lower()
