"""The schema of packages.yaml: pydantic models with strict types and bounds.

Strict means a value has the type the field needs or it is a problem: `rollback_only: "no"`
is text, not false; `wave: 1.0` is not a whole number; `name: 2026` is not text. Unknown fields
are problems (a misspelled `watchdays:` is not silently ignored). Bounds are the constants
below; the README's catalog section shows them (tests/test_catalog_bounds_doc.py keeps it so).

`validate_document(doc)` checks a document built by wavekit.adapters.safe_yaml and returns the
valid waves, sod_rules and packages plus one Problem per error, each with the line of the
offending key or item and a field path such as `packages[hr-case-intake-specialist].health.
access_drift.interval_hours`. Catalog-level rules (unknown entitlements, cycles...) are in
wavekit.adapters.catalog; this module only judges each item on its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from wavekit.adapters.problems import Problem, show
from wavekit.adapters.safe_yaml import LineDict, LineList
from wavekit.domain.containment import SCOPES
from wavekit.domain.health import DEFAULT_CHECKS, HealthCheck
from wavekit.domain.states import PackageState

FILE = "packages.yaml"

# ------------------------------------------------------------------ bounds

KEY_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
GUARD_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SLACK_ID_RE = re.compile(r"[A-Z0-9]{2,32}")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
# C0/C1 controls (tab and newline are checked separately), line/paragraph separators and the
# bidirectional embedding, override and isolate characters ("Trojan Source").
BAD_CHARS_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

FIRST_DATE, LAST_DATE = dt.date(2000, 1, 1), dt.date(2100, 12, 31)
MAX_WAVE = 1_000
MAX_WATCH_DAYS = 365
MIN_INTERVAL_HOURS = 0.25
MAX_HOURS = MAX_WATCH_DAYS * 24
MAX_LIMIT = 10_000
MAX_PACKAGES = 10_000
MAX_SOD_RULES = 10_000
MAX_ENTITLEMENTS_PER_PACKAGE = 5_000
MAX_DEPENDENCIES = 500
MAX_DELEGATES = 50
MAX_GUARDS = 50
MAX_ROLLOUT_STEPS = 20  # member steps and soaks together
MAX_NAMED_MEMBERS = 10_000
MIN_SOAK_HOURS = 1.0
# identities.csv columns a rollout may stratify its cohorts by (not the unique ones).
COHORT_COLUMNS = ("department", "business_unit", "title", "location", "kind", "manager")
NAME_LEN, TEXT_LEN = 200, 5_000

RISKS = ("low", "medium", "high")
DRILLS = ("signed", "pending", "not_required")
BOUNDS_HL = ("min", "max")
# The states before a release: a catalog may set these; wavekit sets the others as it
# releases, watches and rolls back.
CATALOG_STATES = (PackageState.SCHEDULED.value, PackageState.RELEASE_READY.value,
                  PackageState.MONITORING.value, PackageState.NEEDS_TUNING.value,
                  PackageState.ROLLBACK_READY.value)
CHECK_NAMES = tuple(c.name for c in DEFAULT_CHECKS)

# Health settings in the catalog -> the HealthCheck field they set. A setting whose field
# this wavekit's HealthCheck does not have is refused rather than silently ignored.
HEALTH_SETTINGS = {"threshold": "threshold", "bound": "bound", "interval_hours": "interval",
                   "start_after_hours": "start_after", "failure_limit": "failure_limit",
                   "inconclusive_limit": "inconclusive_limit", "error_limit": "error_limit",
                   "window_hours": "window"}
_CHECK_FIELDS = {f.name for f in dataclasses.fields(HealthCheck)}
SUPPORTED_HEALTH_SETTINGS = tuple(k for k, v in HEALTH_SETTINGS.items() if v in _CHECK_FIELDS)


def _fail(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message.replace("{", "{{").replace("}", "}}"))


def _fail_model(kind: str, message: str) -> PydanticCustomError:
    # A model validator's error is not formatted (no context): braces stay as written.
    return PydanticCustomError(kind, message)


def _typename(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty (null)"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dt.datetime):
        return "a date and time"
    if isinstance(value, dt.date):
        return "a date"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


# ------------------------------------------------------------------ field types


def _text(max_len: int, *, multiline: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            hint = " (put it in quotes)" if isinstance(value, (bool, int, float, dt.date)) \
                else ""
            raise _fail("text", f"{show(value)} is {_typename(value)}, not text{hint}")
        value = value.strip()
        if len(value) > max_len:
            raise _fail("text", f"is {len(value):,} characters long (at most {max_len:,})")
        bad = BAD_CHARS_RE.search(value) or (None if multiline else re.search(r"[\t\n]", value))
        if bad:
            raise _fail("text", f"contains the control character {show(bad.group())} "
                        "(or a bidirectional override)")
        return value
    return check


Name = Annotated[str, BeforeValidator(_text(NAME_LEN))]
LongText = Annotated[str, BeforeValidator(_text(TEXT_LEN, multiline=True))]


def _pattern(regex: re.Pattern[str], what: str, rule: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise _fail("key", f"{show(value)} is not a valid {what}: {rule}")
        return value
    return check


_KEY_RULE = "1 to 63 lowercase letters, digits and dashes, starting with a letter or digit"
PackageKey = Annotated[str, BeforeValidator(_pattern(KEY_RE, "package key", _KEY_RULE))]
SodKey = Annotated[str, BeforeValidator(_pattern(KEY_RE, "rule key", _KEY_RULE))]
GuardName = Annotated[str, BeforeValidator(_pattern(
    GUARD_RE, "guard name", "1 to 63 lowercase letters, digits, dashes and underscores"))]
SlackId = Annotated[str, BeforeValidator(_pattern(
    SLACK_ID_RE, "Slack id", "2 to 32 capital letters and digits, e.g. U0123ABCD"))]
Email = Annotated[str, BeforeValidator(_pattern(
    EMAIL_RE, "email address", "one @, no spaces, at most 254 characters"))]


def _reference(value: Any) -> Any:
    # A reference to a package or entitlement is checked against what the catalog declares
    # (wavekit.adapters.catalog): a malformed key is reported where it is declared, once.
    if not isinstance(value, str):
        raise _fail("ref", f"{show(value)} is {_typename(value)}, not a key")
    if len(value) > NAME_LEN:
        raise _fail("ref", f"is {len(value):,} characters long (keys have at most 63)")
    return value


Reference = Annotated[str, BeforeValidator(_reference)]


def _whole(lo: int, hi: int, what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail("whole", f"{show(value)} is not {what} (a whole number from {lo:,} "
                        f"to {hi:,})")
        if not lo <= value <= hi:
            raise _fail("range", f"{show(value)} is out of range: {what} is a whole number "
                        f"from {lo:,} to {hi:,}")
        return value
    return check


def _number(lo: float | None = None, hi: float | None = None, *, what: str = "a number"
            ) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail("number", f"{show(value)} is not {what}")
        value = float(value)
        if not math.isfinite(value):
            raise _fail("number", f"{show(value)} is not a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _fail("range", f"{value:g} is out of range: {what} from {lo:g} to {hi:g}")
        return value
    return check


def _one_of(values: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in values:
            return value.strip().lower()
        raise _fail("choice", f"{show(value)} is not one of {', '.join(values)}")
    return check


WaveNumber = Annotated[int, BeforeValidator(_whole(1, MAX_WAVE, "a wave number"))]
WatchDays = Annotated[int, BeforeValidator(_whole(1, MAX_WATCH_DAYS, "a number of days"))]
Limit = Annotated[int, BeforeValidator(_whole(0, MAX_LIMIT, "a limit"))]
Hours = Annotated[float, BeforeValidator(_number(MIN_INTERVAL_HOURS, MAX_HOURS, what="hours"))]
DelayHours = Annotated[float, BeforeValidator(_number(0, MAX_HOURS, what="hours"))]
Threshold = Annotated[float, BeforeValidator(_number())]
Risk = Annotated[str, BeforeValidator(_one_of(RISKS))]
Drill = Annotated[str, BeforeValidator(_one_of(DRILLS))]
Bound = Annotated[str, BeforeValidator(_one_of(BOUNDS_HL))]


def _state(value: Any) -> Any:
    if isinstance(value, str) and value.strip() in CATALOG_STATES:
        return value.strip()
    if isinstance(value, str) and value.strip() in {s.value for s in PackageState}:
        raise _fail("state", f"{show(value)} is a state wavekit sets while releasing; a "
                    f"catalog may set {', '.join(CATALOG_STATES)}")
    raise _fail("state", f"{show(value)} is not a package state a catalog may set "
                f"({', '.join(CATALOG_STATES)})")


def _date(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        raise _fail("date", f"{show(value.isoformat())} is a date and time; write a date "
                    "(YYYY-MM-DD)")
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            value = dt.date.fromisoformat(value.strip())
        except ValueError:
            raise _fail("date", f"{show(value)} is not a valid date") from None
    if not isinstance(value, dt.date):
        raise _fail("date", f"{show(value)} is not a date (YYYY-MM-DD)")
    if not FIRST_DATE <= value <= LAST_DATE:
        raise _fail("range", f"{value.isoformat()} is out of range: dates are from "
                    f"{FIRST_DATE.isoformat()} to {LAST_DATE.isoformat()}")
    return value


CatalogDate = Annotated[dt.date, BeforeValidator(_date)]


def _as_list(value: Any) -> Any:
    """None is an empty list and a single value a list of one (as the catalog always was)."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    return list(value) if isinstance(value, list) else value


