"""Slack interactivity over Socket Mode: no public Request URL, an outbound WebSocket instead.

Socket Mode requests are not signed (the app-level token authenticates the connection),
so the handler skips the signature check and feeds the same `Interactions.handle` as the
HTTP receiver. Each envelope is acknowledged with the handler's answer (for a rejected
modal submission, the field errors Slack shows in the modal).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from wavekit.adapters.slack.receiver import Interactions, Resumer, prefect_resumer
from wavekit.domain.clock import Clock, SystemClock

log = logging.getLogger(__name__)


class _Acknowledger(Protocol):
    def send_socket_mode_response(self, response: SocketModeResponse) -> None: ...


Handler = Callable[[Any, SocketModeRequest], None]


def make_socket_handler(interactions: Interactions) -> Handler:
    """A SocketModeClient request listener that processes interactions and acks them."""

    def handle(client: _Acknowledger, req: SocketModeRequest) -> None:
        if req.type != "interactive":
            # Events and slash commands are not ours; ack so Slack does not retry them.
            client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        try:
            answer = interactions.handle(req.payload)
        except Exception:
            log.exception("failed to process a Slack interaction")
            answer = None
        client.send_socket_mode_response(
            SocketModeResponse(envelope_id=req.envelope_id, payload=answer))

    return handle


def connect_socket_mode(
    app_token: str,
    *,
    database_url: str,
    web_client: WebClient,
    resume: Resumer = prefect_resumer,
    clock: Clock | None = None,
    ui_url: str | None = None,
) -> Any:
    """Open a Socket Mode connection serving approvals; returns the connected client."""
    from slack_sdk.socket_mode import SocketModeClient

    interactions = Interactions(database_url, web_client, resume, clock or SystemClock(), ui_url)
    client = SocketModeClient(app_token=app_token, web_client=web_client)
    client.socket_mode_request_listeners.append(make_socket_handler(interactions))
    client.connect()
    return client


def run_socket_mode(app_token: str, **kwargs: Any) -> None:
    """Serve approvals over Socket Mode until interrupted (`wavekit slack-receiver --socket`)."""
    client = connect_socket_mode(app_token, **kwargs)
    try:
        threading.Event().wait()
    finally:
        client.close()
