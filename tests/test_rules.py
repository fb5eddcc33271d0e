"""Population rules: the grammar, its evaluation, and that no rule text ever runs as code."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from wavekit.adapters.catalog import IDENTITY_COLUMNS, CatalogInvalid, load_catalog
from wavekit.domain.rules import (
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    MAX_RULE_LENGTH,
    And,
    Compare,
    In,
    Not,
    Or,
    RuleError,
    evaluate,
    matching,
    parse_rule,
)
from wavekit.examples import EXAMPLE_CATALOG
from wavekit.present.cli import app
from wavekit.present.kpis import coverage_of

COLUMNS = ("id", "department", "kind", "active", "level")
D, K, A, L = "department", "kind", "active", "level"


def eq(col: str, value: object) -> Compare:
    return Compare(col, "==", value)


@pytest.fixture
def people() -> pd.DataFrame:
    return pd.DataFrame({
        "id": ["ann", "bob", "cat", "dan", "eve"],
        "department": ["Finance", "HR Ops", "Finance", None, "it's"],
        "kind": ["person", "person", "service", "person", "person"],
        "active": [True, True, False, True, False],
        "level": [1, 2, 3, 4, 5],
    })


# ------------------------------------------------------------------ grammar

@pytest.mark.parametrize(("text", "tree"), [
    # each comparison operator
    ("department == 'Finance'", eq(D, "Finance")),
    ("department != 'Finance'", Compare(D, "!=", "Finance")),
    ("level < 3", Compare(L, "<", 3)),
    ("level <= 3", Compare(L, "<=", 3)),
    ("level > 3", Compare(L, ">", 3)),
    ("level >= 3", Compare(L, ">=", 3)),
    ("level>=3", Compare(L, ">=", 3)),
    # literals: quoting, numbers, booleans
    ('department == "HR Ops"', eq(D, "HR Ops")),
    ("department == 'it\\'s'", eq(D, "it's")),
    ('department == "say \\"hi\\""', eq(D, 'say "hi"')),
    ("department == 'back\\\\slash'", eq(D, "back\\slash")),
    ("department == \"it's\"", eq(D, "it's")),
    ("department == ''", eq(D, "")),
    ("department == 'and or not (['", eq(D, "and or not ([")),
    ("level == -4", eq(L, -4)),
    ("level == 2.50", eq(L, 2.5)),
    ("level == 007", eq(L, 7)),
    ("active == true", eq(A, True)),
    ("active == false", eq(A, False)),
    ("active == True", eq(A, True)),
    ("active != False", Compare(A, "!=", False)),
    # lists
    ("kind in ['person', 'service']", In(K, ("person", "service"))),
    ("kind not in ['service']", In(K, ("service",), negated=True)),
    ("level in [1, 2.5, -3, true, 'x']", In(L, (1, 2.5, -3, True, "x"))),
    ("kind in []", In(K, ())),
    ("kind in[ 'a' ,'b' ]", In(K, ("a", "b"))),
    # boolean operators and their precedence: not > and > or
    ("kind == 'a' and level == 1", And((eq(K, "a"), eq(L, 1)))),
    ("kind == 'a' or level == 1", Or((eq(K, "a"), eq(L, 1)))),
    ("not kind == 'a'", Not(eq(K, "a"))),
    ("not not kind == 'a'", Not(Not(eq(K, "a")))),
    ("kind == 'a' or kind == 'b' and level == 1",
     Or((eq(K, "a"), And((eq(K, "b"), eq(L, 1)))))),
    ("kind == 'a' and kind == 'b' or level == 1",
     Or((And((eq(K, "a"), eq(K, "b"))), eq(L, 1)))),
    ("not kind == 'a' and level == 1", And((Not(eq(K, "a")), eq(L, 1)))),
    ("not kind == 'a' or level == 1", Or((Not(eq(K, "a")), eq(L, 1)))),
    ("kind == 'a' and not level == 1 or active == true",
     Or((And((eq(K, "a"), Not(eq(L, 1)))), eq(A, True)))),
    ("kind == 'a' and level == 1 and active == true",
     And((eq(K, "a"), eq(L, 1), eq(A, True)))),
    ("not kind not in ['a']", Not(In(K, ("a",), negated=True))),
    # parentheses
    ("(kind == 'a')", eq(K, "a")),
    ("((kind == 'a'))", eq(K, "a")),
    ("(kind == 'a' or kind == 'b') and level == 1",
     And((Or((eq(K, "a"), eq(K, "b"))), eq(L, 1)))),
    ("not (kind == 'a' and level == 1)", Not(And((eq(K, "a"), eq(L, 1))))),
    ("kind == 'a' and (level == 1 and active == true)",
     And((eq(K, "a"), And((eq(L, 1), eq(A, True)))))),
    # pandas' spellings: & | ~ mean and or not, with the same precedence
    ("kind == 'a' & level == 1", And((eq(K, "a"), eq(L, 1)))),
    ("kind == 'a' | kind == 'b' & level == 1", Or((eq(K, "a"), And((eq(K, "b"), eq(L, 1)))))),
    ("~(kind == 'a')", Not(eq(K, "a"))),
    ("(kind == 'a') & ~(level == 1)", And((eq(K, "a"), Not(eq(L, 1))))),
    # whitespace, including line breaks from a folded YAML string
    ("  kind\t==\n'a'  ", eq(K, "a")),
])
def test_grammar(text: str, tree: object) -> None:
    got = parse_rule(text, COLUMNS)
    assert got == tree
    assert repr(got) == repr(tree)  # also tells 1 from True and 1 from 1.0


@pytest.mark.parametrize(("text", "ids"), [
    ("department == 'Finance'", ["ann", "cat"]),
    ("department != 'Finance'", ["bob", "dan", "eve"]),  # a missing value is not 'Finance'
    ("department == \"it's\"", ["eve"]),
    ("department < 'G'", ["ann", "cat"]),  # a missing value never matches < or >
    ("department >= 'G'", ["bob", "eve"]),
    ("level < 3", ["ann", "bob"]),
    ("level <= 3", ["ann", "bob", "cat"]),
    ("level > 3", ["dan", "eve"]),
    ("level >= 3.5", ["dan", "eve"]),
    ("level == 2", ["bob"]),
    ("active == true", ["ann", "bob", "dan"]),
    ("active != true", ["cat", "eve"]),
    ("department in ['Finance', 'HR Ops']", ["ann", "bob", "cat"]),
    ("department not in ['Finance', 'HR Ops']", ["dan", "eve"]),
    ("department in []", []),
    ("department not in []", ["ann", "bob", "cat", "dan", "eve"]),
    ("department == 'Finance' and kind == 'person'", ["ann"]),
    ("department == 'HR Ops' or kind == 'service'", ["bob", "cat"]),
    ("not department == 'Finance'", ["bob", "dan", "eve"]),
    ("kind == 'service' or department == 'Finance' and active == true", ["ann", "cat"]),
    ("(kind == 'service' or department == 'Finance') and active == true", ["ann"]),
    ("not (kind == 'service' or level > 3)", ["ann", "bob"]),
    ("department == 'Sales'", []),
])
def test_evaluation(people: pd.DataFrame, text: str, ids: list[str]) -> None:
    mask = matching(people, text, COLUMNS)
    assert mask.dtype == bool
    assert mask.index.equals(people.index)
    assert people.loc[mask, "id"].tolist() == ids


def test_evaluation_keeps_the_frames_index(people: pd.DataFrame) -> None:
    frame = people.set_index(pd.Index([10, 10, 30, 40, 50]))  # even a duplicated label
    mask = evaluate(parse_rule("kind == 'person' and level > 1", COLUMNS), frame)
    assert mask.tolist() == [False, True, False, True, True]
    assert mask.index.equals(frame.index)
    assert matching(people.head(0), "kind == 'person'", COLUMNS).empty


def test_the_example_catalogs_rules_mean_what_they_did_under_pandas_query() -> None:
    """The old implementation, on trusted text only: identical matches for every rule."""
    catalog = load_catalog(EXAMPLE_CATALOG)
    identities = catalog.identities
    rules = [p.population_rule for p in catalog.packages]
    assert len(rules) == 5 and all(rules)
    rules += ["department in ['Finance', 'HR Ops'] and not kind == 'service'",
              "(department == 'Finance') | (department == 'IT Support') & (active == True)",
              "~(department == 'Sales') & kind != 'service' & active != False",
              "department not in ['Finance'] or location == 'London'"]
    for rule in rules:
        expected = identities.query(rule, engine="python").index
        got = identities.index[matching(identities, rule, IDENTITY_COLUMNS)]
        assert got.equals(expected), rule
        assert len(got) > 0, rule


@pytest.mark.parametrize(("text", "position", "message"), [
    ("departmnt == 'HR Ops'", 1, "unknown column 'departmnt' (allowed: id, department"),
    ("department == 'a' and kindd == 'x'", 23, "unknown column 'kindd'"),
    ("department == kind", 15, "found name 'kind'"),
    ("'Finance' == department", 1, "expected a column name, found string 'Finance'"),
    ("department", 11, "expected a comparison"),
    ("department = 'a'", 12, "'=' is not a comparison (use '==')"),
    ("department == 'a' == 'b'", 19, "chained comparisons are not supported"),
    ("department === 'a'", 14, "'=' is not a comparison"),
    ("department == 'abc", 15, "unterminated string"),
    ("department == 'a\\n'", 17, "unsupported escape '\\n'"),
    ("department == 1.5.3", 18, "'.' is not allowed"),
    ("level == 5abc", 10, "'5abc' is not a number or a column name"),
    ("level == 99999999999999999999", 10, "number out of range"),
    ("level == - 5", 10, "arithmetic ('-') is not allowed"),
    ("level == 2 * 3", 12, "arithmetic ('*') is not allowed"),
    ("department in 'Finance'", 15, "expected '[' to start the list after 'in'"),
    ("department in ('a', 'b')", 15, "expected '[' to start the list"),
    ("department in ['a',]", 20, "expected a value in the list"),
    ("department in ['a' 'b']", 20, "expected ',' or ']' in the list"),
    ("department in ['a'", 19, "expected ',' or ']' in the list, found the end of the rule"),
    ("(department == 'a'", 19, "expected ')' to close the '(' at position 1"),
    ("department == 'a')", 18, "expected 'and', 'or' or the end of the rule, found ')'"),
    ("department == 'a' and", 22, "expected a column name, found the end of the rule"),
    ("department == 'a' and or kind == 'b'", 23, "expected a column name, found 'or'"),
    ("not", 4, "expected a column name"),
    ("()", 2, "expected a column name, found ')'"),
    ("department == None", 15, "found name 'None'"),
    ("département == 'a'", 2, "unexpected character 'é'"),
    ("department\u00a0== 'a'", 11, "unexpected character '\\xa0'"),
    ("department is 'a'", 12, "expected a comparison"),
    ("department == 'a' && kind == 'b'", 20, "expected a column name, found '&'"),
])
def test_mistakes_name_the_position_and_the_problem(text: str, position: int,
                                                    message: str) -> None:
    with pytest.raises(RuleError) as err:
        parse_rule(text, COLUMNS)
    assert err.value.position == position, str(err.value)
    assert message in str(err.value)
    assert str(err.value).endswith(f"at position {position}")


@pytest.mark.parametrize(("text", "message"), [
    ("", "the rule is empty"),
    ("   \n ", "the rule is empty"),
    ("x" * (MAX_RULE_LENGTH + 1), "the rule is 2,001 characters long (at most 2,000"),
    ("(" * (MAX_DEPTH + 1) + "kind == 'a'" + ")" * (MAX_DEPTH + 1), "nested too deeply"),
    ("not " * (MAX_DEPTH + 1) + "kind == 'a'", "nested too deeply"),
    ("level in [" + ",".join(["1"] * (MAX_LIST_ITEMS + 1)) + "]", "more than 500 values"),
])
def test_limits(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=re.escape(message)):
        parse_rule(text, COLUMNS)


def test_within_the_limits_is_fine() -> None:
    deep = "(" * MAX_DEPTH + "kind == 'a'" + ")" * MAX_DEPTH
    assert parse_rule(deep, COLUMNS) == eq(K, "a")
    assert parse_rule("not " * MAX_DEPTH + "kind == 'a'", COLUMNS) is not None
    assert len(parse_rule("level in [" + ",".join(["1"] * MAX_LIST_ITEMS) + "]",
                          COLUMNS).values) == MAX_LIST_ITEMS
    long = " or ".join(["kind == 'a'"] * 130)
    assert len(long) <= MAX_RULE_LENGTH and len(parse_rule(long, COLUMNS).operands) == 130


def test_a_rule_must_be_text() -> None:
    for value in (5, ["kind == 'a'"], None, b"kind == 'a'"):
        with pytest.raises(RuleError, match="a rule must be text"):
            parse_rule(value, COLUMNS)  # type: ignore[arg-type]


def test_comparisons_that_do_not_fit_the_data_are_rule_errors(people: pd.DataFrame) -> None:
    with pytest.raises(RuleError, match=r"cannot compare column 'department' .* with 5"):
        matching(people, "department < 5", COLUMNS)
    with pytest.raises(RuleError, match="cannot compare column 'active'"):
        matching(people, "active >= 'x'", COLUMNS)
    with pytest.raises(RuleError, match="column 'level' is not in the data"):
        matching(people.drop(columns="level"), "level == 1", COLUMNS)
    # equality across types is simply false, as in pandas
    assert not matching(people, "department == 5 or active == 'true'", COLUMNS).any()


# ------------------------------------------------------------------ nothing runs

INJECTIONS = [
    "@pd.io.common.os.system('touch CANARY')",
    "@os.system('touch CANARY')",
    "__import__('os').system('touch CANARY')",
    "department == __import__('os').system('touch CANARY')",
    "department.__class__",
    "department.str.startswith('x')",
    "department == department.__class__.__mro__[1].__subclasses__()",
    "`department` == 'a'",
    "[c for c in department]",
    "department in [c for c in 'CANARY']",
    "lambda: 1",
    "department == open('CANARY', 'w')",
    "open('CANARY', 'w')",
    "(department == 'a') if True else 1",
    "department == 'x' + 'y'",
    "department == 'a'; import os",
    "department == 'a' or exec('open(\"CANARY\", \"w\")')",
    "department == 'a' or eval('1')",
    "department == {'a': 1}",
    "department[0] == 'a'",
    "department == 'a' and (x := 1)",
    "department == 'a' # comment",
    "department == b'a'",
    "department == f'{open(\"CANARY\", \"w\")}'",
    "department == 'a' \\\n or 1",
    "__builtins__ == 1",
    "id == 1 or __class__ == 1",
]


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def _battery(canary: Path) -> list[str]:
    return [*[r.replace("CANARY", str(canary)) for r in INJECTIONS],
            "department == '" + "x" * 1_000_000 + "'",  # 1 MB
            "(" * 10_000 + "department == 'a'" + ")" * 10_000,
            "department in [" + ", ".join(["'a'"] * 100_000) + "]",
            "not " * 10_000 + "department == 'a'"]


def test_injections_are_rule_errors_and_nothing_runs(canary: Path, people: pd.DataFrame) -> None:
    for text in _battery(canary):
        with pytest.raises(RuleError):
            parse_rule(text, IDENTITY_COLUMNS)
        with pytest.raises(RuleError):
            matching(people, text, COLUMNS)
        assert not canary.exists(), text[:80]


def test_coverage_never_runs_a_rule(canary: Path, people: pd.DataFrame) -> None:
    identities = people.rename(columns={"level": "title"}).astype({"title": str})
    assert coverage_of("p", {"ann"}, "department == 'Finance'", identities).population == 1
    for text in _battery(canary)[:len(INJECTIONS)]:
        with pytest.raises(RuleError):
            coverage_of("p", {"ann"}, text, identities)
        assert not canary.exists(), text


def _catalog_with_rule(tmp_path: Path, rule: str) -> tuple[Path, int]:
    """A copy of the example catalog with the service desk's rule replaced; (root, line)."""
    root = tmp_path / "catalog"
    shutil.copytree(EXAMPLE_CATALOG, root)
    old = "population_rule: \"department == 'IT Support'\""
    text = (root / "packages.yaml").read_text()
    assert text.count(old) == 1
    quoted = '"' + rule.replace("\\", "\\\\").replace('"', '\\"') + '"'
    text = text.replace(old, f"population_rule: {quoted}")
    (root / "packages.yaml").write_text(text)
    line = next(n for n, ln in enumerate(text.splitlines(), 1) if quoted in ln)
    return root, line