def _none_as_empty_list(value: Any) -> Any:
    return [] if value is None else value




STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


# ------------------------------------------------------------------ models


class Owner(BaseModel):
    model_config = STRICT
    name: Name
    slack_id: SlackId | None = None
    email: Email | None = None


class Delegate(BaseModel):
    model_config = STRICT
    name: Name
    slack_id: SlackId | None = None
    email: Email | None = None


ApproverSource = Literal["owner", "delegates", "security"]


class Approvals(BaseModel):
    """Four eyes: how many distinct approvers must approve, and from whom.

    `required` defaults to 2 for a high-risk package and 1 otherwise; `from` to the owner
    and the delegates; `security` names the security approvers `from: [security]` means.
    """

    model_config = STRICT
    required: Annotated[int, Field(ge=1, le=5)] | None = None
    from_: Annotated[list[ApproverSource], Field(alias="from", min_length=1)] = [
        "owner", "delegates"]
    security: Annotated[list[Delegate], BeforeValidator(_as_list),
                        Field(max_length=MAX_DELEGATES)] = []


class Fallback(BaseModel):
    model_config = STRICT
    plan: LongText = ""
    drill: Drill = "pending"


class CheckOverride(BaseModel):
    """One health check's settings; `false` in the catalog drops the check."""

    model_config = STRICT
    threshold: Threshold | None = None
    bound: Bound | None = None
    interval_hours: Hours | None = None
    start_after_hours: DelayHours | None = None
    failure_limit: Limit | None = None
    inconclusive_limit: Limit | None = None
    error_limit: Limit | None = None
    window_hours: Hours | None = None

    @field_validator(*HEALTH_SETTINGS, mode="before")
    @classmethod
    def _supported(cls, value: Any, info: Any) -> Any:
        if info.field_name not in SUPPORTED_HEALTH_SETTINGS:
            raise _fail("extra", f"unknown health setting {info.field_name!r} (settings: "
                        f"{', '.join(SUPPORTED_HEALTH_SETTINGS)})")
        return value

    def as_override(self) -> dict[str, Any] | bool:
        """What wavekit.domain.health.checks_for reads: the settings given, or False."""
        return {k: v for k, v in self.model_dump(exclude_none=True).items()}


