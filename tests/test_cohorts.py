"""Canary cohorts, pure: the selection rule, nesting, stratification, the plan filter, the
action rule; and the catalog's `rollout:` with one clear problem per mistake."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from wavekit.adapters.catalog import CatalogInvalid, load_catalog
from wavekit.domain.cohorts import (
    ActorFacts,
    CohortStep,
    Rollout,
    check_action,
    cohort_size,
    cohorts,
    may_act,
    rank,
    restrict_plan,
    rollout_from,
    selection_order,
    soak_action,
    soak_hours,
    step_label,
)
from wavekit.domain.grants import Grant
from wavekit.domain.planning import Plan
from wavekit.examples import EXAMPLE_CATALOG

STORED = {"steps": [{"members": 5.0}, {"soak_hours": 48.0}, {"members": 25.0},
                    {"soak_hours": 24.0}, {"members": 100.0}], "cohort_by": None}
MEMBERS = [f"user{i:03d}" for i in range(200)]


def test_stored_steps_become_member_steps_with_their_soaks() -> None:
    r = rollout_from(STORED)
    assert r == Rollout((CohortStep(5.0, soak_hours=48.0), CohortStep(25.0, soak_hours=24.0),
                         CohortStep(100.0)))
    assert [soak_hours(r, i) for i in range(3)] == [48.0, 24.0, None]
    assert rollout_from(None) is None and rollout_from({"steps": []}) is None


def test_rank_is_sha256_of_package_and_identity_not_python_hash() -> None:
    assert rank("pkg", "alice") == hashlib.sha256(b"pkg\x1falice").hexdigest()
    # Another package draws other canaries from the same people.
    assert selection_order("a", MEMBERS)[:10] != selection_order("b", MEMBERS)[:10]
    assert selection_order("a", MEMBERS) == selection_order("a", reversed(MEMBERS))


@pytest.mark.parametrize(("percent", "total", "size"), [
    (5, 200, 10), (5, 20, 1), (5, 10, 1), (1, 10, 1), (25, 42, 11), (33.3, 3, 1),
    (50, 3, 2), (100, 42, 42), (100, 0, 0), (0.5, 1000, 5), (99.9, 10, 10),
])
def test_cohort_size_rounds_up_and_takes_at_least_one(percent: float, total: int,
                                                      size: int) -> None:
    assert cohort_size(percent, total) == size


def test_cohorts_are_nested_and_sized_by_their_share() -> None:
    r = rollout_from(STORED)
    assert r is not None
    got = cohorts(r, "pkg", MEMBERS)
    assert [len(c) for c in got] == [10, 50, 200]
    assert got[0] < got[1] < got[2] == frozenset(MEMBERS)
    assert list(got[0]) and set(got[0]) == set(selection_order("pkg", MEMBERS)[:10])


def test_stratified_cohorts_look_like_the_whole() -> None:
    depts = {m: ("Finance" if i < 120 else "HR" if i < 180 else "IT")
             for i, m in enumerate(MEMBERS)}  # 60% / 30% / 10%
    r = Rollout((CohortStep(10.0, soak_hours=1), CohortStep(50.0, soak_hours=1),
                 CohortStep(100.0)), cohort_by="department")
    first, half, _ = cohorts(r, "pkg", MEMBERS, depts)
    assert Counter(depts[m] for m in first) == {"Finance": 12, "HR": 6, "IT": 2}
    assert Counter(depts[m] for m in half) == {"Finance": 60, "HR": 30, "IT": 10}
    assert first < half
    # Without stratification the hash alone decides (it need not match the mix).
    plain = cohorts(Rollout(r.steps), "pkg", MEMBERS)[0]
    assert len(plain) == 20


def test_a_named_step_takes_its_names_and_later_shares_count_them() -> None:
    r = Rollout((CohortStep(named=("user007", "user100", "nobody")), CohortStep(5.0),
                 CohortStep(100.0)))
    named, five, everyone = cohorts(r, "pkg", MEMBERS)
    assert named == {"user007", "user100"}  # a name that is not a member is ignored
    assert named < five and len(five) == 10 and everyone == set(MEMBERS)


def test_the_plan_filter_keeps_the_prior_bundle_whole() -> None:
    plan = Plan("pkg", frozenset({"e", "old"}),
                adds=frozenset({Grant("a", "e"), Grant("b", "e")}),
                removes=frozenset({Grant("a", "old"), Grant("c", "old")}),
                retirements=frozenset(), prior=frozenset({Grant("a", "old"), Grant("c", "old")}))
    only_a = restrict_plan(plan, frozenset({"a"}))
    assert only_a.adds == {Grant("a", "e")} and only_a.removes == {Grant("a", "old")}
    assert only_a.prior == plan.prior and only_a.scope == plan.scope


def test_step_labels_name_the_cohort_size() -> None:
    r = rollout_from(STORED)
    assert r is not None
    assert step_label(r, 1, 50, 200) == "step 2/3 · 25% (50 of 200 members)"


LIVE = {"stepped": True, "live": True, "step": 0, "steps": 3, "paused": False,
        "widening": False}


@pytest.mark.parametrize(("action", "actor", "facts", "allowed", "why"), [
    ("promote", "rm-alex", {}, True, ""),
    ("promote", "  ", {}, False, "say who you are"),
    ("promote", "rm-alex", {"step": 2}, False, "last step"),
    ("promote", "rm-alex", {"widening": True}, False, "being deployed"),
    ("pause", "rm-alex", {}, True, ""),
    ("pause", "rm-alex", {"paused": True}, False, "already paused"),
    ("resume", "rm-alex", {}, False, "not paused"),
    ("resume", "rm-alex", {"paused": True}, True, ""),
    ("abort", "rm-alex", {"widening": True, "step": 2}, True, ""),
    ("abort", "rm-alex", {"live": False}, False, "no cohort on the target"),
    ("abort", "rm-alex", {"stepped": False}, False, "no rollout steps"),
    ("skip", "rm-alex", {}, False, "unknown action"),
    ("promote", "rm-alex", {"watched": False, "state": "Contained"}, False,
     "the package is Contained"),
    ("abort", "rm-alex", {"watched": False, "state": "Contained"}, True, ""),
])
def test_the_cohort_action_rule(action: str, actor: str, facts: dict, allowed: bool,
                                why: str) -> None:
    got = check_action(action, actor, **{**LIVE, **facts})
    assert got.allowed is allowed and why in got.reason


FIN_ACTORS = ActorFacts("fin", "Finance Shared Services",
                        owners=frozenset({"UFINOWNER1", "omar@example.com"}),
                        release_managers=frozenset({"rm-alex"}))


@pytest.mark.parametrize(("action", "actor", "proof", "local", "allowed", "why"), [
    ("promote", "rm-alex", "cli", False, True, ""),  # a release manager
    ("abort", "UFINOWNER1", "cli", False, True, ""),  # the owner
    ("pause", "<@ufinowner1>", "cli", False, True, ""),  # ids compare loosely
    ("resume", "omar@example.com", "cli", False, True, ""),  # a delegate
    ("abort", "mallory", "cli", False, False, "mallory may not abort fin: only Finance Shared "
     "Services, a declared delegate or a release manager"),
    ("promote", "Finance Shared Services", "cli", False, False, "may not promote"),  # by id
    ("pause", " ", "cli", False, False, "say who you are"),
    # The UI proves nobody: what widens the rollout needs the CLI (or local mode) ...
    ("promote", "rm-alex", "unverified", False, False, "cannot prove who typed 'rm-alex'"),
    ("resume", "UFINOWNER1", "unverified", False, False, "wavekit cohort resume fin"),
    ("promote", "rm-alex", "unverified", True, True, ""),
    # ... what only reduces exposure is taken from it (recorded unverified), never a stranger's.
    ("pause", "rm-alex", "unverified", False, True, ""),
    ("abort", "UFINOWNER1", "unverified", False, True, ""),
    ("abort", "mallory", "unverified", True, False, "may not abort"),
])
def test_who_may_act_on_a_rollout(action: str, actor: str, proof: str, local: bool,
                                  allowed: bool, why: str) -> None:
    got = may_act(action, actor, replace(FIN_ACTORS, local_mode=local), proof=proof)  # type: ignore[arg-type]
    assert got.allowed is allowed and why in got.reason, got


# ------------------------------------------------------------------ the catalog


def _catalog(tmp_path: Path, rollout: str) -> Path:
    root = tmp_path / "catalog"
    shutil.copytree(EXAMPLE_CATALOG, root)
    y = (root / "packages.yaml").read_text()
    y = y.replace("    watch_days: 21\n", "    watch_days: 21\n" + rollout, 1)
    (root / "packages.yaml").write_text(y)
    return root


PKG = "packages[procurement-request-coordinator].rollout"


def test_a_valid_rollout_is_stored_normalised(tmp_path: Path) -> None:
    root = _catalog(tmp_path, "    rollout:\n      cohort_by: location\n      steps:\n"
                    "        - {members: 5%}\n        - {soak_hours: 48}\n"
                    "        - {members: 25 %}\n        - {soak_hours: 24}\n"
                    "        - {members: 100%}\n")
    spec = load_catalog(root).package("procurement-request-coordinator")
    assert spec.rollout == {"cohort_by": "location", "steps": [
        {"members": 5.0}, {"soak_hours": 48.0}, {"members": 25.0}, {"soak_hours": 24.0},
        {"members": 100.0}]}
    assert load_catalog(EXAMPLE_CATALOG).package("hr-case-intake-specialist").rollout is None


@pytest.mark.parametrize(("steps", "field", "message"), [
    ("[{members: 5}, {soak_hours: 1}, {members: 100%}]", "steps.members",
     "write a percentage such as 5%"),
    ("[{members: 0%}, {soak_hours: 1}, {members: 100%}]", "steps.members", "out of range"),
    ("[{members: 150%}]", "steps.members", "out of range"),
    ("[{members: 5%}, {soak_hours: 0.1}, {members: 100%}]", "steps.soak_hours",
     "out of range"),
    ("[{members: 5%}, {soak_hours: 99999}, {members: 100%}]", "steps.soak_hours",
     "out of range"),
    ("[{members: 5%, soak_hours: 4}, {members: 100%}]", "steps", "either"),
    ("[{}]", "steps", "either"),
    ("[{member: 5%}, {members: 100%}]", "steps", "unknown field 'member'"),
    ("[{soak_hours: 4}, {members: 100%}]", "", "first step must be a member step"),
    ("[{members: 5%}, {members: 100%}]", "", "no soak between"),
    ("[{members: 5%}, {soak_hours: 4}, {soak_hours: 4}, {members: 100%}]", "",
     "two soaks in a row"),
    ("[{members: 50%}, {soak_hours: 4}, {members: 25%}, {soak_hours: 4}, {members: 100%}]",
     "", "larger than the one before (50%)"),
    ("[{members: 5%}, {soak_hours: 4}, {members: 50%}]", "", "must be {members: 100%}"),
    ("[{members: 5%}, {soak_hours: 4}, {members: 100%}, {soak_hours: 4}]", "",
     "end with {members: 100%}"),
    ("[]", "steps", "at least 1"),
    ("[{members: []}, {soak_hours: 4}, {members: 100%}]", "steps.members", "names nobody"),
])
def test_each_rollout_mistake_is_one_clear_problem(tmp_path: Path, steps: str, field: str,
                                                   message: str) -> None:
    root = _catalog(tmp_path, f"    rollout:\n      steps: {steps}\n")
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    [problem] = err.value.problems
    assert problem.file == "packages.yaml" and problem.line
    assert problem.field == ".".join(p for p in (PKG, field) if p)
    assert message in problem.message, problem.message


def test_a_bad_stratification_column_and_an_unknown_named_member(tmp_path: Path) -> None:
    root = _catalog(tmp_path, "    rollout:\n      cohort_by: email\n"
                    "      steps: [{members: [dlee]}, {soak_hours: 4}, {members: 100%}]\n")
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    [problem] = err.value.problems
    assert problem.field == f"{PKG}.cohort_by" and "department" in problem.message
    root = _catalog(tmp_path / "b", "    rollout:\n"
                    "      steps: [{members: [ghost]}, {soak_hours: 4}, {members: 100%}]\n")
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    [problem] = err.value.problems
    assert problem.field == f"{PKG}.steps" and "'ghost' is named in a cohort" in \
        problem.message


def test_legacy_grants_retire_only_once_every_step_is_on_the_target() -> None:
    from datetime import UTC, datetime

    from wavekit.domain.retirement import RetirementFacts, retirement_due
    from wavekit.domain.states import PackageState

    at = datetime(2026, 4, 8, tzinfo=UTC)
    facts = RetirementFacts(PackageState.WATCHING, has_legacy=True, retire_in_launch_window=True,
                            deployed_at=at, cohort_complete=False)
    assert retirement_due(facts, at) is None
    assert retirement_due(RetirementFacts(**{**facts.__dict__, "cohort_complete": True}), at)


HEALTHY = {"ticket_noise": ["passed", "passed"], "adoption": ["inconclusive", "passed"]}


@pytest.mark.parametrize(("action", "steps_left", "paused", "want"), [
    ("stable", True, False, "widen"),
    ("stable", True, True, "continue"),
    ("stable", False, False, "stable"),  # the last step's watch window ends Stable
    ("rollback", True, False, "rollback"),
    ("contain", True, True, "contain"),
    ("inconclusive", True, False, "inconclusive"),
    ("continue", True, False, "continue"),
])
def test_a_passed_soak_widens_unless_paused(action: str, steps_left: bool, paused: bool,
                                            want: str) -> None:
    assert soak_action(action, steps_left=steps_left, paused=paused,
                       soak=HEALTHY).action == want


@pytest.mark.parametrize(("soak", "why"), [
    (HEALTHY, None),
    ({}, "no health check could measure"),  # nothing was owed in the soak: no evidence
    ({"ticket_noise": ["inconclusive", "inconclusive"]}, "ticket_noise has no passed"),
    ({"ticket_noise": ["passed"], "adoption": []}, "adoption has no passed"),
    ({"ticket_noise": ["passed"], "adoption": ["inconclusive"]}, "adoption has no passed"),
    ({"ticket_noise": ["passed", "failed"]}, "last measurement in the soak was failed"),
    ({"ticket_noise": ["passed", "error"]}, "last measurement in the soak was error"),
    ({"ticket_noise": ["failed", "passed"]}, None),  # within its limit, and healthy since
    ({"ticket_noise": ["passed", "inconclusive"]}, None),
])
def test_a_thin_soak_holds_for_a_human_instead_of_widening(soak: dict[str, list[str]],
                                                           why: str | None) -> None:
    got = soak_action("stable", steps_left=True, paused=False, soak=soak)
    if why is None:
        assert (got.action, got.reason) == ("widen", "")
    else:
        assert got.action == "inconclusive" and why in got.reason, got
    assert soak_action("stable", steps_left=False, paused=False, soak=soak).action == "stable"


def test_the_cli_refuses_a_stranger_in_one_audited_line(loaded_store: str, monkeypatch) -> None:
    from typer.testing import CliRunner

    from wavekit.adapters.store import audit
    from wavekit.adapters.store.engine import session_scope
    from wavekit.present.cli import app

    monkeypatch.setenv("WAVEKIT_RELEASE_MANAGERS", "rm-alex")
    fin = "finance-month-end-operator"
    with session_scope(loaded_store) as s:
        before = len(audit.events(s, package_key=fin))
    result = CliRunner().invoke(app, ["cohort", "abort", fin, "--as", "mallory",
                                      "--database-url", loaded_store], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (f"cannot abort {fin}: mallory may not abort {fin}: only Finance Shared Services, a "
            "declared delegate or a release manager") in " ".join(result.output.split())
    with session_scope(loaded_store) as s:
        events = audit.events(s, package_key=fin)[before:]
    assert [(e.action, e.actor, e.detail["requested"], e.detail["proof"]) for e in events] == [
        ("cohort_action_refused", "mallory", "abort", "cli")]  # and nothing else happened