@pytest.mark.parametrize("rule", [
    "@pd.io.common.os.system('touch CANARY')",
    "department == @pd.io.common.os.system('touch CANARY')",
    "__import__('os').system('touch CANARY')",
    "department == open('CANARY', 'w').name",
])
def test_catalog_validate_reports_an_injected_rule_and_runs_nothing(
        tmp_path: Path, canary: Path, rule: str) -> None:
    root, line = _catalog_with_rule(tmp_path, rule.replace("CANARY", str(canary)))
    field = "packages[service-desk-resolver].population_rule"

    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    assert not canary.exists()
    [problem] = err.value.problems
    assert (problem.file, problem.line, problem.field) == ("packages.yaml", line, field)
    assert problem.message.startswith("not a valid rule over identities.csv columns: ")
    assert "at position " in problem.message

    result = CliRunner().invoke(app, ["catalog", "validate", str(root)],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert not canary.exists()
    assert "1 problem(s); nothing was written" in result.output
    row = next(ln for ln in result.output.splitlines() if field in ln)
    assert "packages.yaml" in row and f" {line} " in row


def test_catalog_validate_reports_a_rule_that_does_not_fit_the_identities(tmp_path) -> None:
    root, line = _catalog_with_rule(tmp_path, "department < 5 or active == true")
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    [problem] = err.value.problems
    assert problem.line == line and "cannot compare column 'department'" in problem.message


def test_catalog_rule_that_is_not_text_is_a_problem(tmp_path) -> None:
    root = tmp_path / "catalog"
    shutil.copytree(EXAMPLE_CATALOG, root)
    text = (root / "packages.yaml").read_text().replace(
        "population_rule: \"department == 'IT Support'\"",
        "population_rule: [\"department == 'IT Support'\"]")
    (root / "packages.yaml").write_text(text)
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(root)
    [problem] = err.value.problems
    assert problem.field.endswith("population_rule")
    assert "a rule must be text, not list" in problem.message


# ------------------------------------------------------------------ properties

VOCABULARY = [
    *COLUMNS, "departmnt", "__class__", "os", "system", "open", "for", "lambda", "if", "None",
    "and", "or", "not", "in", "&", "|", "~", "true", "false", "True", "False",
    "==", "!=", "<", "<=", ">", ">=", "=", "!", "(", ")", "[", "]", ",", ".", "@", "`", ":",
    "'Finance'", '"HR Ops"', "'", '"', "'it\\'s'", "'\\x'", "0", "-1", "2.5", "1.", "-", "+",
    "99999999999999999999", "\\", "#", ";", "{", "}", "\n", "\t", "é",
]


def _parses_or_rule_error(text: str, frame: pd.DataFrame) -> None:
    try:
        rule = parse_rule(text, COLUMNS)
    except RuleError:
        return
    try:
        mask = evaluate(rule, frame)
    except RuleError:
        return
    assert mask.dtype == bool and len(mask) == len(frame)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_rule_error(text: str) -> None:
    _parses_or_rule_error(text, _frame())


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(VOCABULARY), max_size=30),
       st.sampled_from([" ", ""]))