class _Off(CheckOverride):
    def as_override(self) -> dict[str, Any] | bool:
        return False


_OFF = _Off.model_construct()

# Package-wide settings under `health:` beside the checks (wavekit.domain.containment and
# health.watch_action read them).
PACKAGE_HEALTH_SETTINGS = ("containment", "rollback_on_anomaly")


class _PackageSetting(CheckOverride):
    """A package-wide health setting, carried in the health mapping as checks_for expects."""

    _value: Any = PrivateAttr(default=None)

    def as_override(self) -> Any:
        return self._value


def _package_setting(name: str, value: Any) -> _PackageSetting:
    if name == "containment" and (not isinstance(value, str) or value not in SCOPES):
        raise _fail("choice", f"health.containment: {show(value)} is not one of "
                    f"{', '.join(SCOPES)}")
    if name == "rollback_on_anomaly" and not isinstance(value, bool):
        raise _fail("bool", f"health.rollback_on_anomaly: {show(value)} is not true or false")
    setting = _PackageSetting.model_construct()
    setting._value = value
    return setting


def _check_name(value: Any) -> Any:
    if isinstance(value, str) and (value in CHECK_NAMES or value in PACKAGE_HEALTH_SETTINGS):
        return value
    near = difflib.get_close_matches(str(value), CHECK_NAMES, n=1, cutoff=0.7)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise _fail("check", f"unknown health check {show(value)} ({hint}checks: "
                f"{', '.join(CHECK_NAMES)})")


