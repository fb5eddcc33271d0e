"""What a Slack interaction may look like to wavekit: strict decoding and typed payloads.

Slack posts interactivity as `application/x-www-form-urlencoded` with one field, `payload`,
holding JSON. Decoding is strict: UTF-8 errors, more than one field, JSON nested deeper
than `MAX_DEPTH` (checked by a scan before `json.loads`, which can hit RecursionError),
duplicate keys or NaN are refused. The JSON is then validated against models of exactly
the fields the receiver reads (strict types, bounded lengths; other keys are ignored, as
Slack sends many). Every refusal is a `PayloadError` with a one-line, printable reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from wavekit.adapters.slack import messages

MAX_DEPTH = 32
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

# Slack ids (users, channels) are upper-case letters and digits: U012AB3CD, C0RELEASES.
SlackId = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,32}$")]
Name = Annotated[str, StringConstraints(max_length=255)]
Text = Annotated[str, StringConstraints(max_length=3000)]
_APPROVAL_ID = re.compile(r"[0-9]{1,18}")  # fits a signed 64-bit primary key
_Model = TypeVar("_Model", bound=BaseModel)


class PayloadError(ValueError):
    """The request is not an interaction wavekit accepts; the message is one short line."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class User(_Strict):
    id: SlackId
    username: Name | None = None
    name: Name | None = None

    @property
    def display(self) -> str:
        return self.username or self.name or ""


class Channel(_Strict):
    id: SlackId


class Container(_Strict):
    channel_id: SlackId | None = None


class Action(_Strict):
    action_id: Name
    value: Annotated[str, StringConstraints(max_length=2000)] | None = None


class BlockActions(_Strict):
    """A button click in a message (Slack sends one action per click)."""

    type: Literal["block_actions"]
    user: User
    actions: Annotated[list[Action], Field(min_length=1, max_length=1)]
    trigger_id: Name | None = None
    channel: Channel | None = None
    container: Container | None = None

    @property
    def channel_id(self) -> str | None:
        return ((self.channel.id if self.channel else None)
                or (self.container.channel_id if self.container else None))


class _StateValue(_Strict):
    value: Text | None = None


class _ViewState(_Strict):
    values: dict[Name, dict[Name, _StateValue]] = Field(default_factory=dict)


class _View(_Strict):
    callback_id: Name
    private_metadata: Text = ""
    state: _ViewState = Field(default_factory=_ViewState)


class _ViewSubmission(_Strict):
    type: Literal["view_submission"]
    user: User
    view: _View


class _RejectMetadata(_Strict):
    """What `messages.reject_modal` puts in private_metadata."""

    approval_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    channel: SlackId | None = None


class _Envelope(_Strict):
    type: Name


@dataclass(frozen=True)
class RejectSubmission:
    """The reject-reason modal was submitted."""

    user: User
    approval_id: int
    channel: str | None
    reason: str


@dataclass(frozen=True)
class Ignored:
    """A well-formed interaction that is not wavekit's (another type or modal)."""

    what: str


Interaction = BlockActions | RejectSubmission | Ignored


# ---------------------------------------------------------------------- decoding


def approval_id(value: str | None) -> int | None:
    """The approval a button names: plain ASCII digits only, else None (an unknown one)."""
    if value is None or not _APPROVAL_ID.fullmatch(value):
        return None
    number = int(value)
    return number if 1 <= number < 2**63 else None


_TOKENS = re.compile(r'[\[\]{}"\\]')


def json_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deep `text` nests, in one linear pass; brackets inside strings don't count.

    Counting stops once past `limit`. Exact for valid JSON; for invalid JSON it may
    overcount, never undercount, what `json.loads` would recurse into before its error.
    """
    depth = deepest = 0
    in_string = False
    escaped = -1  # the position a backslash in a string escapes
    for match in _TOKENS.finditer(text):
        pos, char = match.start(), match.group()
        if in_string:
            if pos == escaped:
                continue
            if char == "\\":
                escaped = pos + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise PayloadError("JSON object with a duplicate key")
    return result


def _no_constant(name: str) -> Any:
    raise PayloadError(f"JSON constant {name} is not allowed")


def loads(text: str, what: str = "payload", max_depth: int = MAX_DEPTH) -> Any:
    """Strict, depth-capped `json.loads`."""
    if json_depth(text, max_depth) > max_depth:
        raise PayloadError(f"{what} JSON nests deeper than {max_depth}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except PayloadError:
        raise
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"{what} is not valid JSON ({_first_line(exc)})") from None


def parse_form(body: bytes, content_type: str | None) -> Interaction:
    """An interactivity POST body (already signature-checked) as a typed interaction."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != FORM_CONTENT_TYPE:
        raise PayloadError(f"content type {_printable(media) or 'missing'}, expected "
                           f"{FORM_CONTENT_TYPE}")
    try:
        text = body.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=True,
                          encoding="utf-8", errors="strict", max_num_fields=1)
    except UnicodeDecodeError:
        raise PayloadError("body is not valid UTF-8") from None
    except ValueError as exc:
        raise PayloadError(f"body is not one form field ({_first_line(exc)})") from None
    values = fields.get("payload")
    if set(fields) != {"payload"} or values is None or len(values) != 1:
        raise PayloadError("body must be exactly one form field named 'payload'")
    return parse_interaction(loads(values[0]))


def parse_interaction(data: object) -> Interaction:
    """A decoded payload (an HTTP one, or a Socket Mode envelope's) as a typed interaction."""
    if not isinstance(data, Mapping):
        raise PayloadError(f"payload is a JSON {_json_type(data)}, expected an object")
    envelope = _validate(_Envelope, data, "payload")
    if envelope.type == "block_actions":
        return _validate(BlockActions, data, "block_actions payload")
    if envelope.type != "view_submission":
        return Ignored(f"interaction type {_printable(envelope.type)!r}")
    submission = _validate(_ViewSubmission, data, "view_submission payload")
    view = submission.view
    if view.callback_id != messages.REJECT_CALLBACK:
        return Ignored(f"submission of view {_printable(view.callback_id)!r}")
    meta = _validate(_RejectMetadata, loads(view.private_metadata or "{}", "private_metadata"),
                     "reject modal private_metadata")
    field = view.state.values.get(messages.REASON_BLOCK, {}).get(messages.REASON_INPUT)
    reason = (field.value if field else None) or ""
    return RejectSubmission(user=submission.user, approval_id=meta.approval_id,
                            channel=meta.channel, reason=reason)


def _validate(model: type[_Model], data: object, what: str) -> _Model:
    if not isinstance(data, Mapping):
        raise PayloadError(f"{what} is a JSON {_json_type(data)}, expected an object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PayloadError(_printable(f"{what}: {where}: {first['msg']}{more}")) from None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string",
            list: "array"}.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    return _printable(str(exc).split("\n", 1)[0]) or type(exc).__name__


def _printable(text: str, limit: int = 200) -> str:
    """Safe for a one-line log: no control characters, bounded length."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."
