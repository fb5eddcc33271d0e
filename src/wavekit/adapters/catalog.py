"""Catalog loading and validation: role packages in YAML, identities and memberships in CSV.

A catalog directory holds:

    packages.yaml     waves, separation-of-duties rules and role packages
    identities.csv    id, display_name, email, department, business_unit, title, location,
                      kind, active, slack_id, manager
    entitlements.csv  key, name, system, description, privileged
    memberships.csv   package, identity

`load_catalog` reads and checks everything and raises CatalogInvalid listing every problem
(file, line, field, message); it never touches the store. `write_catalog` then writes a
valid catalog in one transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from sqlalchemy import delete, insert
from sqlmodel import Session, select

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

RISKS = ("low", "medium", "high")
DRILLS = ("signed", "pending", "not_required")
STATES = tuple(s.value for s in PackageState)
IDENTITY_COLUMNS = ("id", "display_name", "email", "department", "business_unit", "title",
                    "location", "kind", "active", "slack_id", "manager")
ENTITLEMENT_COLUMNS = ("key", "name", "system", "description", "privileged")
MEMBERSHIP_COLUMNS = ("package", "identity")
TRUE, FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n", ""}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the catalog, located precisely enough to fix it."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


class CatalogInvalid(ValueError):
    """The catalog has problems; nothing was written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the catalog:\n"
                         + "\n".join(f"  {p}" for p in problems))


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


# ------------------------------------------------------------------ YAML with line numbers


