"""Telling people: the Notifier interface, its Slack implementation, and a silent one.

The handoff message (with the buttons) goes to the release channel, where the owner and the
delegates can all act on it; the owner also gets a direct message pointing at it. Reminders
go to the owner, escalations to the delegates, both in the handoff's thread and by DM.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from wavekit.adapters.slack import messages
from wavekit.adapters.slack.messages import Gate
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, Release
from wavekit.adapters.store.packages import load_package_view

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 60.0  # never let one Retry-After header stall a flow task for long


class RateLimitRetry(RateLimitErrorRetryHandler):
    """Slack's 429 handling (wait Retry-After, then retry) with an injectable sleep."""

    def __init__(self, max_retry_count: int = 3,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._sleep = sleep

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None,
                                 error: Exception | None = None) -> None:
        if response is None:
            assert error is not None, "slack_sdk passes the error when there is no response"
            raise error
        state.next_attempt_requested = True
        header = next((v for k, v in response.headers.items() if k.lower() == "retry-after"),
                      None)
        try:
            delay = float(header[0]) if header else 1.0
        except ValueError:
            delay = 1.0
        # Jitter spreads retries of concurrent package runs, as slack_sdk's own handler does.
        self._sleep(min(MAX_RETRY_AFTER, delay + random.random() / 10))
        state.increment_current_attempt()


def make_web_client(token: str, *, base_url: str = "https://slack.com/api/",
                    max_retries: int = 3, sleep: Callable[[float], None] = time.sleep,
                    timeout: int = 10) -> WebClient:
    """A WebClient that retries rate limits (429, honouring Retry-After) and dropped connections."""
    return WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[
        ConnectionErrorRetryHandler(max_retry_count=1),
        RateLimitRetry(max_retry_count=max_retries, sleep=sleep),
    ])


@runtime_checkable
class Notifier(Protocol):
    """How flows and receivers tell people about approvals, holds, gates and rollbacks."""

    def post_handoff(self, *, approval_id: int, package_key: str, package_name: str,
                     wave: int | None, owner_slack_id: str | None, members: int,
                     entitlements: int, risk: str, counts: Mapping[str, int],
                     gates: Sequence[Gate] = (), flow_run_url: str | None = None,
                     deadline: datetime | None = None,
                     triggered_by: str | None = None) -> tuple[str, str] | None:
        """Post the Approve/Reject message; (channel, ts) of it, or None if nothing was posted."""
        ...

    def mark_decided(self, *, channel: str | None, ts: str | None, package_name: str,
                     wave: int | None, decision: str, approver: str | None,
                     decided_at: datetime, comment: str | None = None,
                     flow_run_url: str | None = None) -> None:
        """Replace the handoff message by its decided version (no buttons)."""
        ...

    def remind(self, *, channel: str | None, ts: str | None, package_name: str,
               wave: int | None, owner_slack_id: str | None,
               deadline: datetime | None) -> None:
        """Remind the owner that the handoff waits."""
        ...

    def escalate(self, *, channel: str | None, ts: str | None, package_name: str,
                 wave: int | None, owner_slack_id: str | None,
                 delegate_slack_ids: Sequence[str], deadline: datetime | None) -> None:
        """Ask the delegates to decide in the owner's place."""
        ...

    def post_rollback(self, *, package_key: str, package_name: str, wave: int | None,
                      reason: str, prior_count: int, readback_count: int, equal: bool,
                      mismatches: Sequence[tuple[str, str]] = (),
                      owner_slack_id: str | None = None,
                      flow_run_url: str | None = None) -> None:
        """Report a rollback with its read-back proof."""
        ...

    def post_held(self, *, package_key: str, package_name: str, wave: int | None, reason: str,
                  owner_slack_id: str | None = None, flow_run_url: str | None = None) -> None:
        """Report a package held back, with the reason."""
        ...

    def post_gate_failed(self, *, package_key: str, package_name: str, wave: int | None,
                         gates: Sequence[Gate], owner_slack_id: str | None = None,
                         flow_run_url: str | None = None) -> None:
        """Report failed policy gates."""
        ...

    def post_contained(self, *, package_key: str, package_name: str, wave: int | None,
                       reason: str, identities: Sequence[str] = (),
                       grants: Sequence[tuple[str, str]] = (),
                       owner_slack_id: str | None = None,
                       flow_run_url: str | None = None) -> None:
        """Report a containment: who and which grants were suspended, and why."""
        ...


