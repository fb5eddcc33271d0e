"""Population rules: a small language for "which identities belong to this role".

A package's `population_rule` in packages.yaml says who may hold the role, for example
`department == 'Finance' and kind == 'person'`. Rules come from catalog files, so they are
never handed to Python or pandas to evaluate: this module tokenizes and parses them into a
small typed tree and evaluates that tree as a vectorised pandas mask.

Grammar (precedence from loosest to tightest: or, and, not)::

    rule       := or_expr
    or_expr    := and_expr ( ("or" | "|") and_expr )*
    and_expr   := not_expr ( ("and" | "&") not_expr )*
    not_expr   := ("not" | "~") not_expr | primary
    primary    := "(" or_expr ")" | comparison
    comparison := column ( OP literal | "in" list | "not" "in" list )
    OP         := "==" | "!=" | "<" | "<=" | ">" | ">="
    list       := "[" [ literal ( "," literal )* ] "]"
    literal    := 'single' or "double" quoted string | number | true | false
    number     := -?[0-9]+(.[0-9]+)?  (a 64-bit integer, or a finite decimal)
    column     := [A-Za-z_][A-Za-z0-9_]*, one of the columns the caller allows

`&`, `|` and `~` are accepted as spellings of `and`, `or` and `not` (pandas' query syntax,
which rules used to be; pandas gives `&` and `|` the precedence of `and` and `or` too), and
`True`/`False` as spellings of `true`/`false`. Strings may escape `\\\\`, `\\'` and `\\"`.
Nothing else is accepted: no attribute access, calls, `@` variables, backticks, arithmetic,
dunder names or comprehensions. Every mistake is a `RuleError` naming the 1-based position
in the rule text. Rules are capped at MAX_RULE_LENGTH characters, MAX_DEPTH levels of
nesting (parentheses and `not`) and MAX_LIST_ITEMS values per list.
"""

from __future__ import annotations

import keyword
import math
import operator
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import reduce
from typing import Any, TypeAlias

import pandas as pd

MAX_RULE_LENGTH = 2_000
MAX_DEPTH = 32
MAX_LIST_ITEMS = 500
_INT64 = 2**63

Value: TypeAlias = str | int | float | bool


class RuleError(ValueError):
    """A population rule that is not in the rule language (or cannot apply to the data)."""

    def __init__(self, reason: str, position: int | None = None) -> None:
        self.reason = reason
        self.position = position  # 1-based character position in the rule text
        super().__init__(reason if position is None else f"{reason} at position {position}")


# ------------------------------------------------------------------ the tree


@dataclass(frozen=True)
class Compare:
    """`column OP value`."""

    column: str
    op: str
    value: Value


@dataclass(frozen=True)
class In:
    """`column in [values]`, or `column not in [values]` when negated."""

    column: str
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class Not:
    operand: Rule


@dataclass(frozen=True)
class And:
    operands: tuple[Rule, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Rule, ...]


Rule: TypeAlias = Compare | In | Not | And | Or


# ------------------------------------------------------------------ tokens

COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
_KEYWORDS = {"and": "and", "or": "or", "not": "not", "in": "in", "true": "true",
             "false": "false", "True": "true", "False": "false"}
_ALIASES = {"&": "and", "|": "or", "~": "not"}
_PUNCTUATION = {"(": "(", ")": ")", "[": "[", "]": "]", ",": ","}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_SPACE = " \t\r\n"
_ESCAPES = {"\\": "\\", "'": "'", '"': '"'}
_FORBIDDEN = {
    ".": "'.' is not allowed (no attribute access)",
    "@": "'@' is not allowed (rules cannot refer to variables)",
    "`": "backticks are not allowed (columns are bare names)",
    "=": "'=' is not a comparison (use '==')",
    "!": "'!' is not allowed (use 'not' or '!=')",
    **{c: f"arithmetic ('{c}') is not allowed" for c in "+-*/%^"},
    **{c: f"'{c}' is not allowed" for c in "{}:;#$?\\"},
}


@dataclass(frozen=True)
class _Token:
    kind: str  # name, keyword, string, number, op, punct, end, error
    value: Any
    pos: int  # 1-based
    text: str = ""

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the rule"
        if self.kind == "string":
            return f"string {self.value!r}"
        if self.kind == "number":
            return f"number {self.text}"
        if self.kind == "name":
            return f"name {self.value!r}"
        return repr(self.text)