def _health(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: (_package_setting(k, v) if k in PACKAGE_HEALTH_SETTINGS
                    else _OFF if v is False else {} if v is True else v)
                for k, v in value.items()}
    return value


def _owner(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return {"name": value}
    if value is None or value == "" or (isinstance(value, dict) and not value.get("name")):
        raise _fail("owner", "owner is missing (every package needs a named owner)")
    return value


def _fallback(value: Any) -> Any:
    if value is None:
        return {}
    return {"plan": value} if isinstance(value, str) else value


def _percent_or_names(value: Any) -> Any:
    """A member step: a percentage as text ("5%") or a list of identity ids."""
    if isinstance(value, list):
        if not value:
            raise _fail("members", "an empty list names nobody (list identity ids, or write "
                        "a percentage such as 25%)")
        if len(value) > MAX_NAMED_MEMBERS:
            raise _fail("members", f"names {len(value):,} identities (at most "
                        f"{MAX_NAMED_MEMBERS:,})")
        out = []
        for item in value:
            if not isinstance(item, str) or not item.strip() or len(item) > NAME_LEN:
                raise _fail("members", f"{show(item)} is not an identity id")
            out.append(item.strip())
        if len(set(out)) != len(out):
            dup = next(i for i in out if out.count(i) > 1)
            raise _fail("members", f"{show(dup)} is listed twice")
        return out
    text = value.strip() if isinstance(value, str) else None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text or "")
    if match is None:
        raise _fail("members", f"{show(value)} is not a share of the members: write a "
                    "percentage such as 5% (or a list of identity ids)")
    percent = float(match.group(1))
    if not 0 < percent <= 100:
        raise _fail("range", f"{percent:g}% is out of range: a step holds more than 0% and "
                    "at most 100% of the members")
    return percent


SoakHours = Annotated[float, BeforeValidator(_number(MIN_SOAK_HOURS, MAX_HOURS,
                                                     what="soak hours"))]


class RolloutStep(BaseModel):
    """One entry of `rollout.steps`: `{members: 5%}`, `{members: [ids]}` or `{soak_hours: N}`."""

    model_config = STRICT
    members: Annotated[Any, BeforeValidator(_percent_or_names)] = None
    soak_hours: SoakHours | None = None

    @model_validator(mode="after")
    def _one_of(self) -> RolloutStep:
        if (self.members is None) == (self.soak_hours is None):
            raise _fail_model("step", "each step is either {members: N%} (or a list of ids) or "
                        "{soak_hours: N}")
        return self

    def describe(self) -> str:
        if self.soak_hours is not None:
            return f"soak_hours: {self.soak_hours:g}"
        if isinstance(self.members, list):
            return f"members: [{len(self.members)} ids]"
        return f"members: {self.members:g}%"


def _cohort_column(value: Any) -> Any:
    if isinstance(value, str) and value.strip() in COHORT_COLUMNS:
        return value.strip()
    raise _fail("choice", f"{show(value)} is not a column cohorts can be stratified by "
                f"({', '.join(COHORT_COLUMNS)})")


