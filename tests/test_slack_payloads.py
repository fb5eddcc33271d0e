"""Strict decoding of Slack interaction payloads: what fits is typed, the rest a PayloadError."""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.slack_double import block_actions, view_submission
from wavekit.adapters.slack.payloads import (
    MAX_DEPTH,
    BlockActions,
    Ignored,
    PayloadError,
    RejectSubmission,
    approval_id,
    json_depth,
    loads,
    parse_form,
    parse_interaction,
)

FORM = "application/x-www-form-urlencoded"


def _form(payload: Any) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return urlencode({"payload": text}).encode()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def test_a_click_is_typed() -> None:
    click = parse_form(_form(block_actions("UFINOWNER1", "wavekit_approve", "7")), FORM)
    assert isinstance(click, BlockActions)
    assert (click.user.id, click.user.display, click.channel_id) == (
        "UFINOWNER1", "ufinowner1", "C0RELEASES")
    assert [(a.action_id, a.value) for a in click.actions] == [("wavekit_approve", "7")]


def test_a_reject_submission_is_typed() -> None:
    meta = json.dumps({"approval_id": 7, "channel": "C0RELEASES"})
    submitted = parse_form(_form(view_submission("UFINDELEG1", meta, "not now")),
                           f"{FORM}; charset=utf-8")
    assert isinstance(submitted, RejectSubmission)
    assert (submitted.user.id, submitted.approval_id, submitted.channel, submitted.reason) == (
        "UFINDELEG1", 7, "C0RELEASES", "not now")


def test_other_interactions_and_modals_are_ignored_not_refused() -> None:
    assert isinstance(parse_interaction({"type": "shortcut"}), Ignored)
    other = view_submission("UFINDELEG1", "{}", "x", callback_id="someone_elses_modal")
    assert isinstance(parse_interaction(other), Ignored)


@pytest.mark.parametrize(("payload", "says"), [
    ("[1,2,3]", "JSON array, expected an object"),
    ("null", "JSON null, expected an object"),
    ('"text"', "JSON string, expected an object"),
    ('{"actions": "abc"}', "payload: type: Field required"),
    ('{"type": "block_actions", "user": {"id": "U1"}, "actions": "abc"}',
     "actions: Input should be a valid list"),
    ('{"type": "block_actions", "user": {"id": 5}, "actions": []}', "user.id"),
    ('{"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "a"}, '
     '{"action_id": "b"}]}', "actions: List should have at most 1 item"),
    ('{"type": "block_actions", "user": {"id": "u1\\nforged log line"}, '
     '"actions": [{"action_id": "a"}]}', "user.id: String should match pattern"),
    ('{"type": 1}', "payload: type: Input should be a valid string"),
    ('{"type": "x", "type": "y"}', "duplicate key"),
    ('{"type": "x", "n": NaN}', "NaN is not allowed"),
    ("{", "not valid JSON"),
    (_nested(100_000), f"nests deeper than {MAX_DEPTH}"),
    ('{"type": "view_submission", "user": {"id": "U1"}, "view": {"callback_id": '
     '"wavekit_reject_reason", "private_metadata": "[[[]]]"}}',
     "private_metadata is a JSON array"),
    ('{"type": "view_submission", "user": {"id": "U1"}, "view": {"callback_id": '
     '"wavekit_reject_reason", "private_metadata": "{\\"approval_id\\": \\"1\\"}"}}',
     "approval_id: Input should be a valid integer"),
    ('{"type": "view_submission", "user": {"id": "U1"}, "view": {"callback_id": '
     '"wavekit_reject_reason", "private_metadata": "{\\"approval_id\\": 1e400}"}}',
     "approval_id"),
])
def test_payloads_that_do_not_fit_are_refused_in_one_line(payload: str, says: str) -> None:
    with pytest.raises(PayloadError) as refused:
        parse_form(_form(payload), FORM)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300


@pytest.mark.parametrize(("body", "content_type", "says"), [
    (b"payload=%7B%7D\xff", FORM, "not valid UTF-8"),
    (b"payload=%ff%fe", FORM, "not valid UTF-8"),
    (b"", FORM, "exactly one form field"),
    (b"payload=1&payload=2", FORM, "not one form field"),
    (b"token=abc&payload=%7B%7D", FORM, "not one form field"),
    (b"other=%7B%7D", FORM, "exactly one form field"),
    (b"payload", FORM, "not one form field"),
    (b'{"type": "block_actions"}', "application/json", "content type application/json"),
    (b"payload=%7B%7D", None, "content type missing"),
])
def test_bodies_that_are_not_one_payload_field_are_refused(body: bytes, content_type: str | None,
                                                           says: str) -> None:
    with pytest.raises(PayloadError, match=says):
        parse_form(body, content_type)


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth('{"a": "[[[\\"{{", "b": [[1]]}') == 3
    assert json_depth("[]") == 1 and json_depth("1") == 0
    assert json_depth(_nested(10**6)) == MAX_DEPTH + 1  # stops counting early


def test_loads_takes_the_limit_and_no_deeper() -> None:
    assert loads(_nested(MAX_DEPTH)) == json.loads(_nested(MAX_DEPTH))
    with pytest.raises(PayloadError):
        loads(_nested(MAX_DEPTH + 1))


@pytest.mark.parametrize(("value", "expected"), [
    ("42", 42), ("0", None), ("", None), (None, None), (" 42", None), ("4_2", None),
    ("\u0664\u0662", None), ("-1", None), ("9" * 19, None), ("9223372036854775807", None),
    ("922337203685477580", 922337203685477580),
])
def test_approval_ids_are_plain_digits_that_fit_a_key(value: str | None,
                                                      expected: int | None) -> None:
    assert approval_id(value) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(codec="utf-8")),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet='[]{}"\\ab'), inner, max_size=4),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_json_depth_is_exact_for_valid_json(value: Any) -> None:
    assert json_depth(json.dumps(value), limit=10**6) == _depth(value)
    assert json_depth(json.dumps(value, ensure_ascii=False), limit=10**6) == _depth(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.text(alphabet='[]{}",:\\ ab0\n').map(str.encode))
def test_any_body_is_an_interaction_or_a_payload_error(body: bytes) -> None:
    for candidate in (body, b"payload=" + body):
        with contextlib.suppress(PayloadError):
            parse_form(candidate, FORM)