def test_any_token_soup_parses_or_is_a_rule_error(tokens: list[str], sep: str) -> None:
    _parses_or_rule_error(sep.join(tokens), _frame())


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c", "d"],
                         "department": ["Finance", None, "HR Ops", "it's"],
                         "kind": ["person", "service", "person", "person"],
                         "active": [True, False, True, True], "level": [1, 2, 3, 4]})


# Well-typed rules over _frame(): rendered to text, parsed back to the same tree, and
# matching exactly the rows a plain row-by-row reading of the rule picks.
_STRINGS = st.sampled_from(["Finance", "HR Ops", "it's", 'say "x"', "", "person", "service",
                            "back\\slash", "Zz"])
_LEAVES = st.one_of(
    st.builds(Compare, st.sampled_from(["department", "kind"]), st.sampled_from(
        ["==", "!=", "<", "<=", ">", ">="]), _STRINGS),
    st.builds(Compare, st.just("level"), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
              st.integers(-2, 6)),
    st.builds(Compare, st.just("active"), st.sampled_from(["==", "!="]), st.booleans()),
    st.builds(In, st.sampled_from(["department", "kind"]),
              st.lists(_STRINGS, max_size=4).map(tuple), st.booleans()),
    st.builds(In, st.just("level"), st.lists(st.integers(-2, 6), max_size=4).map(tuple),
              st.booleans()),
)
_RULES = st.recursive(_LEAVES, lambda inner: st.one_of(
    st.builds(Not, inner),
    st.builds(And, st.lists(inner, min_size=2, max_size=3).map(tuple)),
    st.builds(Or, st.lists(inner, min_size=2, max_size=3).map(tuple))), max_leaves=12)


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def _render(rule: object) -> str:
    def operand(r: object) -> str:
        return f"({_render(r)})" if isinstance(r, And | Or) else _render(r)

    if isinstance(rule, Compare):
        return f"{rule.column} {rule.op} {_literal(rule.value)}"
    if isinstance(rule, In):
        values = ", ".join(_literal(v) for v in rule.values)
        return f"{rule.column} {'not in' if rule.negated else 'in'} [{values}]"
    if isinstance(rule, Not):
        return "not " + operand(rule.operand)
    joiner = " and " if isinstance(rule, And) else " or "
    return joiner.join(operand(r) for r in rule.operands)  # type: ignore[attr-defined]