class Rollout(BaseModel):
    """`rollout:` of a package: canary steps with soaks (wavekit.domain.cohorts)."""

    model_config = STRICT
    steps: Annotated[list[RolloutStep], Field(min_length=1, max_length=MAX_ROLLOUT_STEPS)]
    cohort_by: Annotated[str, BeforeValidator(_cohort_column)] | None = None

    @model_validator(mode="after")
    def _in_order(self) -> Rollout:
        steps, last_percent = self.steps, 0.0
        for i, step in enumerate(steps):
            where = f"step {i + 1} ({step.describe()})"
            before = steps[i - 1] if i else None
            if step.soak_hours is not None:
                if before is None:
                    raise _fail_model("steps", f"{where}: the first step must be a member step "
                                "such as {members: 5%}")
                if before.soak_hours is not None:
                    raise _fail_model("steps", f"{where}: two soaks in a row (join them into one)")
                if i == len(steps) - 1:
                    raise _fail_model("steps", f"{where}: the steps end with a soak; end with "
                                "{members: 100%} (the package's watch window follows it)")
                continue
            if before is not None and before.soak_hours is None:
                raise _fail_model("steps", f"{where}: follows a member step with no soak between "
                            "(add {soak_hours: N})")
            if isinstance(step.members, float):
                if step.members <= last_percent:
                    raise _fail_model("steps", f"{where}: each share must be larger than the one "
                                f"before ({last_percent:g}%)")
                last_percent = step.members
        if not isinstance(steps[-1].members, float) or steps[-1].members != 100:
            raise _fail_model("steps", f"step {len(steps)} ({steps[-1].describe()}): the last "
                        "step must be {members: 100%}")
        return self

    def as_stored(self) -> dict[str, Any]:
        """What the store keeps and wavekit.domain.cohorts.rollout_from reads."""
        return {"steps": [{"soak_hours": s.soak_hours} if s.soak_hours is not None
                          else {"members": s.members} for s in self.steps],
                "cohort_by": self.cohort_by}


EntitlementList = Annotated[list[Reference], BeforeValidator(_as_list),
                            Field(max_length=MAX_ENTITLEMENTS_PER_PACKAGE)]


class PackageModel(BaseModel):
    model_config = STRICT
    key: PackageKey
    name: Name
    description: LongText = ""
    owner: Annotated[Owner, BeforeValidator(_owner)]
    delegates: Annotated[list[Delegate], BeforeValidator(_as_list),
                         Field(max_length=MAX_DELEGATES)] = []
    business_unit: Name | None = None
    risk: Risk = "low"
    approvals: Approvals | None = None
    wave: WaveNumber | None = None
    release_date: CatalogDate | None = None
    release_tentative: bool = False
    watch_days: WatchDays = 14
    telemetry_focus: Name = ""
    health: Annotated[dict[Annotated[str, BeforeValidator(_check_name)], CheckOverride],
                      BeforeValidator(_health)] = {}
    fallback: Annotated[Fallback, BeforeValidator(_fallback)] = Fallback()
    rollback_only: bool = False
    retire_in_launch_window: bool = False
    population_rule: Any = None  # parsed by wavekit.domain.rules in the catalog checks
    guards: Annotated[list[GuardName], BeforeValidator(_as_list),
                      Field(max_length=MAX_GUARDS)] = []
    maintenance_note: LongText = ""
    rollout: Rollout | None = None
    state: Annotated[str, BeforeValidator(_state)] = PackageState.SCHEDULED.value
    entitlements: EntitlementList = []
    removes: EntitlementList = []
    retires: EntitlementList = []
    depends_on: Annotated[list[Reference], BeforeValidator(_as_list),
                          Field(max_length=MAX_DEPENDENCIES)] = []

    @field_validator("population_rule", mode="before")
    @classmethod
    def _rule_is_bounded(cls, value: Any) -> Any:
        # The text is parsed later; here only keep a huge or nested value out of messages.
        if value is not None and not isinstance(value, str):
            kind = ("list" if isinstance(value, list) else "mapping" if isinstance(value, dict)
                    else type(value).__name__)
            raise _fail("rule", "not a valid rule over identities.csv columns: a rule must "
                        f"be text, not {kind}")
        return value

    def health_overrides(self) -> dict[str, Any]:
        return {name: o.as_override() for name, o in self.health.items()}


class WaveModel(BaseModel):
    model_config = STRICT
    number: WaveNumber
    name: Name | None = None
    window_start: CatalogDate | None = None
    window_end: CatalogDate | None = None


def _pair(value: Any) -> Any:
    value = _as_list(value)
    if not isinstance(value, list) or len(value) != 2:
        raise _fail("pair", "a rule names exactly two entitlements")
    return value


class SodRuleModel(BaseModel):
    model_config = STRICT
    key: SodKey | None = None
    entitlements: Annotated[list[Reference], BeforeValidator(_pair)]
    description: LongText = ""