class NullNotifier:
    """No Slack configured: approvals happen in the Prefect UI and nobody is messaged."""

    def post_handoff(self, **_: Any) -> None:
        return None

    def mark_decided(self, **_: Any) -> None:
        return None

    def remind(self, **_: Any) -> None:
        return None

    def escalate(self, **_: Any) -> None:
        return None

    def post_rollback(self, **_: Any) -> None:
        return None

    def post_held(self, **_: Any) -> None:
        return None

    def post_gate_failed(self, **_: Any) -> None:
        return None

    def post_contained(self, **_: Any) -> None:
        return None


class SlackNotifier:
    """Posts to the release `channel` and to people's DMs through a slack_sdk WebClient."""

    def __init__(self, web_client: WebClient, channel: str) -> None:
        self.client = web_client
        self.channel = channel

    def _post(self, message: messages.Message, *, channel: str | None = None,
              thread_ts: str | None = None, broadcast: bool = False) -> tuple[str, str]:
        kwargs: dict[str, Any] = {}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
            if broadcast:
                kwargs["reply_broadcast"] = True
        resp = self.client.chat_postMessage(channel=channel or self.channel, text=message["text"],
                                            blocks=message["blocks"], **kwargs)
        return str(resp["channel"]), str(resp["ts"])

    def _dm(self, user_id: str, message: messages.Message) -> None:
        """A direct message; best effort, since the channel post already carries the news."""
        try:
            opened = self.client.conversations_open(users=user_id)
            self._post(message, channel=opened["channel"]["id"])
        except SlackApiError as exc:
            log.warning("could not message %s directly: %s", user_id, exc.response.get("error"))

    def post_handoff(self, *, approval_id: int, package_key: str, package_name: str,
                     wave: int | None, owner_slack_id: str | None, members: int,
                     entitlements: int, risk: str, counts: Mapping[str, int],
                     gates: Sequence[Gate] = (), flow_run_url: str | None = None,
                     deadline: datetime | None = None,
                     triggered_by: str | None = None) -> tuple[str, str]:
        msg = messages.handoff_message(
            approval_id=approval_id, package_key=package_key, package_name=package_name,
            wave=wave, owner_slack_id=owner_slack_id, members=members,
            entitlements=entitlements, risk=risk, counts=counts, gates=gates,
            flow_run_url=flow_run_url, deadline=deadline, triggered_by=triggered_by)
        channel, ts = self._post(msg)
        if owner_slack_id:
            self._dm(owner_slack_id, messages.handoff_dm(
                package_name=package_name, wave=wave, channel=channel,
                owner_slack_id=owner_slack_id))
        return channel, ts

    def mark_decided(self, *, channel: str | None, ts: str | None, package_name: str,
                     wave: int | None, decision: str, approver: str | None,
                     decided_at: datetime, comment: str | None = None,
                     flow_run_url: str | None = None) -> None:
        msg = messages.decided_message(package_name=package_name, wave=wave, decision=decision,
                                       approver=approver, decided_at=decided_at,
                                       comment=comment, flow_run_url=flow_run_url)
        if channel and ts:
            self.client.chat_update(channel=channel, ts=ts, text=msg["text"],
                                    blocks=msg["blocks"])
        else:
            self._post(msg)

    def remind(self, *, channel: str | None, ts: str | None, package_name: str,
               wave: int | None, owner_slack_id: str | None,
               deadline: datetime | None) -> None:
        msg = messages.reminder_message(package_name=package_name, wave=wave,
                                        owner_slack_id=owner_slack_id, deadline=deadline)
        self._post(msg, channel=channel, thread_ts=ts)
        if owner_slack_id:
            self._dm(owner_slack_id, msg)

    def escalate(self, *, channel: str | None, ts: str | None, package_name: str,
                 wave: int | None, owner_slack_id: str | None,
                 delegate_slack_ids: Sequence[str], deadline: datetime | None) -> None:
        msg = messages.escalation_message(package_name=package_name, wave=wave,
                                          owner_slack_id=owner_slack_id,
                                          delegate_slack_ids=delegate_slack_ids,
                                          deadline=deadline)
        # Broadcast the thread reply so the channel sees the escalation, not just the thread.
        self._post(msg, channel=channel, thread_ts=ts, broadcast=True)
        for delegate in delegate_slack_ids:
            self._dm(delegate, msg)

    def post_rollback(self, *, package_key: str, package_name: str, wave: int | None,
                      reason: str, prior_count: int, readback_count: int, equal: bool,
                      mismatches: Sequence[tuple[str, str]] = (),
                      owner_slack_id: str | None = None,
                      flow_run_url: str | None = None) -> None:
        self._post(messages.rollback_message(
            package_key=package_key, package_name=package_name, wave=wave, reason=reason,
            prior_count=prior_count, readback_count=readback_count, equal=equal,
            mismatches=mismatches, owner_slack_id=owner_slack_id, flow_run_url=flow_run_url))

    def post_held(self, *, package_key: str, package_name: str, wave: int | None, reason: str,
                  owner_slack_id: str | None = None, flow_run_url: str | None = None) -> None:
        self._post(messages.held_message(
            package_key=package_key, package_name=package_name, wave=wave, reason=reason,
            owner_slack_id=owner_slack_id, flow_run_url=flow_run_url))

    def post_gate_failed(self, *, package_key: str, package_name: str, wave: int | None,
                         gates: Sequence[Gate], owner_slack_id: str | None = None,
                         flow_run_url: str | None = None) -> None:
        self._post(messages.gate_failed_message(
            package_key=package_key, package_name=package_name, wave=wave, gates=gates,
            owner_slack_id=owner_slack_id, flow_run_url=flow_run_url))

    def post_contained(self, *, package_key: str, package_name: str, wave: int | None,
                       reason: str, identities: Sequence[str] = (),
                       grants: Sequence[tuple[str, str]] = (),
                       owner_slack_id: str | None = None,
                       flow_run_url: str | None = None) -> None:
        message = messages.contained_message(
            package_key=package_key, package_name=package_name, wave=wave, reason=reason,
            identities=identities, grants=grants, owner_slack_id=owner_slack_id,
            flow_run_url=flow_run_url)
        self._post(message)
        if owner_slack_id:
            self._dm(owner_slack_id, message)