def _depth(rule: object) -> int:
    if isinstance(rule, Not):
        return 1 + _depth(rule.operand) + isinstance(rule.operand, And | Or)
    if isinstance(rule, And | Or):
        return max(_depth(r) + isinstance(r, And | Or) for r in rule.operands)
    return 0


def _reference(rule: object, row: dict) -> bool:
    if isinstance(rule, Compare):
        value = row[rule.column]
        if value is None:
            return rule.op == "!="
        return {"==": value == rule.value, "!=": value != rule.value,
                "<": value < rule.value, "<=": value <= rule.value,
                ">": value > rule.value, ">=": value >= rule.value}[rule.op]
    if isinstance(rule, In):
        return (row[rule.column] in rule.values) != rule.negated
    if isinstance(rule, Not):
        return not _reference(rule.operand, row)
    if isinstance(rule, And):
        return all(_reference(r, row) for r in rule.operands)
    return any(_reference(r, row) for r in rule.operands)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(_RULES)
def test_rendered_rules_parse_back_and_match_a_row_by_row_reading(rule: object) -> None:
    text = _render(rule)
    assume(len(text) <= MAX_RULE_LENGTH and _depth(rule) <= MAX_DEPTH)
    assert parse_rule(text, COLUMNS) == rule, text
    frame = _frame()
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    expected = [r["id"] for r in rows if _reference(rule, r)]
    assert frame.loc[matching(frame, text, COLUMNS), "id"].tolist() == expected, text
