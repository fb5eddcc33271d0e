"""Is this request really from Slack, and new? Signature, age and replay checks.

Slack signs `v0:<timestamp>:<body>` with the app's signing secret (HMAC-SHA256). We refuse
timestamps more than 5 minutes away from now (either way) and any signature seen before:
each accepted signature is a row in `SlackRequestSeen` (primary key, so a second insert
fails), pruned once it is older than 10 minutes, by when its timestamp is refused anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import SlackRequestSeen
from wavekit.domain.clock import as_utc

MAX_SKEW = timedelta(minutes=5)
KEEP_SEEN = timedelta(minutes=10)
TIMESTAMP_HEADER = "x-slack-request-timestamp"
SIGNATURE_HEADER = "x-slack-signature"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


@dataclass(frozen=True)
class SignatureCheck:
    """Accepted, or refused with the reason (never containing the secret)."""

    ok: bool
    reason: str = ""
    signature: str = ""


def expected_signature(body: bytes, timestamp: str, signing_secret: str) -> str:
    """Slack's v0 signature: HMAC-SHA256 of `v0:<timestamp>:<body>`, over the raw bytes."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def check_signature(body: bytes, headers: Mapping[str, str], signing_secret: str,
                    now: datetime) -> SignatureCheck:
    """Check timestamp and HMAC signature; pure (no store), and the body is never decoded.

    The HMAC is computed over the bytes as received (slack_sdk's verifier decodes them as
    UTF-8 first, which raises on a body that is not).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp, signature = lowered.get(TIMESTAMP_HEADER), lowered.get(SIGNATURE_HEADER)
    if not timestamp or not signature:
        return SignatureCheck(False, "missing Slack signature headers")
    if not _TIMESTAMP.fullmatch(timestamp):
        return SignatureCheck(False, "request timestamp is not a number")
    skew = as_utc(now).timestamp() - int(timestamp)
    if skew > MAX_SKEW.total_seconds():
        return SignatureCheck(False, "request timestamp is older than 5 minutes")
    if -skew > MAX_SKEW.total_seconds():
        return SignatureCheck(False, "request timestamp is more than 5 minutes in the future")
    if not _SIGNATURE.fullmatch(signature) or not hmac.compare_digest(
            expected_signature(body, timestamp, signing_secret), signature):
        return SignatureCheck(False, "signature does not match")
    return SignatureCheck(True, signature=signature)


def remember_signature(database_url: str, signature: str, now: datetime) -> bool:
    """Record a signature as seen; False if it was seen before (a replay)."""
    with session_scope(database_url) as s:
        s.exec(delete(SlackRequestSeen).where(
            col(SlackRequestSeen.at) < as_utc(now) - KEEP_SEEN))
    try:
        with session_scope(database_url) as s:
            s.add(SlackRequestSeen(signature=signature, at=as_utc(now)))
    except IntegrityError:
        return False
    return True


def verify_request(database_url: str, body: bytes, headers: Mapping[str, str],
                   signing_secret: str, now: datetime, *, source: str = "http") -> SignatureCheck:
    """Signature, age and replay checks; every refusal leaves a `slack_request_refused` event.

    The HTTP receiver does not use this: it calls `check_signature` before parsing and
    `remember_signature` after, and counts refusals in memory instead of auditing them, so
    unauthenticated traffic writes nothing to the store.
    """
    check = check_signature(body, headers, signing_secret, now)
    if check.ok and not remember_signature(database_url, check.signature, now):
        check = SignatureCheck(False, "replayed request (signature already seen)")
    if not check.ok:
        lowered = {k.lower(): v for k, v in headers.items()}
        with session_scope(database_url) as s:
            audit.record(s, "slack_request_refused", actor="slack", at=as_utc(now),
                         reason=check.reason, source=source,
                         request_timestamp=lowered.get(TIMESTAMP_HEADER))
    return check