def _tokens(text: str) -> list[_Token]:
    """The rule's tokens; a bad character ends the list with an `error` token."""
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        pos = i + 1
        if c in _SPACE:
            i += 1
        elif c in "'\"":
            value, i, err = _string(text, i)
            if err:
                out.append(_Token("error", err, i + 1))
                return out
            out.append(_Token("string", value, pos, text[pos - 1:i]))
        elif m := _NUMBER.match(text, i):
            word = m.group()
            if tail := _NAME.match(text, m.end()):
                out.append(_Token("error", f"{text[i:tail.end()]!r} is not a number or a "
                                  "column name", pos))
                return out
            number: int | float = float(word) if "." in word else int(word)
            if (isinstance(number, int) and not -_INT64 <= number < _INT64) or (
                    isinstance(number, float) and not math.isfinite(number)):
                out.append(_Token("error", "number out of range", pos))
                return out
            out.append(_Token("number", number, pos, word))
            i = m.end()
        elif m := _NAME.match(text, i):
            word = m.group()
            if m.end() < n and text[m.end()].isalnum():  # a non-ASCII letter or digit
                out.append(_Token("error", f"unexpected character {text[m.end()]!r} (names are "
                                  "ASCII letters, digits and '_')", m.end() + 1))
                return out
            if word in _KEYWORDS:
                out.append(_Token("keyword", _KEYWORDS[word], pos, word))
            else:
                out.append(_Token("name", word, pos, word))
            i = m.end()
        elif (op := text[i:i + 2]) in COMPARISONS or (op := c) in COMPARISONS:
            out.append(_Token("op", op, pos, op))
            i += len(op)
        elif c in _ALIASES:
            out.append(_Token("keyword", _ALIASES[c], pos, c))
            i += 1
        elif c in _PUNCTUATION:
            out.append(_Token("punct", c, pos, c))
            i += 1
        else:
            reason = _FORBIDDEN.get(c) or f"unexpected character {c!r}"
            out.append(_Token("error", reason, pos))
            return out
    out.append(_Token("end", None, n + 1))
    return out


def _string(text: str, start: int) -> tuple[str, int, str | None]:
    """The quoted string at `start`: (value, index after it, None) or ("", index of the
    mistake, error)."""
    quote, i = text[start], start + 1
    parts: list[str] = []
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(parts), i + 1, None
        if c == "\\":
            nxt = text[i + 1:i + 2]
            if nxt not in _ESCAPES:
                return "", i, (f"unsupported escape '\\{nxt}' in a string "
                               "(only \\\\, \\' and \\\" are allowed)")
            parts.append(_ESCAPES[nxt])
            i += 2
        else:
            parts.append(c)
            i += 1
    return "", start, "unterminated string"


# ------------------------------------------------------------------ parsing

_PYTHON_WORDS = frozenset(keyword.kwlist)


