"""A loopback double of the Slack Web API, and helpers to send signed interactivity requests.

The double is a real HTTP server (uvicorn in a thread) that speaks Slack's wire protocol:
POST /api/<method> with a form or JSON body, a Bearer token (or `token` field) checked, and
answers shaped like Slack's. Tests drive the real `slack_sdk.WebClient` against it and
assert on the calls it recorded and the messages it holds.

It is also a pytest plugin (fixture `slack_double`). PYTEST_DONT_REWRITE: test modules import
its helpers before pytest loads it as a plugin, and it holds no asserts to rewrite.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.servers import free_port

BOT_TOKEN = "xoxb-wavekit-test-bot-token-3f9a"
SIGNING_SECRET = "wavekit-test-signing-secret-8c1d"
CHANNEL = "C0RELEASES"
_JSON_FIELDS = ("blocks", "attachments", "view")


@dataclass
class SlackCall:
    """One Web API call as the double received it (JSON-valued fields decoded)."""

    method: str
    params: dict[str, Any]

    def text(self) -> str:
        """Everything a reader could see in this call, as one string (for secret checks)."""
        return json.dumps(self.params, sort_keys=True)


@dataclass
class SlackDouble:
    """State of the double: recorded calls, posted messages, one-shot rate limits."""

    token: str = BOT_TOKEN
    base_url: str = ""
    calls: list[SlackCall] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    unknown_users: set[str] = field(default_factory=set)  # conversations.open: user_not_found
    _rate_limited: dict[str, float] = field(default_factory=dict)
    _ts: Iterator[int] = field(default_factory=lambda: itertools.count(100))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.messages.clear()
            self.unknown_users.clear()
            self._rate_limited.clear()
            self._ts = itertools.count(100)

    def rate_limit_next(self, method: str, retry_after: float = 1) -> None:
        """Answer the next call to `method` with 429 and this Retry-After (seconds)."""
        self._rate_limited[method] = retry_after

    def calls_to(self, method: str) -> list[SlackCall]:
        return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """The message as it stands now (after any chat.update)."""
        return self.messages[(channel, ts)]

    # ------------------------------------------------------------------ the server side

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    async def handle(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        body = await request.body()
        params = _parse(body, request.headers.get("content-type", ""))
        params.update({k: v for k, v in request.query_params.items()})
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth else params.pop("token", "")
        params.pop("token", None)
        with self._lock:
            if method in self._rate_limited:
                retry_after = self._rate_limited.pop(method)
                self.calls.append(SlackCall(method, params))
                return JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429,
                                    headers={"Retry-After": str(int(retry_after))})
            if token != self.token:
                return JSONResponse({"ok": False, "error": "invalid_auth"})
            self.calls.append(SlackCall(method, params))
            return JSONResponse(self._answer(method, params))

    def _answer(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://wavekit-test.slack.com/", "team": "wavekit",
                    "user": "wavekit", "team_id": "T0WAVEKIT", "user_id": "U0WAVEKIT",
                    "bot_id": "B0WAVEKIT"}
        if method == "chat.postMessage":
            if not p.get("channel"):
                return {"ok": False, "error": "channel_not_found"}
            channel = _channel_id(p["channel"])
            ts = self._next_ts()
            message = {"type": "message", "user": "U0WAVEKIT", "bot_id": "B0WAVEKIT", "ts": ts,
                       "text": p.get("text", ""), "blocks": p.get("blocks", [])}
            if p.get("thread_ts"):
                message["thread_ts"] = p["thread_ts"]
            self.messages[(channel, ts)] = message
            return {"ok": True, "channel": channel, "ts": ts, "message": message}
        if method == "chat.update":
            key = (p.get("channel", ""), p.get("ts", ""))
            if key not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            message = self.messages[key]
            message.update(text=p.get("text", ""), blocks=p.get("blocks", []),
                           edited={"user": "U0WAVEKIT", "ts": self._next_ts()})
            return {"ok": True, "channel": key[0], "ts": key[1], "text": message["text"],
                    "message": message}
        if method == "chat.postEphemeral":
            if not p.get("channel") or not p.get("user"):
                return {"ok": False, "error": "user_not_in_channel"}
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "conversations.open":
            users = str(p.get("users", ""))
            if not users:
                return {"ok": False, "error": "users_list_not_supplied"}
            if users in self.unknown_users:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "channel": {"id": "D" + users.split(",")[0][1:]}}
        if method == "views.open":
            if not p.get("trigger_id") or not isinstance(p.get("view"), dict):
                return {"ok": False, "error": "invalid_arguments"}
            return {"ok": True, "view": {"id": "V0WAVEKIT", **p["view"]}}
        return {"ok": False, "error": "unknown_method"}


def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {}
    if "json" in content_type:
        params = json.loads(body)
    else:
        params = {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}
    for key in _JSON_FIELDS:  # form posts carry these as JSON strings
        if isinstance(params.get(key), str):
            params[key] = json.loads(params[key])
    return params


def _channel_id(channel: str) -> str:
    if channel[:1] in ("C", "D", "G"):
        return channel
    return "C" + hashlib.sha1(channel.encode()).hexdigest()[:8].upper()


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:  # startup takes milliseconds; this only waits for the bind
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def _slack_double_server() -> Iterator[SlackDouble]:
    double = SlackDouble()
    app = Starlette(routes=[Route("/api/{method}", double.handle, methods=["POST", "GET"])])
    with serve_asgi(app) as url:
        double.base_url = f"{url}/api/"
        yield double


@pytest.fixture
def slack_double(_slack_double_server: SlackDouble) -> SlackDouble:
    """The Slack Web API double, emptied for this test."""
    _slack_double_server.reset()
    return _slack_double_server


# ---------------------------------------------------------------------- signed requests


def sign(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    """Slack's request signature: v0=HMAC-SHA256(secret, "v0:<ts>:<body>")."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_request(payload: dict[str, Any], timestamp: int,
                   secret: str = SIGNING_SECRET) -> tuple[bytes, dict[str, str]]:
    """The body and headers Slack sends to an interactivity Request URL."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Slack-Request-Timestamp": str(timestamp),
               "X-Slack-Signature": sign(body, timestamp, secret)}
    return body, headers


def block_actions(user_id: str, action_id: str, value: str, *, channel: str = CHANNEL,
                  message_ts: str = "1700000000.000100", username: str = "",
                  trigger_id: str = "13345224609.738474920.8088930838d88f008e0") -> dict[str, Any]:
    """A block_actions payload as Slack sends it for a button click in a message."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": username or user_id.lower(),
                 "name": username or user_id.lower(), "team_id": "T0WAVEKIT"},
        "api_app_id": "A0WAVEKIT",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": trigger_id,
        "team": {"id": "T0WAVEKIT", "domain": "wavekit-test"},
        "channel": {"id": channel, "name": "iam-releases"},
        "message": {"type": "message", "ts": message_ts, "text": "Approval needed"},
        "response_url": "https://hooks.slack.com/actions/T0WAVEKIT/1/abc",
        "actions": [{"action_id": action_id, "block_id": "wavekit_decision", "value": value,
                     "type": "button", "action_ts": "1700000001.000200",
                     "text": {"type": "plain_text", "text": action_id}}],
    }


def view_submission(user_id: str, private_metadata: str, reason: str, *,
                    callback_id: str = "wavekit_reject_reason",
                    username: str = "") -> dict[str, Any]:
    """A view_submission payload for the reject-reason modal."""
    return {
        "type": "view_submission",
        "team": {"id": "T0WAVEKIT", "domain": "wavekit-test"},
        "user": {"id": user_id, "username": username or user_id.lower(),
                 "name": username or user_id.lower(), "team_id": "T0WAVEKIT"},
        "api_app_id": "A0WAVEKIT",
        "token": "legacy-verification-token",
        "trigger_id": "12466734323.1395872398.ff0d8f27bba5a2f33c1b6d7c4d0e3c5e",
        "view": {
            "id": "V0WAVEKIT", "type": "modal", "callback_id": callback_id,
            "private_metadata": private_metadata,
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input",
                                                       "value": reason}}}},
        },
        "response_urls": [],
    }
