"""Rollback drills without Prefect: the standing rules, the gate, the judge, the backlog, the
drill target's configuration, and signed manual drills through the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlmodel import select
from typer.testing import CliRunner

from wavekit.adapters.settings import load_settings
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import DrillRun
from wavekit.adapters.targets.drill import (
    DrillTargetRefused,
    ProductionWriteRefused,
    ReadOnlyTarget,
    build_drill_target,
    drill_environ,
)
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.drills import DrillRecord, drill_standing, fmt_seconds, judge_drill
from wavekit.domain.gates import GateContext, rollback_drill
from wavekit.domain.grants import Grant
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import Plan, prove_restore
from wavekit.domain.states import PackageState
from wavekit.present.cli import app
from wavekit.present.kpis import compute_kpis
from wavekit.workflow.maintenance import (
    MaintenanceThresholds,
    PackageFacts,
    load_maintenance_inputs,
    plan_maintenance,
)

NOW = datetime(2026, 4, 20, 12, tzinfo=UTC)
DAY = timedelta(days=1)
SD = "service-desk-resolver"
FIN = "finance-month-end-operator"


def drill(days_ago: float, passed: bool = True, kind: str = "automated", n: int = 1,
          **kw: object) -> DrillRecord:
    return DrillRecord(package_key="p", kind=kind, passed=passed, id=n,
                       finished_at=NOW - days_ago * DAY, target="sandbox:drill-p",
                       duration_seconds=42.0, objective_minutes=30.0, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the standing rule


@pytest.mark.parametrize(("catalog", "drills", "status", "tested", "recorded"), [
    ("pending", [], "pending", False, False),
    # Catalog text is no drill: "signed" with nothing recorded passes neither gate nor KPI.
    ("signed", [], "signed_catalog", False, False),
    ("not_required", [], "not_required", False, False),
    ("pending", [drill(3)], "drilled", True, True),
    ("pending", [drill(30)], "drilled", True, True),  # no older than the cadence
    ("pending", [drill(31)], "due", False, False),
    # Once drills are recorded they decide, not the catalog: an expired drill is due.
    ("signed", [drill(31)], "due", False, False),
    # The latest decides: a failure after a pass, and a pass after a failure.
    ("signed", [drill(5, n=1), drill(2, passed=False, failure="slow", n=2)], "failed", False,
     False),
    ("pending", [drill(5, passed=False, n=1), drill(2, n=2)], "drilled", True, True),
    ("pending", [drill(200, passed=False)], "failed", False, False),  # failed stays failed
    ("pending", [drill(1, kind="manual", signed_by="Owen Scott")], "signed", True, True),
    ("pending", [drill(40, kind="manual", signed_by="Owen Scott")], "due", False, False),
    # A drill still running, or finished after as_of, is not evidence yet.
    ("pending", [DrillRecord("p", "automated", False, None, id=1)], "pending", False, False),
    ("pending", [drill(-1)], "pending", False, False),
])
def test_drill_standing(catalog, drills, status, tested, recorded) -> None:
    s = drill_standing(catalog, drills, NOW, 30)
    assert (s.status, s.tested, s.recorded) == (status, tested, recorded), s


def test_standing_words() -> None:
    assert drill_standing("signed", [], NOW, 30).label == "drill pending (catalog text only)"
    failed = drill_standing("pending", [drill(2, passed=False, failure="restore took 31m")],
                            NOW, 30)
    assert failed.detail == "the last rollback drill (2026-04-18) failed: restore took 31m"
    ok = drill_standing("pending", [drill(2)], NOW, 30)
    assert ok.label == "drilled 2026-04-18"
    assert ok.detail == ("rollback drill passed on 2026-04-18 on sandbox:drill-p: restored in "
                         "42 s (objective 30 min)")
    assert drill_standing("pending", [drill(45)], NOW, 30).detail == (
        "the last rollback drill passed on 2026-03-06, 45 days ago (cadence 30 days)")
    assert [fmt_seconds(v) for v in (0.34, 42, 245, 3720)] == ["0.3 s", "42 s", "4m 05s",
                                                             "1h 02m"]


# ------------------------------------------------------------------ the gate


def view(risk: str = "medium", drill_: str = "pending") -> PackageView:
    return PackageView(key="p", name="P", state=PackageState.MONITORING, risk=risk,
                       fallback_plan="revert", fallback_drill=drill_)


def gate(pkg: PackageView, drills=(), as_of=NOW, cadence=30):  # type: ignore[no-untyped-def]
    empty: frozenset = frozenset()
    return rollback_drill(pkg, GateContext(plan=Plan("p", empty, empty, empty, empty, empty),
                                           drills=tuple(drills), as_of=as_of,
                                           review_cadence_days=cadence))


def test_gate_accepts_a_recent_passing_drill_or_a_signature() -> None:
    assert not gate(view()).passed
    assert "no rollback drill recorded" in gate(view()).reason
    assert "`wavekit drill p`" in gate(view()).reason
    assert gate(view(), [drill(3)]).passed
    assert gate(view(), [drill(3)]).reason.startswith("medium risk: rollback drill passed on")
    assert not gate(view(), [drill(31)]).passed  # older than the cadence
    assert gate(view(), [drill(31)], cadence=60).passed  # Settings.review_cadence_days
    assert not gate(view(), [drill(1, passed=False, failure="2 grant(s) differ")]).passed
    signed = gate(view(), [drill(1, kind="manual", signed_by="Owen Scott")])
    assert signed.passed and "signed by Owen Scott" in signed.reason
    legacy = gate(view(drill_="signed"))  # catalog text, no drill, no signer: refused
    assert not legacy.passed and legacy.reason.startswith(
        "medium risk: the catalog says the rollback drill was signed, but no drill or signer "
        "is recorded; a passing drill")
    # A failed drill outweighs the catalog's signature; low risk needs no drill at all.
    assert not gate(view(drill_="signed"), [drill(1, passed=False)]).passed
    assert gate(view(risk="low"), [drill(1, passed=False)]).passed


# ------------------------------------------------------------------ the judge


def test_judge_requires_an_exact_read_back_within_the_objective() -> None:
    a, b, c = Grant("ann", "x"), Grant("bob", "x"), Grant("cy", "x")
    prior, touched = frozenset({a, b}), frozenset({b, c})  # the drill removed b, added c
    half_hour = timedelta(minutes=30)
    exact = prove_restore(prior, touched, frozenset({a, b}))
    assert judge_drill(exact, timedelta(minutes=29), half_hour) == []
    assert judge_drill(exact, half_hour, half_hour) == []  # at the objective is within it
    assert judge_drill(exact, timedelta(minutes=31), half_hour) == [
        "restore took 31m 00s, over the rollback objective of 30 min"]
    not_regranted = prove_restore(prior, touched, frozenset({a}))
    assert judge_drill(not_regranted, timedelta(0), half_hour) == [
        "1 grant(s) the package changed differ from the prior bundle after the rollback"]
    drifted = prove_restore(prior, touched, frozenset({b}))  # a vanished: not the package's
    assert judge_drill(drifted, timedelta(0), half_hour) == [
        "1 grant(s) the package did not change differ from the prior bundle"]


# ------------------------------------------------------------------ the nightly backlog


def facts(key: str, drills=(), drill_: str = "pending", plan: str = "revert"
          ) -> PackageFacts:  # type: ignore[no-untyped-def]
    return PackageFacts(key=key, state=PackageState.MONITORING, fallback_plan=plan,
                        fallback_drill=drill_, drills=tuple(drills))


def test_backlog_opens_a_drill_item_when_due_or_failed_and_closes_it_when_drilled() -> None:
    from wavekit.workflow.maintenance import TaskRef

    packages = [
        facts("pending"), facts("due", [drill(40)]),
        facts("failed", [drill(3, passed=False, failure="restore took 31m")]),
        facts("drilled", [drill(3)]), facts("legacy", drill_="signed"),
        facts("excused", drill_="not_required"), facts("no-plan", plan=""),
    ]
    open_ = [TaskRef(f"drill:{k}", k, "drill") for k in ("drilled", "legacy", "excused",
                                                         "no-plan", "failed")]
    p = plan_maintenance(packages, {}, pd.DataFrame(columns=["package_key", "release_id",
                                                             "check_name", "verdict"]),
                         open_, NOW, MaintenanceThresholds(review_cadence_days=30))
    assert {i.dedupe_key: i.reason for i in p.open} == {
        "drill:due": "rollback drill due: the last rollback drill passed on 2026-03-11, 40 days "
                     "ago (cadence 30 days); drill it again (`wavekit drill due`)",
        "drill:pending": "rollback drill pending: no drill recorded; rehearse the rollback "
                         "(`wavekit drill pending`) or record a signed manual drill",
    }  # "failed" and "legacy" (catalog text only: still pending) are open already: no twins
    assert {i.dedupe_key: i.reason for i in p.close} == {
        "drill:drilled": "rollback drill passed on 2026-04-17 on sandbox:drill-p: "
                         "restored in 42 s (objective 30 min)",
        "drill:excused": "the catalog marks the rollback drill not required",
        "drill:no-plan": "no fallback plan",
    }
    fresh = plan_maintenance(packages[2:3], {}, pd.DataFrame(), (), NOW,
                             MaintenanceThresholds())
    assert [i.reason for i in fresh.open] == [
        "the last rollback drill (2026-04-17) failed: restore took 31m: fix the fallback and "
        "drill it again (`wavekit drill failed`)"]


# ------------------------------------------------------------------ the drill target


def test_the_drill_target_is_never_production(sqlite_url: str) -> None:
    settings = load_settings(database_url=sqlite_url)
    production = SandboxTarget(sqlite_url)
    target = build_drill_target(settings, package_key=SD, production=production)
    assert target.name == f"sandbox:drill-{SD}"
    same = load_settings(database_url=sqlite_url, drill_sandbox="default")
    with pytest.raises(DrillTargetRefused, match="is the production target"):
        build_drill_target(same, package_key=SD, production=production)
    with pytest.raises(DrillTargetRefused, match="unknown drill target"):
        build_drill_target(settings, "prod", package_key=SD, production=production)
    guarded = ReadOnlyTarget(production)
    with pytest.raises(ProductionWriteRefused):
        guarded.apply([Grant("ann", "x")], [])
    assert production.read_grants(["x"]) == frozenset()


def test_drill_target_variables() -> None:
    with pytest.raises(DrillTargetRefused, match="WAVEKIT_DRILL_SCIM_URL"):
        drill_environ("scim", {"WAVEKIT_SCIM_URL": "https://prod/scim", "WAVEKIT_SCIM_TOKEN": "t"})
    # SCIM: only the drill's own variables, never production's token.
    assert drill_environ("scim", {"WAVEKIT_SCIM_TOKEN": "prod-token",
                                  "WAVEKIT_DRILL_SCIM_URL": "https://drill/scim",
                                  "WAVEKIT_DRILL_SCIM_MATCH": "externalId"}) == {
        "WAVEKIT_SCIM_URL": "https://drill/scim", "WAVEKIT_SCIM_MATCH": "externalId"}
    prod = {"WAVEKIT_LDAP_URL": "ldap://dir:389", "WAVEKIT_LDAP_BIND_DN": "cn=admin,dc=x",
            "WAVEKIT_LDAP_PASSWORD": "pw", "WAVEKIT_LDAP_BASE_DN": "dc=x",
            "WAVEKIT_LDAP_GROUP_BASE": "ou=groups,dc=x"}
    with pytest.raises(DrillTargetRefused, match="WAVEKIT_DRILL_LDAP_BASE_DN"):
        drill_environ("ldap", prod)
    # LDAP: the connection is inherited, the bases are not (production's groups stay out).
    assert drill_environ("ldap", {**prod, "WAVEKIT_DRILL_LDAP_BASE_DN": "ou=drill,dc=x"}) == {
        "WAVEKIT_LDAP_URL": "ldap://dir:389", "WAVEKIT_LDAP_BIND_DN": "cn=admin,dc=x",
        "WAVEKIT_LDAP_PASSWORD": "pw", "WAVEKIT_LDAP_BASE_DN": "ou=drill,dc=x"}


def test_an_ldap_drill_sharing_production_groups_is_refused() -> None:
    from wavekit.adapters.targets.drill import refuse_production
    from wavekit.adapters.targets.ldap import LdapConfig, LdapTarget

    prod = LdapTarget(LdapConfig(url="ldap://dir:389", bind_dn="cn=a", password="p",
                                 base_dn="dc=x"))
    drill_ = LdapTarget(LdapConfig(url="ldap://dir:389", bind_dn="cn=a", password="p",
                                   base_dn="ou=drill,dc=x", group_base="ou=groups,dc=x"))
    with pytest.raises(DrillTargetRefused, match="group base ou=groups,dc=x is production's"):
        refuse_production(drill_, prod)
    refuse_production(LdapTarget(LdapConfig(url="ldap://dir:389", bind_dn="cn=a", password="p",
                                            base_dn="ou=drill,dc=x")), prod)


# ------------------------------------------------------------------ signed manual drills


def _fallback_tested(url: str, as_of: datetime) -> tuple[int, int]:
    with session_scope(url) as s:
        return compute_kpis(s, as_of).fallback_tested


def test_a_signed_manual_drill_opens_the_gate_and_counts(loaded_store: str,
                                                         tmp_path: Path) -> None:
    from wavekit.domain.clock import utcnow
    from wavekit.workflow.drills import drill_gate
    from wavekit.workflow.runtime import build_runtime

    rt = build_runtime(load_settings(database_url=loaded_store), metrics=object())
    assert not drill_gate(rt, SD).passed
    # The example world's two recorded drills count; catalog signatures don't.
    assert _fallback_tested(loaded_store, utcnow()) == (2, 5)
    runner = CliRunner()
    base = ["drill", SD, "--database-url", loaded_store]
    half = runner.invoke(app, [*base, "--signed-by", "Owen Scott"])
    assert half.exit_code == 1 and "needs both --signed-by NAME and --note TEXT" in half.output
    unknown = runner.invoke(app, ["drill", "nope", "--signed-by", "A", "--note", "n",
                                  "--database-url", loaded_store])
    assert unknown.exit_code == 1 and "no package 'nope'" in unknown.output
    done = runner.invoke(app, [*base, "--signed-by", "Owen Scott", "--note",
                               "emergency elevation revert rehearsed on the staging desk",
                               "--as", "rm-alex"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "signed by Owen Scott" in done.output
    assert "gate rollback_drill passes: medium risk: rollback drill signed by Owen Scott" \
        in done.output
    assert drill_gate(rt, SD).passed
    assert _fallback_tested(loaded_store, utcnow()) == (3, 5)
    # ... and it expires with the review cadence, like any drill.
    assert _fallback_tested(loaded_store, utcnow() + 31 * DAY) == (0, 5)
    with session_scope(loaded_store) as s:
        (run,) = s.exec(select(DrillRun).where(DrillRun.package_key == SD)).all()
        (event,) = audit.events(s, package_key=SD, action="drill_recorded")
        inputs = load_maintenance_inputs(s)
    assert (run.kind, run.status, run.signed_by, run.actor) == ("manual", "passed",
                                                                "Owen Scott", "rm-alex")
    assert event.actor == "rm-alex" and event.detail["signed_by"] == "Owen Scott"
    assert event.detail["note"] == "emergency elevation revert rehearsed on the staging desk"
    sd = next(p for p in inputs.packages if p.key == SD)
    assert [d.signed_by for d in sd.drills] == ["Owen Scott"]
    status = runner.invoke(app, ["status", "--database-url", loaded_store],
                           env={"COLUMNS": "200"})
    assert "Fallback tested" in status.output and "3/5" in status.output
    assert "Fallback signed in catalog only" in status.output


def test_an_automated_drill_that_cannot_start_is_one_line(loaded_store: str,
                                                          monkeypatch) -> None:
    monkeypatch.delenv("WAVEKIT_DRILL_SCIM_URL", raising=False)
    runner = CliRunner()
    base = ["drill", SD, "--database-url", loaded_store]
    for args, said in (
            (["--target-kind", "scim"], "a SCIM drill target needs WAVEKIT_DRILL_SCIM_URL"),
            (["--objective-minutes", "0"], "--objective-minutes must be more than 0"),
            (["--objective-minutes", "5", "--signed-by", "A", "--note", "n"],
             "--objective-minutes applies to a drill wavekit runs"),
    ):
        result = runner.invoke(app, [*base, *args], env={"COLUMNS": "200"})
        assert result.exit_code == 1, result.output
        assert said in result.output and "Traceback" not in result.output
    missing = runner.invoke(app, ["drill", "nope", "--database-url", loaded_store])
    assert missing.exit_code == 1 and "no package 'nope' in the catalog" in missing.output
    with session_scope(loaded_store) as s:
        assert s.exec(select(DrillRun).where(DrillRun.package_key == SD)).all() == []  # none


def test_a_retried_restore_is_timed_from_the_first_attempt(loaded_store: str) -> None:
    """The restore task retries like rollback-package's: the objective counts every attempt."""
    from wavekit.domain.clock import ManualClock
    from wavekit.workflow import drills
    from wavekit.workflow.runtime import build_runtime

    clock = ManualClock(NOW)
    rt = build_runtime(load_settings(database_url=loaded_store), clock=clock,
                       target=SandboxTarget(loaded_store), metrics=object())
    target, _ = drills.open_drill_target(rt, SD)
    drill_id = drills.start_drill(rt, SD, target, objective_minutes=30)
    drills.seed_drill(rt, drill_id, target)
    drills.deploy_drill(rt, drill_id, target)
    drills.force_rollback(rt, drill_id, target)
    clock.advance(timedelta(minutes=20))  # the first attempt failed after 20 minutes ...
    written = drills.force_rollback(rt, drill_id, target)  # ... the retry finds less to do
    clock.advance(timedelta(minutes=15))
    outcome = drills.verify_drill(rt, drill_id, target, written)
    assert not outcome.passed and outcome.duration_seconds == 35 * 60
    assert outcome.failure == "restore took 35m 00s, over the rollback objective of 30 min"
    assert outcome.readback_count == outcome.prior_count and outcome.mismatches == 0
    with session_scope(loaded_store) as s:
        assert len(audit.events(s, package_key=SD, action="drill_rollback_started")) == 1