class DocumentModel(BaseModel):
    model_config = STRICT
    waves: Annotated[list[Any], BeforeValidator(_none_as_empty_list),
                     Field(max_length=MAX_WAVE)] = []
    sod_rules: Annotated[list[Any], BeforeValidator(_none_as_empty_list),
                         Field(max_length=MAX_SOD_RULES)] = []
    packages: Annotated[list[Any], BeforeValidator(_none_as_empty_list),
                        Field(max_length=MAX_PACKAGES)] = []


_ALL_FIELDS = sorted({name for m in (PackageModel, WaveModel, SodRuleModel, DocumentModel,
                                     Owner, Delegate, Fallback, CheckOverride, Rollout,
                                     RolloutStep, Approvals)
                      for name in m.model_fields})

MISSING = {
    "key": "package key is missing",
    "name": "name is missing",
    "owner": "owner is missing (every package needs a named owner)",
    "number": "wave number is missing",
    "entitlements": "a rule names exactly two entitlements",
}


# ------------------------------------------------------------------ errors -> problems


def line_of(raw: Any, loc: Iterable[Any], default: int | None) -> int | None:
    """The line of the deepest key or item of `loc` found in the raw (line-numbered) data."""
    line, cur = default, raw
    for part in loc:
        if isinstance(cur, dict):
            if part == "[key]":
                break
            if part not in cur:  # a missing field: the line of the mapping that lacks it
                return (cur.line if isinstance(cur, LineDict) else None) or line
            if isinstance(cur, LineDict):
                line = cur.key_lines.get(part, line)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            if isinstance(cur, LineList):
                line = cur.lines[part]
            cur = cur[part]
        else:
            break
    return line


def _message(err: Any) -> str:
    kind, value, loc = err["type"], err.get("input"), err["loc"]
    last = next((p for p in reversed(loc) if isinstance(p, str)), "")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return MISSING.get(last, f"{last} is missing")
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(str(last), _ALL_FIELDS, n=1, cutoff=0.75)
        return f"unknown field {show(last)}" + (f" (did you mean {near[0]!r}?)" if near else "")
    if kind == "bool_type":
        hint = " (write true or false, without quotes)" if isinstance(value, str) else ""
        return f"{show(value)} is {_typename(value)}, not true or false{hint}"
    if kind in ("list_type", "model_type", "dict_type", "model_attributes_type"):
        want = "a list" if kind == "list_type" else "a mapping"
        return f"must be {want}, not {_typename(value)}"
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} items"
    if kind == "string_type":
        return f"{show(value)} is {_typename(value)}, not text"
    return str(err.get("msg", "is not valid"))


def _field(label: str, loc: tuple[Any, ...], kind: str) -> str:
    parts = [p for p in loc if isinstance(p, str) and p != "[key]"]
    if kind in ("extra_forbidden", "check") or (loc and loc[-1] == "[key]"):
        parts = parts[:-1]  # the unknown name is in the message, the field is its parent
    return ".".join(p for p in [label, *parts] if p) or "document"


def _errors(exc: ValidationError) -> list[Any]:
    """The errors minus those under a key that is itself wrong (one error per root cause)."""
    errs = exc.errors(include_url=False)
    bad_keys = [e["loc"][:-1] for e in errs if e["loc"] and e["loc"][-1] == "[key]"]
    return [e for e in errs if e["loc"][-1:] == ("[key]",)
            or not any(e["loc"][:len(k)] == k for k in bad_keys)]


def _problems(exc: ValidationError, raw: Any, label: str, default_line: int | None
              ) -> list[Problem]:
    out = []
    for err in _errors(exc):
        loc = tuple(err["loc"])
        out.append(Problem(FILE, line_of(raw, loc, default_line),
                           _field(label, loc, err["type"]), _message(err)))
    return out


@dataclass
class Validated:
    """What validate_document found valid, with the raw items for line numbers."""

    waves: list[tuple[WaveModel, Any]]
    sod_rules: list[tuple[SodRuleModel, Any]]
    packages: list[tuple[PackageModel, Any]]
    # Every package key in the document (text), also of packages with other problems or a
    # malformed key, so that references to them are not reported as unknown (one error per
    # root cause).
    declared_keys: dict[str, int | None]
    document: Any


def _label(section: str, i: int, raw: Any, key: str, check: Callable[[Any], bool]) -> str:
    value = raw.get(key) if isinstance(raw, dict) else None
    return f"{section}[{value}]" if check(value) else f"{section}[#{i + 1}]"