class _Parser:
    def __init__(self, text: str, columns: Collection[str]) -> None:
        self.columns = tuple(columns)
        self.allowed = frozenset(self.columns)
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> _Token:
        tok = self.peek()
        if tok.kind == "error":
            raise RuleError(tok.value, tok.pos)
        self.i += 1
        return tok

    def fail(self, expected: str, tok: _Token | None = None, hint: str = "") -> RuleError:
        tok = tok or self.peek()
        if tok.kind == "error":
            return RuleError(tok.value, tok.pos)
        return RuleError(f"expected {expected}, found {tok.describe()}{hint}", tok.pos)

    def at(self, kind: str, value: str) -> bool:
        tok = self.peek()
        return tok.kind == kind and tok.value == value

    def rule(self) -> Rule:
        if self.peek().kind == "end":
            raise RuleError("the rule is empty")
        node = self.or_expr()
        tok = self.peek()
        if tok.kind != "end":
            hint = ""
            if tok.kind == "op":
                hint = " (chained comparisons are not supported; use 'and')"
            elif tok.kind == "name" and tok.value in _PYTHON_WORDS:
                hint = f" ('{tok.value}' is not part of the rule language)"
            raise self.fail("'and', 'or' or the end of the rule", tok, hint)
        return node

    def or_expr(self) -> Rule:
        parts = [self.and_expr()]
        while self.at("keyword", "or"):
            self.next()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self) -> Rule:
        parts = [self.not_expr()]
        while self.at("keyword", "and"):
            self.next()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def nest(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleError(f"the rule is nested too deeply (more than {MAX_DEPTH} levels of "
                            "parentheses and 'not')", tok.pos)

    def not_expr(self) -> Rule:
        if self.at("keyword", "not"):
            tok = self.next()
            self.nest(tok)
            node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Rule:
        if self.at("punct", "("):
            tok = self.next()
            self.nest(tok)
            node = self.or_expr()
            if not self.at("punct", ")"):
                raise self.fail(f"')' to close the '(' at position {tok.pos}")
            self.next()
            self.depth -= 1
            return node
        return self.comparison()

    def column(self) -> str:
        tok = self.peek()
        if tok.kind == "punct" and tok.value == "[":
            raise RuleError("'[' is only allowed for the list after 'in' or 'not in'", tok.pos)
        if tok.kind != "name":
            raise self.fail("a column name", tok)
        name = tok.value
        if name in _PYTHON_WORDS:
            raise RuleError(f"'{name}' is not part of the rule language", tok.pos)
        if name.startswith("__"):
            raise RuleError(f"names starting with '__' are not allowed ({name!r})", tok.pos)
        after = self.peek(1)
        if after.kind == "punct" and after.value == "(":
            raise RuleError(f"function calls are not allowed ({name!r} followed by '(')",
                            tok.pos)
        if name not in self.allowed:
            raise RuleError(f"unknown column {name!r} (allowed: {', '.join(self.columns)})",
                            tok.pos)
        self.next()
        return str(name)

    def comparison(self) -> Rule:
        column = self.column()
        tok = self.peek()
        if tok.kind == "op":
            self.next()
            return Compare(column, tok.value, self.literal(f"a value after '{tok.value}'"))
        if tok.kind == "keyword" and tok.value == "in":
            self.next()
            return In(column, self.values())
        if tok.kind == "keyword" and tok.value == "not" and (
                self.peek(1).kind == "keyword" and self.peek(1).value == "in"):
            self.next()
            self.next()
            return In(column, self.values(), negated=True)
        raise self.fail(f"a comparison ({', '.join(COMPARISONS)}, 'in' or 'not in') "
                        f"after {column!r}")

    def literal(self, expected: str) -> Value:
        tok = self.peek()
        if tok.kind in ("string", "number"):
            self.next()
            value: Value = tok.value
            return value
        if tok.kind == "keyword" and tok.value in ("true", "false"):
            self.next()
            return bool(tok.value == "true")
        if tok.kind == "name":
            raise RuleError(f"expected {expected}, found name {tok.value!r} (a value must be a "
                            "quoted string, a number, true or false)", tok.pos)
        raise self.fail(expected + " (a quoted string, a number, true or false)", tok)

    def values(self) -> tuple[Value, ...]:
        start = self.peek()
        if not (start.kind == "punct" and start.value == "["):
            raise self.fail("'[' to start the list after 'in'")
        self.next()
        items: list[Value] = []
        if self.at("punct", "]"):
            self.next()
            return ()
        while True:
            items.append(self.literal("a value in the list"))
            if len(items) > MAX_LIST_ITEMS:
                raise RuleError(f"the list has more than {MAX_LIST_ITEMS} values",
                                start.pos)
            if self.at("punct", "]"):
                self.next()
                return tuple(items)
            if not self.at("punct", ","):
                tok = self.peek()
                hint = (" (comprehensions are not allowed)"
                        if tok.kind == "name" and tok.value == "for" else "")
                raise self.fail("',' or ']' in the list", tok, hint)
            self.next()


def parse_rule(text: str, columns: Collection[str]) -> Rule:
    """Parse `text` into a Rule over `columns`; raise RuleError saying where and what is wrong."""
    if not isinstance(text, str):
        raise RuleError(f"a rule must be text, not {type(text).__name__}")
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"the rule is {len(text):,} characters long "
                        f"(at most {MAX_RULE_LENGTH:,} are allowed)")
    return _Parser(text, columns).rule()


# ------------------------------------------------------------------ evaluating

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge}


def _as_mask(mask: pd.Series) -> pd.Series:
    if mask.dtype != bool:  # nullable booleans: a missing value does not match
        mask = mask.astype("boolean").fillna(False).astype(bool)
    return mask


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        raise RuleError(f"column {name!r} is not in the data")
    return frame[name]


def _evaluate(rule: Rule, frame: pd.DataFrame) -> pd.Series:
    if isinstance(rule, Compare):
        series = _column(frame, rule.column)
        try:
            result = _OPERATORS[rule.op](series, rule.value)
        except (TypeError, ValueError, OverflowError):
            raise RuleError(f"cannot compare column {rule.column!r} ({series.dtype}) with "
                            f"{rule.value!r} using {rule.op!r}") from None
        return _as_mask(result)
    if isinstance(rule, In):
        series = _column(frame, rule.column)
        try:
            found = _as_mask(series.isin(list(rule.values)))
        except (TypeError, ValueError, OverflowError):
            raise RuleError(f"cannot look up column {rule.column!r} ({series.dtype}) in "
                            f"{list(rule.values)!r}") from None
        return ~found if rule.negated else found
    if isinstance(rule, Not):
        return ~_evaluate(rule.operand, frame)
    if isinstance(rule, And):
        return reduce(operator.and_, (_evaluate(r, frame) for r in rule.operands))
    if isinstance(rule, Or):
        return reduce(operator.or_, (_evaluate(r, frame) for r in rule.operands))
    raise TypeError(f"not a rule: {rule!r}")


def evaluate(rule: Rule, frame: pd.DataFrame) -> pd.Series:
    """A boolean Series (frame's index): which rows match `rule`. Missing values never match
    a comparison or a list (so they do match `!=` and `not in`)."""
    return _evaluate(rule, frame)


def matching(frame: pd.DataFrame, text: str, columns: Collection[str]) -> pd.Series:
    """Parse `text` against `columns` and evaluate it over `frame`."""
    return evaluate(parse_rule(text, columns), frame)