class _LineDict(dict):
    """A mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


# libyaml's parser when present (several times faster on large catalogs); marks are the same.
class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(obj: Any, key: str | None = None) -> int | None:
    if isinstance(obj, _LineDict):
        return obj.key_lines.get(key, obj.line) if key else obj.line
    return None


# ------------------------------------------------------------------ CSV tables


def _read_csv(path: Path, columns: tuple[str, ...], required: tuple[str, ...],
              problems: list[Problem]) -> pd.DataFrame:
    """Read a CSV as strings with a `_line` column (the file's line number of each row)."""
    if not path.exists():
        problems.append(Problem(path.name, None, "file", "file is missing"))
        return pd.DataFrame(columns=[*columns, "_line"])
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        problems.append(Problem(path.name, None, "file", f"cannot be read as CSV: {exc}"))
        return pd.DataFrame(columns=[*columns, "_line"])
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    for col in missing:
        problems.append(Problem(path.name, 1, col, "required column is missing from the header"))
    for col in columns:
        if col not in df.columns:
            df[col] = ""
    df = df.apply(lambda s: s.str.strip())
    df["_line"] = range(2, len(df) + 2)  # header is line 1
    return df


def _flag(problems: list[Problem], file: str, rows: pd.DataFrame, fld: str, message: str
          ) -> None:
    problems.extend(Problem(file, int(line), fld, message.format(value=value))
                    for line, value in zip(rows["_line"], rows.get(fld, rows["_line"]),
                                           strict=True))


def _check_identities(df: pd.DataFrame, problems: list[Problem]) -> pd.DataFrame:
    f = "identities.csv"
    _flag(problems, f, df[df["id"] == ""], "id", "identity id is empty")
    _flag(problems, f, df[df["display_name"] == ""], "display_name", "display name is empty")
    dup = df[(df["id"] != "") & df.duplicated("id", keep="first")]
    _flag(problems, f, dup, "id", "duplicate identity id {value!r}")
    active = df["active"].str.lower()
    _flag(problems, f, df[~active.isin(TRUE | FALSE)], "active",
          "{value!r} is not true/false")
    bad_kind = df[~df["kind"].isin(["", "person", "service"])]
    _flag(problems, f, bad_kind, "kind", "{value!r} is not person or service")
    bad_email = df[(df["email"] != "") & ~df["email"].str.contains("@", regex=False)]
    _flag(problems, f, bad_email, "email", "{value!r} is not an email address")
    out = df.copy()
    out["active"] = ~active.isin(FALSE - {""}) | (active == "")
    out["kind"] = out["kind"].replace("", "person")
    return out


def _check_entitlements(df: pd.DataFrame, problems: list[Problem]) -> pd.DataFrame:
    f = "entitlements.csv"
    _flag(problems, f, df[df["key"] == ""], "key", "entitlement key is empty")
    _flag(problems, f, df[(df["key"] != "") & df.duplicated("key", keep="first")], "key",
          "duplicate entitlement key {value!r}")
    priv = df["privileged"].str.lower()
    _flag(problems, f, df[~priv.isin(TRUE | FALSE)], "privileged", "{value!r} is not true/false")
    out = df.copy()
    out["privileged"] = priv.isin(TRUE)
    out["name"] = out["name"].where(out["name"] != "", out["key"])
    return out


# ------------------------------------------------------------------ packages.yaml


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _parse_package(raw: Any, problems: list[Problem], f: str) -> PackageSpec | None:
    if not isinstance(raw, dict):
        problems.append(Problem(f, None, "packages", "each package must be a mapping"))
        return None

    def bad(fld: str, message: str) -> None:
        problems.append(Problem(f, _line(raw, fld), _fieldname(raw, fld), message))

    key = str(raw.get("key") or "").strip()
    if not key:
        bad("key", "package key is missing")
    name = str(raw.get("name") or "").strip()
    if not name:
        bad("name", "package name is missing")
    owner = raw.get("owner")
    owner = owner if isinstance(owner, dict) else ({"name": owner} if owner else {})
    owner_name = str(owner.get("name") or "").strip()
    if not owner_name:
        bad("owner", "owner is missing (every package needs a named owner)")
    risk = str(raw.get("risk", "low")).strip().lower()
    if risk not in RISKS:
        bad("risk", f"{raw.get('risk')!r} is not one of {', '.join(RISKS)}")
    wave = raw.get("wave")
    if wave is not None and (isinstance(wave, bool) or not isinstance(wave, int) or wave < 1):
        bad("wave", f"{wave!r} is not a wave number (a whole number from 1)")
        wave = None
    watch_days = raw.get("watch_days", 14)
    if isinstance(watch_days, bool) or not isinstance(watch_days, int) or watch_days < 1:
        bad("watch_days", f"{watch_days!r} is not a whole number of days")
        watch_days = 14
    release_date = raw.get("release_date")
    if release_date is not None and not isinstance(release_date, dt.date):
        try:
            release_date = dt.date.fromisoformat(str(release_date))
        except ValueError:
            bad("release_date", f"{release_date!r} is not a date (YYYY-MM-DD)")
            release_date = None
    fallback = raw.get("fallback") or {}
    if not isinstance(fallback, dict):
        fallback = {"plan": str(fallback)}
    drill = str(fallback.get("drill", "pending")).strip().lower()
    if drill not in DRILLS:
        bad("fallback", f"drill {fallback.get('drill')!r} is not one of {', '.join(DRILLS)}")
    delegates = []
    for d in _as_list(raw.get("delegates")):
        if isinstance(d, dict) and d.get("name"):
            delegates.append({"name": str(d["name"]), "slack_id": str(d.get("slack_id") or "")})
        else:
            bad("delegates", f"delegate {d!r} needs a name (and a slack_id)")
    state = str(raw.get("state", PackageState.SCHEDULED.value)).strip()
    if state not in STATES:
        bad("state", f"{state!r} is not a package state")
        state = PackageState.SCHEDULED.value
    health = raw.get("health") or {}
    if not isinstance(health, dict):
        bad("health", "health must be a mapping of check name to settings")
        health = {}
    return PackageSpec(
        key=key, name=name, owner_name=owner_name,
        description=str(raw.get("description") or "").strip(),
        owner_slack_id=owner.get("slack_id"), owner_email=owner.get("email"),
        delegates=delegates, business_unit=raw.get("business_unit"), risk=risk, wave=wave,
        release_date=release_date, release_tentative=bool(raw.get("release_tentative", False)),
        watch_days=watch_days, telemetry_focus=str(raw.get("telemetry_focus") or ""),
        health=dict(health), fallback_plan=str(fallback.get("plan") or "").strip(),
        fallback_drill=drill, rollback_only=bool(raw.get("rollback_only", False)),
        retire_in_launch_window=bool(raw.get("retire_in_launch_window", False)),
        population_rule=raw.get("population_rule"), guards=[str(g) for g in
                                                            _as_list(raw.get("guards"))],
        maintenance_note=str(raw.get("maintenance_note") or "").strip(), state=state,
        entitlements=[str(e) for e in _as_list(raw.get("entitlements"))],
        removes=[str(e) for e in _as_list(raw.get("removes"))],
        retires=[str(e) for e in _as_list(raw.get("retires"))],
        depends_on=[str(d) for d in _as_list(raw.get("depends_on"))],
    )


def _fieldname(raw: dict, fld: str) -> str:
    key = raw.get("key")
    return f"packages[{key}].{fld}" if key else f"packages.{fld}"


def _rule_error(identities: pd.DataFrame, rule: str) -> str | None:
    """Why `rule` is not a population rule over the identities.csv columns, or None.

    The rule is parsed by wavekit.domain.rules (never run as code), then evaluated over the
    identities so a comparison that cannot apply to a column's values is reported here.
    """
    try:
        rules.evaluate(rules.parse_rule(rule, IDENTITY_COLUMNS), identities)
    except rules.RuleError as exc:
        return str(exc)
    return None


def _find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path (first == last), or None."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack.append(node)
        for nxt in deps.get(node, []):
            if color.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt in deps and not color.get(nxt) and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        color[node] = 2
        return None

    for node in sorted(deps):
        if not color.get(node) and (cycle := visit(node)):
            return cycle
    return None


def load_catalog(directory: str | Path) -> Catalog:
    """Read and validate a catalog directory; raise CatalogInvalid with every problem."""
    root = Path(directory)
    problems: list[Problem] = []
    if not root.is_dir():
        raise CatalogInvalid([Problem(str(root), None, "path", "is not a catalog directory")])

    identities = _check_identities(
        _read_csv(root / "identities.csv", IDENTITY_COLUMNS, ("id", "display_name"), problems),
        problems)
    entitlements = _check_entitlements(
        _read_csv(root / "entitlements.csv", ENTITLEMENT_COLUMNS, ("key",), problems), problems)
    memberships = _read_csv(root / "memberships.csv", MEMBERSHIP_COLUMNS, MEMBERSHIP_COLUMNS,
                            problems)

    f = "packages.yaml"
    doc: Any = {}
    path = root / f
    if not path.exists():
        problems.append(Problem(f, None, "file", "file is missing"))
    else:
        try:
            doc = yaml.load(path.read_text(), Loader=_LineLoader) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problems.append(Problem(f, mark.line + 1 if mark else None, "yaml", str(exc)))
            doc = {}
    if not isinstance(doc, dict):
        problems.append(Problem(f, None, "document", "top level must be a mapping"))
        doc = {}

    waves = []
    for w in _as_list(doc.get("waves")):
        num = w.get("number") if isinstance(w, dict) else None
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            problems.append(Problem(f, _line(w, "number"), "waves.number",
                                    f"{num!r} is not a wave number"))
            continue
        waves.append({"number": num, "name": str(w.get("name") or f"Wave {num}"),
                      "window_start": w.get("window_start"), "window_end": w.get("window_end")})

    entitlement_keys = set(entitlements["key"])
    packages: list[PackageSpec] = []
    seen: dict[str, int | None] = {}
    rule_errors: dict[str, str | None] = {}
    for raw in _as_list(doc.get("packages")):
        spec = _parse_package(raw, problems, f)
        if spec is None:
            continue
        if spec.key and spec.key in seen:
            problems.append(Problem(f, _line(raw, "key"), _fieldname(raw, "key"),
                                    f"duplicate package key {spec.key!r} "
                                    f"(first at line {seen[spec.key]})"))
            continue
        seen[spec.key] = _line(raw, "key")
        for fld in ("entitlements", "removes", "retires"):
            for ent in getattr(spec, fld):
                if ent not in entitlement_keys:
                    problems.append(Problem(f, _line(raw, fld), _fieldname(raw, fld),
                                            f"unknown entitlement {ent!r}"))
        if not spec.entitlements and not spec.rollback_only:
            problems.append(Problem(f, _line(raw), _fieldname(raw, "entitlements"),
                                    "a package must grant at least one entitlement"))
        if spec.population_rule:
            rule = spec.population_rule
            cached = rule if isinstance(rule, str) else repr(rule)  # a YAML list is unhashable
            if cached not in rule_errors:  # many packages share a rule
                rule_errors[cached] = _rule_error(identities, rule)
            if error := rule_errors[cached]:
                problems.append(Problem(f, _line(raw, "population_rule"),
                                        _fieldname(raw, "population_rule"),
                                        f"not a valid rule over identities.csv columns: {error}"))
        packages.append(spec)
        spec_lines = raw if isinstance(raw, _LineDict) else None
        spec.__dict__["_lines"] = spec_lines

    keys = {p.key for p in packages}
    for p in packages:
        raw = p.__dict__.pop("_lines", None)
        where = (f, _line(raw, "depends_on"), f"packages[{p.key}].depends_on")
        for d in p.depends_on:
            if d not in keys:
                problems.append(Problem(*where, f"unknown package {d!r}"))
            elif d == p.key:
                problems.append(Problem(*where, "a package cannot depend on itself"))
    cycle = _find_cycle({p.key: [d for d in p.depends_on if d != p.key] for p in packages})
    if cycle:
        problems.append(Problem(f, None, "depends_on",
                                "dependency cycle: " + " -> ".join(cycle)))

    sod_rules = []
    for r in _as_list(doc.get("sod_rules")):
        if not isinstance(r, dict):
            problems.append(Problem(f, None, "sod_rules", "each rule must be a mapping"))
            continue
        pair = _as_list(r.get("entitlements"))
        if len(pair) != 2:
            problems.append(Problem(f, _line(r, "entitlements"), f"sod_rules[{r.get('key')}]",
                                    "a rule names exactly two entitlements"))
            continue
        for ent in pair:
            if ent not in entitlement_keys:
                problems.append(Problem(f, _line(r, "entitlements"),
                                        f"sod_rules[{r.get('key')}].entitlements",
                                        f"unknown entitlement {ent!r}"))
        sod_rules.append({"key": str(r.get("key") or f"{pair[0]}+{pair[1]}"),
                          "entitlement_a": pair[0], "entitlement_b": pair[1],
                          "description": str(r.get("description") or "")})

    # memberships.csv, vectorised: unknown packages, unknown identities, duplicates.
    mf = "memberships.csv"
    _flag(problems, mf, memberships[~memberships["package"].isin(keys)], "package",
          "unknown package {value!r}")
    _flag(problems, mf, memberships[~memberships["identity"].isin(set(identities["id"]))],
          "identity", "member {value!r} is not an identity in identities.csv")
    _flag(problems, mf, memberships[memberships.duplicated(["package", "identity"])], "identity",
          "duplicate membership of {value!r}")
    inactive = set(identities.loc[~identities["active"].astype(bool), "id"])
    _flag(problems, mf, memberships[memberships["identity"].isin(inactive)], "identity",
          "member {value!r} is an inactive identity")

    if problems:
        raise CatalogInvalid(problems)

    members = memberships.groupby("package")["identity"].agg(list).to_dict()
    for p in packages:
        p.members = members.get(p.key, [])
    return Catalog(identities=identities.drop(columns="_line"),
                   entitlements=entitlements.drop(columns="_line"), packages=packages,
                   waves=waves, sod_rules=sod_rules)


# ------------------------------------------------------------------ writing to the store


def _records(df: pd.DataFrame, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    out = df[list(columns)].copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].replace("", None)
    return out.to_dict("records")


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
                     "delegates", "business_unit", "risk", "wave", "release_date",
                     "release_tentative", "watch_days", "telemetry_focus", "health",
                     "fallback_plan", "fallback_drill", "rollback_only",
                     "retire_in_launch_window", "population_rule", "guards",
                     "maintenance_note"):
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
    audit.record(session, "catalog_loaded", source=source, **counts)
    return counts
