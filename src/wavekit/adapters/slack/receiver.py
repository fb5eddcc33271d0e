"""Slack interactivity: Approve / Reject clicks and the reject-reason modal, over HTTP.

Per request, before anything is parsed or stored: rate limit by client address (429), cap
the body while reading it (413), verify signature and timestamp (401). Only then is the
payload decoded strictly into typed models (`payloads`; 400 if it does not fit) and its
signature remembered against replays (401). Those refusals are counted in memory and
logged in one line, never audited: anyone can send them. A click is judged with
`decide()`; on accept the decision is recorded in the store first, then the paused flow
run resumed, then the message replaced by its decided version. Refused clicks are answered
with an ephemeral message and audited; nothing is resumed. Work is done inline: it is well
under Slack's 3-second limit. `Interactions.handle` is shared with the Socket Mode client.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wavekit.adapters.slack import messages
from wavekit.adapters.slack.payloads import (
    BlockActions,
    Interaction,
    PayloadError,
    RejectSubmission,
    User,
    parse_form,
    parse_interaction,
)
from wavekit.adapters.slack.payloads import approval_id as payload_approval_id
from wavekit.adapters.slack.signing import check_signature, remember_signature
from wavekit.adapters.store import audit
from wavekit.adapters.store.approvals import ApprovalContext, load_context, refuse, settle
from wavekit.adapters.store.engine import session_scope
from wavekit.domain.clock import Clock, SystemClock, as_utc
from wavekit.domain.decisions import (
    STORED_DECISION,
    Click,
    Outcome,
    Ruling,
    decide,
)

log = logging.getLogger(__name__)

Resumer = Callable[[str, dict[str, Any]], None]


def prefect_resumer(flow_run_id: str, run_input: dict[str, Any]) -> None:
    """Resume a paused flow run with the decision as its typed input (ApprovalInput)."""
    from prefect.flow_runs import resume_flow_run

    # _sync: called from anything with a running event loop, Prefect's async_dispatch would
    # hand back an un-awaited coroutine and the run would silently stay paused.
    resume_flow_run(UUID(flow_run_id), run_input=run_input, _sync=True)  # type: ignore[call-arg]  # async_dispatch takes _sync; its typed signature omits it


_Context = ApprovalContext


def _load(session: Any, approval_id: int) -> _Context | None:
    return load_context(session, approval_id)


@dataclass
class Interactions:
    """Turns Slack interaction payloads into recorded decisions and resumed flow runs."""

    database_url: str
    web_client: WebClient
    resume: Resumer = prefect_resumer
    clock: Clock = field(default_factory=SystemClock)
    ui_url: str | None = None

    # ------------------------------------------------------------------ entry point

    def handle(self, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        """Process one decoded payload (Socket Mode's); a malformed one is logged and dropped.

        The JSON body to answer Slack with, or None for an empty acknowledgement.
        """
        try:
            interaction = parse_interaction(payload)
        except PayloadError as exc:
            log.warning("ignored a malformed Slack interaction: %s", exc)
            return None
        return self.dispatch(interaction)

    def dispatch(self, interaction: Interaction) -> dict[str, Any] | None:
        """Process one validated interaction; the JSON answer, or None for an empty 200."""
        if isinstance(interaction, BlockActions):
            self._block_actions(interaction)
        elif isinstance(interaction, RejectSubmission):
            return self._reject_submitted(interaction)
        else:
            log.info("ignored a Slack interaction: %s", interaction.what)
        return None

    # ------------------------------------------------------------------ payload kinds

    def _block_actions(self, payload: BlockActions) -> None:
        user, channel = payload.user, payload.channel_id
        for action in payload.actions:
            if action.action_id not in (messages.APPROVE_ACTION, messages.REJECT_ACTION):
                continue
            approval_id = payload_approval_id(action.value)
            if action.action_id == messages.APPROVE_ACTION:
                self._settle(approval_id, Click(user.id, "approve", user.display), channel)
            else:
                self._open_reject(approval_id, payload.trigger_id, user, channel)

    def _open_reject(self, approval_id: int | None, trigger_id: str | None, user: User,
                     channel: str | None) -> None:
        click = Click(user.id, "reject", user.display)
        with session_scope(self.database_url) as s:
            settled = settle(s, approval_id, click, channel="slack", proof="slack",
                             now=self.clock.now(), need_reason=False)
        outcome, ctx = settled.outcome, settled.ctx
        if outcome.accepted and ctx is not None:
            # The reason is asked for in a modal; its submission carries the decision.
            view = messages.reject_modal(approval_id=ctx.facts.approval_id,
                                         package_name=ctx.package_name, wave=ctx.wave,
                                         channel=channel)
            try:
                self.web_client.views_open(trigger_id=trigger_id, view=view)
            except SlackClientError as exc:
                log.warning("could not open the reject modal for %s: %s", click.user_id, exc)
        else:
            self._answer(channel, click.user_id, outcome)

    def _reject_submitted(self, submission: RejectSubmission) -> dict[str, Any] | None:
        user = submission.user
        click = Click(user.id, "reject", user.display, comment=submission.reason.strip())
        outcome = self._settle(submission.approval_id, click, submission.channel)
        if outcome.verdict is Ruling.REFUSE:
            # Shown under the reason field; the modal stays open.
            return {"response_action": "errors",
                    "errors": {messages.REASON_BLOCK: outcome.reason[:150]}}
        return None

    # ------------------------------------------------------------------ deciding

    def _judge(self, ctx: _Context | None, click: Click, *, need_reason: bool = True
               ) -> Outcome:
        if ctx is None:
            return Outcome(Ruling.REFUSE, "this approval is unknown to wavekit")
        return decide(click, ctx.facts, self.clock.now(), need_reason=need_reason)

    def _settle(self, approval_id: int | None, click: Click, channel: str | None) -> Outcome:
        """Judge a final click (the one rule, `settle`); when it decides the approval, resume
        the run and update the message. A sign-off that leaves four eyes waiting resumes
        nothing: the run waits for the next approver."""
        now = self.clock.now()
        with session_scope(self.database_url) as s:
            settled = settle(s, approval_id, click, channel="slack", proof="slack", now=now)
        outcome, ctx = settled.outcome, settled.ctx
        if settled.final and ctx is not None:
            self._after_decision(ctx, click, STORED_DECISION[click.action], now, channel)
        elif outcome.accepted:
            self._ephemeral(channel, click.user_id, messages.notice_message(
                f"Your approval is recorded; {ctx.facts.required if ctx else 2} different "
                "approvers must approve before it deploys."))
        else:
            self._answer(channel, click.user_id, outcome)
        return outcome

    def _after_decision(self, ctx: _Context, click: Click, stored: str, now: datetime,
                        channel: str | None) -> None:
        # The run reads the decision from the store; the input only has to fit the form.
        run_input = {"decision": click.action, "approver": click.user_id, "code": "",
                     "comment": click.comment}
        error = "" if ctx.flow_run_id else "the approval names no flow run"
        if ctx.flow_run_id:
            try:
                self.resume(ctx.flow_run_id, run_input)
            except Exception as exc:  # the decision stands; the flow reads it on its re-run
                log.warning("could not resume flow run %s: %s", ctx.flow_run_id, exc)
                error = str(exc)[:500] or type(exc).__name__
        if error:
            with session_scope(self.database_url) as s:
                audit.record(s, "approval_resume_failed", package_key=ctx.package_key,
                             wave=ctx.wave, release_id=ctx.release_id,
                             flow_run_id=ctx.flow_run_id, at=now,
                             approval_id=ctx.facts.approval_id, error=error)
        url = (messages.flow_run_url(self.ui_url, ctx.flow_run_id)
               if self.ui_url and ctx.flow_run_id else None)
        msg = messages.decided_message(package_name=ctx.package_name, wave=ctx.wave,
                                       decision=stored, approver=click.user_id,
                                       decided_at=as_utc(now), comment=click.comment,
                                       flow_run_url=url)
        if ctx.slack_channel and ctx.slack_ts:
            try:
                self.web_client.chat_update(channel=ctx.slack_channel, ts=ctx.slack_ts,
                                            text=msg["text"], blocks=msg["blocks"])
            except SlackClientError as exc:
                log.warning("could not update the Slack message of approval #%s: %s",
                            ctx.facts.approval_id, exc)
        if error:
            self._ephemeral(channel, click.user_id, messages.notice_message(
                "Your decision is recorded, but the paused flow run could not be resumed; "
                "it is in the audit log for the release manager."))

    # ------------------------------------------------------------------ answering

    def _audit_refusal(self, session: Any, ctx: _Context | None, approval_id: int | None,
                       click: Click, outcome: Outcome) -> None:
        refuse(session, ctx, approval_id, click, outcome, channel="slack", now=self.clock.now())

    def _answer(self, channel: str | None, user_id: str, outcome: Outcome) -> None:
        if outcome.verdict is Ruling.ALREADY_DECIDED:
            self._ephemeral(channel, user_id, messages.already_decided_message(
                outcome.reason[0].upper() + outcome.reason[1:] + "."))
        elif outcome.verdict is Ruling.REFUSE:
            self._ephemeral(channel, user_id, messages.refusal_message(outcome.reason))

    def _ephemeral(self, channel: str | None, user_id: str, msg: messages.Message) -> None:
        if not channel or not user_id:
            return
        try:
            self.web_client.chat_postEphemeral(channel=channel, user=user_id, text=msg["text"],
                                               blocks=msg["blocks"])
        except SlackClientError as exc:
            log.warning("could not answer %s in Slack: %s", user_id, exc)


# ---------------------------------------------------------------------- the HTTP receiver

MAX_BODY_BYTES = 64 * 1024  # Slack's interaction payloads for wavekit's messages are a few KiB
MAX_FAILURES_PER_MINUTE = 20
_CLOSE = {"connection": "close"}


@dataclass
class ReceiverStats:
    """Requests the receiver turned away, counted in memory (also shown by GET /healthz)."""

    unauthenticated: int = 0  # 401: unsigned, badly signed, stale or replayed
    rate_limited: int = 0  # 429: too many failures from one client address
    too_large: int = 0  # 413: body over the cap
    malformed: int = 0  # 400: signed, but not an interaction wavekit accepts
    errors: int = 0  # 500: a bug or an unavailable store

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class FailureLimiter:
    """At most `limit` failures per client address in any `window` seconds.

    Holds the last `limit` failure times of at most `max_clients` addresses (the least
    recently failing are forgotten first), so its memory is bounded whoever calls.
    """

    def __init__(self, limit: int, window: float = 60.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_clients, self._clock = limit, window, max_clients, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked(self, client: str) -> bool:
        times = self._failures.get(client)
        return (times is not None and len(times) >= self.limit
                and self._clock() - times[0] < self.window)

    def fail(self, client: str) -> None:
        times = self._failures.pop(client, None) or deque(maxlen=self.limit)
        times.append(self._clock())
        self._failures[client] = times
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class _CatchAll:
    """ASGI middleware: an unhandled exception is one log line and a generic 500."""

    def __init__(self, app: ASGIApp, stats: ReceiverStats) -> None:
        self.app, self.stats = app, stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            self.stats.errors += 1
            log.error("error answering %s %s: %s: %s", scope.get("method"), scope.get("path"),
                      type(exc).__name__, _one_line(exc))
            log.debug("traceback of that error", exc_info=exc)
            if not started:
                await PlainTextResponse("internal error", status_code=500,
                                        headers=_CLOSE)(scope, receive, send)


def _one_line(exc: BaseException) -> str:
    text = str(exc).split("\n", 1)[0][:200]
    return "".join(c if c.isprintable() else "?" for c in text)


def create_receiver_app(
    database_url: str,
    signing_secret: str,
    web_client: WebClient,
    resume: Resumer = prefect_resumer,
    clock: Clock | None = None,
    ui_url: str | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_failures_per_minute: int = MAX_FAILURES_PER_MINUTE,
) -> Starlette:
    """The ASGI app: POST /slack/interactivity (Slack's Request URL) and GET /healthz.

    In order, before anything is written to the store: a client address with
    `max_failures_per_minute` recent failures gets 429; a body over `max_body_bytes` gets 413
    (read no further); a bad, stale or replayed signature gets 401; a payload that is not an
    interaction wavekit accepts gets 400. Refusals are counted in `app.state.stats` and
    logged in one line; they are not audited (anyone can send them). Decisions by
    authenticated users, refused or not, are audited by `Interactions`.
    """
    interactions = Interactions(database_url, web_client, resume, clock or SystemClock(), ui_url)
    stats = ReceiverStats()
    limiter = FailureLimiter(max_failures_per_minute)

    def refuse(client: str, status: int, text: str, why: str) -> Response:
        limiter.fail(client)
        log.warning("refused a Slack request from %s (%d): %s", client, status, why)
        return PlainTextResponse(text, status_code=status, headers=_CLOSE)

    async def interactivity(request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        if limiter.blocked(client):
            stats.rate_limited += 1
            return PlainTextResponse("too many refused requests; try again later",
                                     status_code=429, headers={"retry-after": "60", **_CLOSE})
        try:
            body = await _read_body(request, max_body_bytes)
        except _BodyTooLarge:
            stats.too_large += 1
            return refuse(client, 413, "request body too large",
                          f"body over {max_body_bytes} bytes")
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening any more
        now = interactions.clock.now()
        check = check_signature(body, request.headers, signing_secret, now)
        if not check.ok:
            stats.unauthenticated += 1
            return refuse(client, 401, f"refused: {check.reason}", check.reason)
        try:
            interaction = parse_form(body, request.headers.get("content-type"))
        except PayloadError as exc:
            stats.malformed += 1
            log.warning("refused a signed Slack request from %s (400): %s", client, exc)
            return PlainTextResponse("not a Slack interaction wavekit accepts",
                                     status_code=400)
        if not await run_in_threadpool(remember_signature, database_url, check.signature, now):
            stats.unauthenticated += 1
            reason = "replayed request (signature already seen)"
            return refuse(client, 401, f"refused: {reason}", reason)
        answer = await run_in_threadpool(interactions.dispatch, interaction)
        return JSONResponse(answer) if answer else Response(status_code=200)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True, "refused": stats.as_dict()})

    app = Starlette(routes=[
        Route("/slack/interactivity", interactivity, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ], middleware=[Middleware(_CatchAll, stats=stats)])
    app.state.stats = stats
    app.state.limiter = limiter
    return app


def run_receiver(
    host: str,
    port: int,
    *,
    database_url: str,
    signing_secret: str,
    web_client: WebClient,
    resume: Resumer = prefect_resumer,
    ui_url: str | None = None,
    log_level: str = "info",
    max_body_bytes: int = MAX_BODY_BYTES,
    max_failures_per_minute: int = MAX_FAILURES_PER_MINUTE,
) -> None:
    """Serve the receiver with uvicorn until interrupted (`wavekit slack-receiver`)."""
    import uvicorn

    app = create_receiver_app(database_url, signing_secret, web_client, resume, ui_url=ui_url,
                              max_body_bytes=max_body_bytes,
                              max_failures_per_minute=max_failures_per_minute)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
