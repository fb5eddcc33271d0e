"""Request verification: real HMAC signatures, the 5-minute window, and replay protection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.slack_double import SIGNING_SECRET, block_actions, sign, signed_request
from wavekit.adapters.slack.signing import check_signature, verify_request
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import SlackRequestSeen

NOW = datetime(2026, 4, 8, 12, 0, tzinfo=UTC)
TS = int(NOW.timestamp())


@pytest.fixture
def url(store_url: str) -> str:
    """An empty store, on SQLite and on PostgreSQL (replays hinge on its primary key)."""
    return store_url


def _refusals(url: str) -> list[str]:
    with session_scope(url) as s:
        return [e.detail["reason"] for e in audit.events(s, action="slack_request_refused")]


def _request(ts: int = TS) -> tuple[bytes, dict[str, str]]:
    return signed_request(block_actions("UFINOWNER1", "wavekit_approve", "1"), ts)


def test_a_correctly_signed_fresh_request_is_accepted(url: str) -> None:
    body, headers = _request()
    check = verify_request(url, body, headers, SIGNING_SECRET, NOW)
    assert check.ok, check.reason
    assert _refusals(url) == []


@pytest.mark.parametrize(("tamper", "reason"), [
    ("wrong secret", "signature does not match"),
    ("edited body", "signature does not match"),
    ("no headers", "missing Slack signature headers"),
    ("timestamp not a number", "request timestamp is not a number"),
    ("stale", "request timestamp is older than 5 minutes"),
    ("future", "request timestamp is more than 5 minutes in the future"),
])
def test_bad_requests_are_refused_and_audited(url: str, tamper: str, reason: str) -> None:
    body, headers = _request()
    if tamper == "wrong secret":
        headers["X-Slack-Signature"] = sign(body, TS, "not-the-signing-secret")
    elif tamper == "edited body":
        body = body.replace(b"UFINOWNER1", b"USTRANGER1")
    elif tamper == "no headers":
        headers = {"Content-Type": headers["Content-Type"]}
    elif tamper == "timestamp not a number":
        headers["X-Slack-Request-Timestamp"] = "yesterday"
    elif tamper == "stale":
        body, headers = _request(TS - 301)
    elif tamper == "future":
        body, headers = _request(TS + 301)
    check = verify_request(url, body, headers, SIGNING_SECRET, NOW)
    assert not check.ok
    assert check.reason == reason
    assert _refusals(url) == [reason]


def test_the_window_is_five_minutes_either_way(url: str) -> None:
    for ts in (TS - 300, TS + 300):
        body, headers = _request(ts)
        assert verify_request(url, body, headers, SIGNING_SECRET, NOW).ok


def test_a_replayed_request_is_refused_and_audited(url: str) -> None:
    body, headers = _request()
    assert verify_request(url, body, headers, SIGNING_SECRET, NOW).ok
    again = verify_request(url, body, headers, SIGNING_SECRET, NOW + timedelta(seconds=30))
    assert not again.ok and "replayed" in again.reason
    assert _refusals(url) == ["replayed request (signature already seen)"]


def test_seen_signatures_are_pruned_after_ten_minutes(url: str) -> None:
    old_body, old_headers = _request(TS)
    assert verify_request(url, old_body, old_headers, SIGNING_SECRET, NOW).ok
    later = NOW + timedelta(minutes=11)
    body, headers = _request(int(later.timestamp()))
    assert verify_request(url, body, headers, SIGNING_SECRET, later).ok
    with session_scope(url) as s:
        seen = {row.signature for row in s.query(SlackRequestSeen)}
    assert seen == {headers["X-Slack-Signature"]}
    # The pruned one cannot come back: its timestamp is now outside the window.
    assert not verify_request(url, old_body, old_headers, SIGNING_SECRET, later).ok


def test_refusal_audit_never_holds_the_secret(url: str) -> None:
    body, headers = _request()
    headers["X-Slack-Signature"] = sign(body, TS, "wrong")
    verify_request(url, body, headers, SIGNING_SECRET, NOW)
    with session_scope(url) as s:
        dumped = repr([(e.actor, e.detail) for e in audit.events(s)])
    assert SIGNING_SECRET not in dumped


def test_the_signature_covers_raw_bytes_even_when_they_are_not_utf8() -> None:
    body = b"payload=\xff\xfe"
    headers = {"X-Slack-Request-Timestamp": str(TS), "X-Slack-Signature": sign(body, TS)}
    assert check_signature(body, headers, SIGNING_SECRET, NOW).ok
    assert not check_signature(body + b"\xff", headers, SIGNING_SECRET, NOW).ok


@pytest.mark.parametrize(("timestamp", "signature", "reason"), [
    (str(TS), "v0=\u00e9" + "0" * 63, "signature does not match"),
    (str(TS), "v0=" + "0" * 6400, "signature does not match"),
    (str(TS), "v1=" + "0" * 64, "signature does not match"),
    (" " + str(TS), None, "request timestamp is not a number"),
    ("\u0661" * 10, None, "request timestamp is not a number"),
    ("9" * 5000, None, "request timestamp is not a number"),
])
def test_odd_headers_are_refused_not_raised(timestamp: str, signature: str | None,
                                            reason: str) -> None:
    body, _ = _request()
    headers = {"X-Slack-Request-Timestamp": timestamp,
               "X-Slack-Signature": signature or sign(body, TS)}
    check = check_signature(body, headers, SIGNING_SECRET, NOW)
    assert (check.ok, check.reason) == (False, reason)