def announce_handoff(database_url: str, approval_id: int, notifier: Notifier, *,
                     gates: Sequence[Gate] = (), flow_run_url: str | None = None,
                     counts: Mapping[str, int] | None = None) -> tuple[str, str] | None:
    """Post the handoff for a stored Approval and keep its Slack channel/ts on the row.

    Counts default to the release's adds / removes / retirements.
    """
    with session_scope(database_url) as s:
        approval = s.get(Approval, approval_id)
        if approval is None:
            raise KeyError(f"no approval #{approval_id} in the store")
        release = s.get(Release, approval.release_id)
        pkg = load_package_view(s, approval.package_key)
        plan = dict(counts) if counts is not None else {
            "adds": release.adds if release else 0,
            "removes": release.removes if release else 0,
            "retirements": release.retirements if release else 0}
        triggered_by = release.triggered_by if release else None
        deadline = approval.deadline
    posted = notifier.post_handoff(
        approval_id=approval_id, package_key=pkg.key, package_name=pkg.name, wave=pkg.wave,
        owner_slack_id=pkg.owner_slack_id, members=len(pkg.members),
        entitlements=len(pkg.entitlements), risk=pkg.risk, counts=plan, gates=gates,
        flow_run_url=flow_run_url, deadline=deadline, triggered_by=triggered_by)
    if posted is None:
        return None
    channel, ts = posted
    with session_scope(database_url) as s:
        approval = s.get(Approval, approval_id)
        assert approval is not None
        approval.channel, approval.slack_channel, approval.slack_ts = "slack", channel, ts
        s.add(approval)
        audit.record(s, "approval_posted", package_key=pkg.key, wave=pkg.wave,
                     release_id=approval.release_id, flow_run_id=approval.flow_run_id,
                     approval_id=approval_id, channel="slack", slack_channel=channel,
                     slack_ts=ts, owner=pkg.owner_slack_id)
    return channel, ts