def _is_key(value: Any) -> bool:
    return isinstance(value, str) and KEY_RE.fullmatch(value) is not None


def _is_wave(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WAVE


def item_label(section: str, i: int, raw: Any) -> str:
    if section == "waves":
        return _label(section, i, raw, "number", _is_wave)
    return _label(section, i, raw, "key", _is_key)


def field_path(doc: Any, target: Any, key: Any) -> str:
    """The field name of `key` in the mapping `target` somewhere inside `doc`, as problems
    name fields (`packages[x].health.adoption.threshold`); "document" if not found."""
    if target is doc:
        return str(key) if isinstance(key, str) else "document"
    if not isinstance(doc, dict):
        return "document"
    for section, items in doc.items():
        if not isinstance(items, list):
            stack: list[tuple[Any, list[str]]] = [(items, [str(section)])]
        else:
            stack = [(item, [item_label(str(section), i, item)]) for i, item in
                     enumerate(items)]
        while stack:
            node, path = stack.pop()
            if node is target:
                return ".".join([*path, str(key)] if isinstance(key, str) else path)
            if isinstance(node, dict):
                stack.extend((v, [*path, str(k)]) for k, v in node.items()
                             if isinstance(k, str))
            elif isinstance(node, list):
                stack.extend((v, path) for v in node)
    return "document"


_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "waves": TypeAdapter(WaveModel), "sod_rules": TypeAdapter(SodRuleModel),
    "packages": TypeAdapter(PackageModel)}


def validate_item(section: str, i: int, raw: Any, line: int | None, problems: list[Problem]
                  ) -> Any:
    """One item of a section as its model, or None (its problems appended)."""
    label = item_label(section, i, raw)
    try:
        return _ADAPTERS[section].validate_python(raw)
    except ValidationError as exc:
        found = _problems(exc, raw, label, line)
        problems.extend(sorted(found, key=lambda p: p.line or 0))
        return None


def validate_document(doc: Any, problems: list[Problem]) -> Validated:
    """Check the document's shape and every item; append one Problem per error."""
    out = Validated([], [], [], {}, doc)
    if doc is None:
        doc = LineDict()
    if not isinstance(doc, dict):
        problems.append(Problem(FILE, getattr(doc, "line", None) or None, "document",
                                f"the top level must be a mapping (waves, sod_rules, "
                                f"packages), not {_typename(doc)}"))
        return out
    broken: set[Any] = set()
    try:
        DocumentModel.model_validate(doc)
    except ValidationError as exc:
        problems.extend(_problems(exc, doc, "", None))
        broken = {e["loc"][0] for e in exc.errors() if len(e["loc"]) == 1}
    for section in ("waves", "sod_rules", "packages"):
        items = doc.get(section)
        if section in broken or not isinstance(items, list):
            continue
        lines = getattr(items, "lines", None)
        for i, raw in enumerate(items):
            line = lines[i] if lines and i < len(lines) else None
            if section == "packages" and isinstance(raw, dict) and isinstance(raw.get("key"), str):
                key_line = raw.key_lines.get("key") if isinstance(raw, LineDict) else line
                # A malformed key is reported once; references to it are not "unknown".
                out.declared_keys.setdefault(raw["key"], key_line)
            model = validate_item(section, i, raw, line, problems)
            if model is not None:
                getattr(out, section).append((model, raw))
    return out


class _HealthOnly(BaseModel):
    model_config = STRICT
    health: Annotated[dict[Annotated[str, BeforeValidator(_check_name)], CheckOverride],
                      BeforeValidator(_health)] = {}


def health_overrides(value: Any, *, where: str = "health") -> dict[str, Any]:
    """A `health:` mapping checked exactly as the catalog checks it (names, settings, bounds),
    as wavekit.domain.health.checks_for reads it. Raises ValueError with one line a problem."""
    try:
        model = _HealthOnly.model_validate({"health": value})
    except ValidationError as exc:
        lines = [f"{where}." + ".".join(str(p) for p in err["loc"][1:]) + f": {err['msg']}"
                 for err in exc.errors()]
        raise ValueError("; ".join(lines)) from None
    return {name: o.as_override() for name, o in model.health.items()}
