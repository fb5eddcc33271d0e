"""Catalog loading and validation: role packages in YAML, identities and memberships in CSV.

A catalog directory holds:

    packages.yaml     waves, separation-of-duties rules and role packages
    identities.csv    id, display_name, email, department, business_unit, title, location,
                      kind, active, slack_id, manager
    entitlements.csv  key, name, system, description, privileged
    memberships.csv   package, identity
    sandbox_seed.csv  identity, entitlement (optional: the sandbox target's starting grants)

Everything is hostile input. `load_catalog` reads and checks everything and raises
CatalogInvalid listing every problem (file, line, field, message), one per root cause; it
never touches the store. `write_catalog` then writes a valid catalog in one transaction.

- Files: size caps (safe_files.Limits), a file and not a directory, UTF-8 text, else one
  problem for the file.
- CSV: the header first (every documented column must be there; a missing one is one
  problem naming it and no row of that file is looked at), then the rows (safe_csv).
- packages.yaml: the safe loader (safe_yaml: no alias bombs, no duplicate keys, one line for
  a syntax error), then the schema (catalog_schema: strict types and bounds), then the rules
  between items and files below (`_check_packages`).

A check that needs another file's content is skipped while that file is unusable (an
unreadable identities.csv does not also make every membership "unknown").
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import ConfigDict, TypeAdapter, ValidationError
from sqlalchemy import delete, insert
from sqlmodel import Session, select

from wavekit.adapters import catalog_schema as schema
from wavekit.adapters.problems import InputInvalid, Problem, capped, show
from wavekit.adapters.safe_csv import CsvRefused, Table, read_table
from wavekit.adapters.safe_files import FileRefused, Limits, read_text
from wavekit.adapters.safe_yaml import LineDict, LineList, SafeLineLoader, YamlRefused, load_yaml
from wavekit.adapters.store import audit
from wavekit.adapters.store.models import (
    Entitlement,
    Identity,
    PackageDependency,
    PackageEntitlement,
    PackageMember,
    RolePackage,
    SodRule,
    Wave,
)
from wavekit.domain import rules
from wavekit.domain.states import PackageState

__all__ = ["Catalog", "CatalogInvalid", "Limits", "PackageSpec", "Problem", "load_catalog",
           "write_catalog"]

RISKS = schema.RISKS
DRILLS = schema.DRILLS
STATES = tuple(s.value for s in PackageState)
IDENTITY_COLUMNS = ("id", "display_name", "email", "department", "business_unit", "title",
                    "location", "kind", "active", "slack_id", "manager")
ENTITLEMENT_COLUMNS = ("key", "name", "system", "description", "privileged")
MEMBERSHIP_COLUMNS = ("package", "identity")
SEED_COLUMNS = ("identity", "entitlement")
TRUE, FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n", ""}
# At most this many rows are listed for one check of one file; then one line says how many
# more have the same problem.
MAX_ROWS_PER_CHECK = 20
MAX_CYCLES = 20


class CatalogInvalid(InputInvalid):
    """The catalog has problems; nothing was written."""

    what = "the catalog"


@dataclass
class PackageSpec:
    key: str
    name: str
    owner_name: str
    description: str = ""
    owner_slack_id: str | None = None
    owner_email: str | None = None
    delegates: list[dict[str, str]] = field(default_factory=list)
    business_unit: str | None = None
    risk: str = "low"
    approvals_required: int | None = None
    approvals_from: list[str] = field(default_factory=list)
    security_approvers: list[dict[str, str]] = field(default_factory=list)
    wave: int | None = None
    release_date: dt.date | None = None
    release_tentative: bool = False
    watch_days: int = 14
    telemetry_focus: str = ""
    health: dict[str, Any] = field(default_factory=dict)
    fallback_plan: str = ""
    fallback_drill: str = "pending"
    rollback_only: bool = False
    retire_in_launch_window: bool = False
    population_rule: str | None = None
    guards: list[str] = field(default_factory=list)
    maintenance_note: str = ""
    rollout: dict[str, Any] | None = None  # canary steps (wavekit.domain.cohorts)
    state: str = PackageState.SCHEDULED.value
    entitlements: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    retires: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)


@dataclass
class Catalog:
    """A validated catalog, ready to write to the store."""

    identities: pd.DataFrame
    entitlements: pd.DataFrame
    packages: list[PackageSpec]
    waves: list[dict[str, Any]] = field(default_factory=list)
    sod_rules: list[dict[str, Any]] = field(default_factory=list)

    def package(self, key: str) -> PackageSpec:
        return next(p for p in self.packages if p.key == key)


# The line-numbering YAML loader (kept under its old names for callers such as benchmarks).
_LineLoader = SafeLineLoader
_LineDict = LineDict


def _line(obj: Any, key: str | None = None) -> int | None:
    if isinstance(obj, LineDict):
        return obj.key_lines.get(key, obj.line) if key else obj.line
    return None


def _item_lines(raw: Any, fld: str) -> list[int | None]:
    """The line of each item of a list field (the field's line for a single value)."""
    value = raw.get(fld) if isinstance(raw, dict) else None
    if isinstance(value, LineList):
        return list(value.lines)
    return [_line(raw, fld)] * (len(value) if isinstance(value, list) else 1)


# ------------------------------------------------------------------ CSV tables


def _read_csv(root: Path, name: str, columns: tuple[str, ...], limits: Limits,
              problems: list[Problem], *, optional: bool = False) -> Table | None:
    """The table, or None (its problems appended) when the file cannot be used."""
    path = root / name
    if optional and not path.exists() and not path.is_symlink():
        return None
    try:
        table = read_table(path, columns, columns, limits.csv_bytes)
    except CsvRefused as exc:
        problems.extend(Problem(name, line, fld, message) for line, fld, message in exc.problems)
        return None
    problems.extend(_capped(name, table.problems))
    return table


def _capped(file: str, found: Iterable[tuple[int | None, str, str]]) -> list[Problem]:
    return capped(file, found, MAX_ROWS_PER_CHECK, "column")


def _flag(problems: list[Problem], file: str, rows: pd.DataFrame, fld: str, message: str
          ) -> None:
    """One Problem per row (`{value}` is the row's field, shown safely), at most
    MAX_ROWS_PER_CHECK of them and then one saying how many more."""
    n = len(rows)
    if not n:
        return
    head = rows.iloc[:MAX_ROWS_PER_CHECK]
    values = head[fld] if fld in head else head["_line"]
    problems.extend(Problem(file, int(line), fld, message.format(value=show(value)))
                    for line, value in zip(head["_line"], values, strict=True))
    if n > MAX_ROWS_PER_CHECK:
        problems.append(Problem(file, int(rows["_line"].iloc[MAX_ROWS_PER_CHECK]), fld,
                                f"... and {n - MAX_ROWS_PER_CHECK:,} more rows with this "
                                f"problem: " + message.format(value="...")))


def _check_identities(table: Table, problems: list[Problem]) -> pd.DataFrame:
    f = "identities.csv"
    df, ok = table.frame, table.ok
    _flag(problems, f, ok[ok["id"] == ""], "id", "identity id is empty")
    _flag(problems, f, ok[ok["id"].str.contains(r"\s", regex=True)], "id",
          "identity id {value} contains a space")
    _flag(problems, f, ok[ok["display_name"] == ""], "display_name", "display name is empty")
    dup = df[(df["id"] != "") & df.duplicated("id", keep="first")]
    _flag(problems, f, dup, "id", "duplicate identity id {value}")
    active = ok["active"].str.lower()
    _flag(problems, f, ok[~active.isin(TRUE | FALSE)], "active", "{value} is not true/false")
    _flag(problems, f, ok[~ok["kind"].isin(["", "person", "service"])], "kind",
          "{value} is not person or service")
    email = ok["email"]
    bad_email = (email != "") & ~email.str.fullmatch(schema.EMAIL_RE.pattern)
    _flag(problems, f, ok[bad_email], "email", "{value} is not an email address")
    slack = ok["slack_id"]
    bad_slack = (slack != "") & ~slack.str.fullmatch(schema.SLACK_ID_RE.pattern)
    _flag(problems, f, ok[bad_slack], "slack_id",
          "{value} is not a Slack id (2 to 32 capital letters and digits)")
    out = df.drop(columns="_ok")
    flag = out["active"].str.lower()
    out["active"] = ~flag.isin(FALSE - {""}) | (flag == "")
    out["kind"] = out["kind"].replace("", "person")
    return out


def _check_entitlements(table: Table, problems: list[Problem]) -> pd.DataFrame:
    f = "entitlements.csv"
    df, ok = table.frame, table.ok
    _flag(problems, f, ok[ok["key"] == ""], "key", "entitlement key is empty")
    bad_key = (ok["key"] != "") & ~ok["key"].str.fullmatch(schema.KEY_RE.pattern)
    _flag(problems, f, ok[bad_key], "key", "{value} is not a valid entitlement key: "
          + schema._KEY_RULE)
    _flag(problems, f, df[(df["key"] != "") & df.duplicated("key", keep="first")], "key",
          "duplicate entitlement key {value}")
    _flag(problems, f, ok[(ok["name"].str.len() > schema.NAME_LEN)], "name",
          f"is longer than {schema.NAME_LEN} characters")
    priv = ok["privileged"].str.lower()
    _flag(problems, f, ok[~priv.isin(TRUE | FALSE)], "privileged", "{value} is not true/false")
    out = df.drop(columns="_ok")
    out["privileged"] = out["privileged"].str.lower().isin(TRUE)
    out["name"] = out["name"].where(out["name"] != "", out["key"])
    return out


def _needs_rows(table: Table | None, name: str, what: str, problems: list[Problem]) -> bool:
    """A table whose other checks depend on it must have rows; one problem if it has none."""
    if table is not None and not len(table.frame):
        problems.append(Problem(name, None, "file", f"has a header but no rows (a catalog "
                                f"needs at least one {what})"))
        return False
    return table is not None


# ------------------------------------------------------------------ packages.yaml


def _read_yaml(root: Path, limits: Limits, problems: list[Problem]) -> Any:
    """The parsed document, or None (one problem appended) when it cannot be used."""
    f = "packages.yaml"
    duplicates: list[YamlRefused] = []
    try:
        text = read_text(root / f, limits.yaml_bytes)
        doc = load_yaml(text, max_aliases=limits.yaml_aliases, duplicates=duplicates)
        problems.extend(Problem(f, d.line, schema.field_path(doc, d.mapping, d.key), d.reason)
                        for d in duplicates)
        if doc is None:  # nothing but blank lines and comments: a catalog of nothing
            problems.append(Problem(f, 1, "file", "is empty: it must list the role packages "
                                    "(`packages:`), with `waves:` and `sod_rules:`"))
        return doc
    except FileRefused as exc:
        problems.append(Problem(f, exc.line, "file", exc.message))
    except YamlRefused as exc:
        where = f"line {exc.line}, column {exc.column}: " if exc.line and exc.column else ""
        problems.append(Problem(f, exc.line, "yaml", f"{where}{exc.reason}"))
    return None


_STRICT = ConfigDict(strict=True)
_PARTIAL = ("key", "wave", "watch_days", "rollback_only", "health", "entitlements",
            "removes", "retires", "depends_on")


def _field_adapter(name: str) -> TypeAdapter[Any]:
    info = schema.PackageModel.model_fields[name]
    kind: Any = (Annotated[(info.annotation, *info.metadata)] if info.metadata
                 else info.annotation)
    return TypeAdapter(kind, config=_STRICT)


_FIELD_ADAPTERS = {name: _field_adapter(name) for name in _PARTIAL}


@dataclass
class _Pkg:
    """What the catalog-level rules know of one package: its valid fields (all of them when
    the package is valid, else each field that is valid on its own)."""

    key: str
    index: int
    raw: Any
    model: schema.PackageModel | None
    fields: dict[str, Any]

    @property
    def label(self) -> str:
        return f"packages[{self.key}]"

    def get(self, name: str) -> Any:
        return self.fields.get(name)

    def has(self, name: str) -> bool:
        return name in self.fields

    def at(self, name: str) -> int | None:
        return _line(self.raw, name)


def _partial(raw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _PARTIAL:
        if name not in raw:
            info = schema.PackageModel.model_fields[name]
            if not info.is_required():
                out[name] = info.get_default(call_default_factory=True)
            continue
        with contextlib.suppress(ValidationError):
            out[name] = _FIELD_ADAPTERS[name].validate_python(raw[name])
    return out


def _rule_error(identities: pd.DataFrame | None, rule: str) -> str | None:
    """Why `rule` is not a population rule over the identities.csv columns, or None.

    The rule is parsed by wavekit.domain.rules (never run as code), then evaluated over the
    identities (when identities.csv is usable) so a comparison that cannot apply to a
    column's values is reported here.
    """
    try:
        parsed = rules.parse_rule(rule, IDENTITY_COLUMNS)
        if identities is not None:
            rules.evaluate(parsed, identities)
    except rules.RuleError as exc:
        return str(exc)
    return None


def _find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path (first == last), or None. Iterative: a chain of ten
    thousand packages does not exhaust the stack."""
    color: dict[str, int] = {}
    for root in sorted(deps):
        if color.get(root):
            continue
        color[root] = 1
        path, todo = [root], [iter(deps.get(root, []))]
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                color[path.pop()] = 2
                todo.pop()
                continue
            if color.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt in deps and not color.get(nxt):
                color[nxt] = 1
                path.append(nxt)
                todo.append(iter(deps.get(nxt, [])))
    return None


def _cycles(deps: dict[str, list[str]]) -> list[list[str]]:
    """Cycles, each found once: after one is found its closing edge is set aside."""
    graph = {k: list(v) for k, v in deps.items()}
    found: list[list[str]] = []
    while len(found) < MAX_CYCLES and (cycle := _find_cycle(graph)):
        found.append(cycle)
        graph[cycle[-2]].remove(cycle[-1])
    return found


def _check_packages(pkgs: list[_Pkg], declared: dict[str, int | None],
                    entitlement_keys: set[str] | None, identities: pd.DataFrame | None,
                    problems: list[Problem]) -> None:
    """The rules between packages and the other files, on whatever is valid of each."""
    f = "packages.yaml"
    rule_errors: dict[str, str | None] = {}
    by_key = {p.key: p for p in pkgs}
    for p in pkgs:
        lists = {fld: p.get(fld) for fld in ("entitlements", "removes", "retires", "depends_on")
                 if p.has(fld)}
        for fld, items in lists.items():
            lines = _item_lines(p.raw, fld)
            seen: set[str] = set()
            for item, line in zip(items, lines, strict=False):
                if item in seen:
                    problems.append(Problem(f, line, f"{p.label}.{fld}",
                                            f"{show(item)} is listed twice"))
                seen.add(item)
                if fld == "depends_on":
                    continue
                if entitlement_keys is not None and item not in entitlement_keys:
                    problems.append(Problem(f, line, f"{p.label}.{fld}",
                                            f"unknown entitlement {show(item)}"))
        grants = set(lists.get("entitlements", ()))
        for fld in ("removes", "retires"):
            both = [e for e in lists.get(fld, ()) if e in grants]
            for ent, line in zip(lists.get(fld, ()), _item_lines(p.raw, fld), strict=False):
                if ent in both:
                    verb = "removed" if fld == "removes" else "retired"
                    problems.append(Problem(f, line, f"{p.label}.{fld}",
                                            f"{show(ent)} is both granted (entitlements) and "
                                            f"{verb} ({fld})"))
        if (p.has("entitlements") and p.has("rollback_only") and not p.get("entitlements")
                and not p.get("rollback_only")):
            problems.append(Problem(f, p.at("entitlements") or _line(p.raw),
                                    f"{p.label}.entitlements",
                                    "a package must grant at least one entitlement"))
        if p.model is not None and p.model.population_rule:
            rule = p.model.population_rule
            if rule not in rule_errors:  # many packages share a rule
                rule_errors[rule] = _rule_error(identities, rule)
            if error := rule_errors[rule]:
                problems.append(Problem(f, p.at("population_rule"), f"{p.label}.population_rule",
                                        f"not a valid rule over identities.csv columns: {error}"))
        if p.has("health") and p.has("watch_days"):
            window = p.get("watch_days") * 24
            for check, o in p.get("health").items():
                for setting in ("interval_hours", "start_after_hours"):
                    hours = getattr(o, setting, None)
                    if hours is not None and hours > window:
                        raw = p.raw.get("health", {}).get(check)
                        problems.append(Problem(
                            f, _line(raw, setting) or p.at("health"),
                            f"{p.label}.health.{check}.{setting}",
                            f"{hours:g} hours is longer than the watch window "
                            f"({p.get('watch_days')} days = {window} hours)"))

    # Dependencies: unknown, self, cycles, a later wave (or no wave) than the dependent.
    deps = {p.key: [d for d in p.get("depends_on") if d != p.key and d in declared]
            for p in pkgs if p.has("depends_on")}
    cycles = _cycles(deps)
    in_cycle = {(c[i], c[i + 1]) for c in cycles for i in range(len(c) - 1)}
    for p in pkgs:
        if not p.has("depends_on"):
            continue
        for d, line in zip(p.get("depends_on"), _item_lines(p.raw, "depends_on"), strict=False):
            where = (f, line, f"{p.label}.depends_on")
            if d == p.key:
                problems.append(Problem(*where, "a package cannot depend on itself"))
            elif d not in declared:
                problems.append(Problem(*where, f"unknown package {show(d)}"))
            elif (p.key, d) in in_cycle or d not in by_key:
                continue
            elif p.has("wave") and by_key[d].has("wave") and p.get("wave") is not None:
                dep_wave = by_key[d].get("wave")
                if dep_wave is None:
                    problems.append(Problem(*where, f"depends on {d!r}, which is in no wave "
                                            f"(it is never released, so this package would "
                                            f"wait for ever)"))
                elif dep_wave > p.get("wave"):
                    problems.append(Problem(*where, f"depends on {d!r} of wave {dep_wave}, "
                                            f"released after this package's wave "
                                            f"{p.get('wave')}"))
    for cycle in cycles:
        closer, target = cycle[-2], cycle[-1]
        p = by_key[closer]
        at = dict(zip(p.get("depends_on"), _item_lines(p.raw, "depends_on"), strict=False))
        problems.append(Problem(f, at.get(target) or p.at("depends_on"),
                                f"{p.label}.depends_on",
                                "dependency cycle: " + " -> ".join(cycle)))


def _check_named_cohorts(pkgs: list[_Pkg], memberships: pd.DataFrame,
                         problems: list[Problem]) -> None:
    """A named cohort step lists members of its package (memberships.csv), nobody else."""
    f = "packages.yaml"
    for p in pkgs:
        if p.model is None or p.model.rollout is None:
            continue
        named = [s.members for s in p.model.rollout.steps if isinstance(s.members, list)]
        if not named:
            continue
        members = set(memberships.loc[memberships["package"] == p.key, "identity"])
        for names in named:
            for name in names:
                if name not in members:
                    problems.append(Problem(f, p.at("rollout"), f"{p.label}.rollout.steps",
                                            f"{show(name)} is named in a cohort but is not a "
                                            "member of the package (memberships.csv)"))


def _packages(validated: schema.Validated, problems: list[Problem]) -> list[_Pkg]:
    """Every package with a well-formed key, first occurrence only (duplicates reported)."""
    f = "packages.yaml"
    models = {id(raw): model for model, raw in validated.packages}
    doc = validated.document
    items = doc.get("packages") if isinstance(doc, dict) else None
    out: list[_Pkg] = []
    first: dict[str, int | None] = {}
    for i, raw in enumerate(items if isinstance(items, list) else []):
        key = raw.get("key") if isinstance(raw, dict) else None
        if not isinstance(key, str) or not schema._is_key(key):
            continue
        if key in first:
            problems.append(Problem(f, _line(raw, "key"), f"packages[{key}].key",
                                    f"duplicate package key {key!r} (first at line "
                                    f"{first[key]})"))
            continue
        first[key] = _line(raw, "key")
        model = models.get(id(raw))
        fields = ({n: getattr(model, n) for n in _PARTIAL} if model is not None
                  else _partial(raw))
        out.append(_Pkg(key, i, raw, model, fields))
    return out


def _check_waves(validated: schema.Validated, problems: list[Problem]) -> list[dict[str, Any]]:
    f = "packages.yaml"
    out: list[dict[str, Any]] = []
    first: dict[int, int | None] = {}
    for w, raw in validated.waves:
        label = f"waves[{w.number}]"
        if w.number in first:
            problems.append(Problem(f, _line(raw, "number"), f"{label}.number",
                                    f"duplicate wave {w.number} (first at line "
                                    f"{first[w.number]})"))
            continue
        first[w.number] = _line(raw, "number")
        if w.window_start and w.window_end and w.window_end < w.window_start:
            problems.append(Problem(f, _line(raw, "window_end"), f"{label}.window_end",
                                    f"{w.window_end.isoformat()} is before window_start "
                                    f"{w.window_start.isoformat()}"))
        out.append({"number": w.number, "name": w.name or f"Wave {w.number}",
                    "window_start": w.window_start, "window_end": w.window_end})
    return out


def _check_sod_rules(validated: schema.Validated, entitlement_keys: set[str] | None,
                     problems: list[Problem]) -> list[dict[str, Any]]:
    f = "packages.yaml"
    out: list[dict[str, Any]] = []
    first: dict[str, int | None] = {}
    for r, raw in validated.sod_rules:
        a, b = r.entitlements
        key = r.key or f"{a}+{b}"
        label = f"sod_rules[{key}]"
        line = _line(raw, "key") if r.key else _line(raw, "entitlements")
        if key in first:
            problems.append(Problem(f, line, f"{label}.key", f"duplicate rule key {key!r} "
                                    f"(first at line {first[key]})"))
            continue
        first[key] = line
        lines = _item_lines(raw, "entitlements")
        if a == b:
            problems.append(Problem(f, lines[-1], f"{label}.entitlements",
                                    f"names {a!r} twice (a rule pairs two entitlements)"))
        for ent, ent_line in zip((a, b), lines, strict=False):
            if entitlement_keys is not None and ent not in entitlement_keys:
                problems.append(Problem(f, ent_line, f"{label}.entitlements",
                                        f"unknown entitlement {show(ent)}"))
        out.append({"key": key, "entitlement_a": a, "entitlement_b": b,
                    "description": r.description})
    return out


def _person(d: schema.Delegate) -> dict[str, str]:
    return {"name": d.name, "slack_id": d.slack_id or "", "email": d.email or ""}


def _spec(m: schema.PackageModel) -> PackageSpec:
    return PackageSpec(
        key=m.key, name=m.name, owner_name=m.owner.name, description=m.description,
        owner_slack_id=m.owner.slack_id, owner_email=m.owner.email,
        delegates=[_person(d) for d in m.delegates],
        approvals_required=m.approvals.required if m.approvals else None,
        approvals_from=list(m.approvals.from_) if m.approvals else [],
        security_approvers=[_person(d) for d in m.approvals.security] if m.approvals else [],
        business_unit=m.business_unit, risk=m.risk, wave=m.wave, release_date=m.release_date,
        release_tentative=m.release_tentative, watch_days=m.watch_days,
        telemetry_focus=m.telemetry_focus, health=m.health_overrides(),
        fallback_plan=m.fallback.plan, fallback_drill=m.fallback.drill,
        rollback_only=m.rollback_only, retire_in_launch_window=m.retire_in_launch_window,
        population_rule=m.population_rule, guards=list(dict.fromkeys(m.guards)),
        maintenance_note=m.maintenance_note, state=m.state,
        rollout=m.rollout.as_stored() if m.rollout is not None else None,
        entitlements=list(m.entitlements), removes=list(m.removes), retires=list(m.retires),
        depends_on=list(m.depends_on))


def _parse_package(raw: Any, problems: list[Problem], f: str = "packages.yaml"
                   ) -> PackageSpec | None:
    """One package mapping checked against the schema alone (no catalog-level rules)."""
    model = schema.validate_item("packages", 0, raw, _line(raw), problems)
    return _spec(model) if model is not None else None


def _no_packages(doc: Any, problems: list[Problem]) -> bool:
    """A document that declares no package at all is one problem (unless its `packages` is
    already reported as malformed); True when it was reported here."""
    if not isinstance(doc, dict) or any(p.field.startswith("packages") for p in problems):
        return False
    items = doc.get("packages")
    if isinstance(items, list) and items:
        return False  # packages without a usable key: each is reported already
    line = (doc.key_lines.get("packages") if isinstance(doc, LineDict) else None) or 1
    problems.append(Problem("packages.yaml", line, "packages",
                            "no role packages: a catalog needs at least one package"))
    return True


# ------------------------------------------------------------------ the whole catalog


def load_catalog(directory: str | Path, *, limits: Limits | None = None) -> Catalog:
    """Read and validate a catalog directory; raise CatalogInvalid with every problem.

    `limits` caps file sizes and YAML aliases (default: Limits.from_env()).
    """
    root = Path(directory)
    if not root.is_dir():
        raise CatalogInvalid([Problem(str(root), None, "path", "is not a catalog directory")])
    if limits is None:
        try:
            limits = Limits.from_env()
        except ValueError as exc:
            raise CatalogInvalid([Problem("environment", None, "limits", str(exc))]) from None
    problems: list[Problem] = []

    id_table = _read_csv(root, "identities.csv", IDENTITY_COLUMNS, limits, problems)
    identities = _check_identities(id_table, problems) if id_table is not None else None
    if not _needs_rows(id_table, "identities.csv", "identity", problems):
        identities = None
    ent_table = _read_csv(root, "entitlements.csv", ENTITLEMENT_COLUMNS, limits, problems)
    entitlements = _check_entitlements(ent_table, problems) if ent_table is not None else None
    if not _needs_rows(ent_table, "entitlements.csv", "entitlement", problems):
        entitlements = None
    memberships = _read_csv(root, "memberships.csv", MEMBERSHIP_COLUMNS, limits, problems)
    seed = _read_csv(root, "sandbox_seed.csv", SEED_COLUMNS, limits, problems, optional=True)
    entitlement_keys = set(entitlements["key"]) if entitlements is not None else None
    identity_ids = set(identities["id"]) if identities is not None else None

    doc = _read_yaml(root, limits, problems)
    waves: list[dict[str, Any]] = []
    sod_rules: list[dict[str, Any]] = []
    pkgs: list[_Pkg] = []
    package_keys: set[str] | None = None
    if doc is not None or (root / "packages.yaml").is_file():
        validated = schema.validate_document(doc if doc is not None else LineDict(), problems) \
            if doc is not None else None
        if validated is not None:
            waves = _check_waves(validated, problems)
            sod_rules = _check_sod_rules(validated, entitlement_keys, problems)
            pkgs = _packages(validated, problems)
            _check_packages(pkgs, validated.declared_keys, entitlement_keys, identities,
                            problems)
            package_keys = set(validated.declared_keys)
            if not package_keys and _no_packages(doc, problems):
                package_keys = None  # memberships.csv's rows are not each "unknown" too

    # memberships.csv and sandbox_seed.csv, vectorised, against the files they refer to.
    if memberships is not None:
        mf, ok = "memberships.csv", memberships.ok
        if package_keys is not None:
            _flag(problems, mf, ok[~ok["package"].isin(package_keys)], "package",
                  "unknown package {value}")
        if identities is not None and identity_ids is not None:
            _flag(problems, mf, ok[~ok["identity"].isin(identity_ids)], "identity",
                  "member {value} is not an identity in identities.csv")
            inactive = set(identities.loc[~identities["active"].astype(bool), "id"])
            _flag(problems, mf, ok[ok["identity"].isin(inactive)], "identity",
                  "member {value} is an inactive identity")
        _flag(problems, mf, ok[ok.duplicated(["package", "identity"])], "identity",
              "duplicate membership of {value}")
    if seed is not None:
        sf, ok = "sandbox_seed.csv", seed.ok
        if identity_ids is not None:
            _flag(problems, sf, ok[~ok["identity"].isin(identity_ids)], "identity",
                  "{value} is not an identity in identities.csv")
        if entitlement_keys is not None:
            _flag(problems, sf, ok[~ok["entitlement"].isin(entitlement_keys)], "entitlement",
                  "unknown entitlement {value}")
        _flag(problems, sf, ok[ok.duplicated(["identity", "entitlement"])], "entitlement",
              "duplicate grant of {value}")

    if memberships is not None:
        _check_named_cohorts(pkgs, memberships.ok, problems)
    if problems:
        raise CatalogInvalid(problems)
    assert identities is not None and entitlements is not None and memberships is not None
    packages = [_spec(p.model) for p in pkgs if p.model is not None]
    members = memberships.frame.groupby("package")["identity"].agg(list).to_dict()
    for spec in packages:
        spec.members = members.get(spec.key, [])
    return Catalog(identities=identities.drop(columns="_line"),
                   entitlements=entitlements.drop(columns="_line"), packages=packages,
                   waves=waves, sod_rules=sod_rules)


# ------------------------------------------------------------------ writing to the store


def _records(df: pd.DataFrame, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    out = df[list(columns)].copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].replace("", None)
    records: list[dict[str, Any]] = out.to_dict("records")  # pandas is untyped here
    return records


def write_catalog(session: Session, catalog: Catalog, *, source: str = "") -> dict[str, int]:
    """Replace the store's catalog with `catalog` inside the caller's transaction.

    Package states and history are kept for packages that already exist.
    """
    for table in (PackageMember, PackageEntitlement, PackageDependency, SodRule):
        session.exec(delete(table))
    session.exec(delete(Identity))
    session.exec(delete(Entitlement))
    if len(catalog.identities):
        session.execute(insert(Identity), _records(catalog.identities, IDENTITY_COLUMNS))
    if len(catalog.entitlements):
        session.execute(insert(Entitlement), _records(catalog.entitlements, ENTITLEMENT_COLUMNS))
    existing = {p.key: p for p in session.exec(select(RolePackage))}
    for spec in catalog.packages:
        pkg = existing.get(spec.key) or RolePackage(key=spec.key, name=spec.name,
                                                    owner_name=spec.owner_name,
                                                    state=PackageState(spec.state))
        for attr in ("name", "description", "owner_name", "owner_slack_id", "owner_email",
                     "delegates", "approvals_required", "approvals_from",
                     "security_approvers", "business_unit", "risk", "wave", "release_date",
                     "release_tentative", "watch_days", "telemetry_focus", "health",
                     "fallback_plan", "fallback_drill", "rollback_only",
                     "retire_in_launch_window", "population_rule", "guards",
                     "maintenance_note", "rollout"):
            setattr(pkg, attr, getattr(spec, attr))
        session.add(pkg)
    session.flush()
    links = [{"package_key": p.key, "entitlement_key": e, "usage": usage}
             for p in catalog.packages
             for usage, ents in (("grant", p.entitlements), ("remove", p.removes),
                                 ("retire", p.retires))
             for e in dict.fromkeys(ents)]
    if links:
        session.execute(insert(PackageEntitlement), links)
    members = [{"package_key": p.key, "identity_id": m} for p in catalog.packages
               for m in p.members]
    if members:
        session.execute(insert(PackageMember), members)
    deps = [{"package_key": p.key, "depends_on": d} for p in catalog.packages
            for d in dict.fromkeys(p.depends_on)]
    if deps:
        session.execute(insert(PackageDependency), deps)
    for r in catalog.sod_rules:
        session.add(SodRule(**r))
    for w in catalog.waves:
        session.merge(Wave(**w))
    counts = {"identities": len(catalog.identities), "entitlements": len(catalog.entitlements),
              "packages": len(catalog.packages), "memberships": len(members)}
    detail: dict[str, Any] = dict(counts)  # the counts as audit detail, not record()'s fields
    audit.record(session, "catalog_loaded", source=source, **detail)
    return counts
