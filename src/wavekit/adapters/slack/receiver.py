"""Slack interactivity: Approve / Reject clicks and the reject-reason modal, over HTTP.

Per request: verify the signature (401 and an audit event if not), judge the click with
`decide()`, and on accept record the decision in the store first, then resume the paused
flow run, then replace the message by its decided version. Refusals are answered with an
ephemeral message and audited; nothing is resumed. Work is done inline: it is well under
Slack's 3-second limit. `Interactions.handle` is shared with the Socket Mode client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from sqlalchemy import update
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from wavekit.adapters.slack import messages
from wavekit.adapters.slack.signing import verify_request
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, Release
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.clock import Clock, SystemClock, as_utc
from wavekit.domain.decisions import (
    STORED_DECISION,
    ApprovalFacts,
    Click,
    Outcome,
    Verdict,
    decide,
)

log = logging.getLogger(__name__)

Resumer = Callable[[str, dict[str, Any]], None]


def prefect_resumer(flow_run_id: str, run_input: dict[str, Any]) -> None:
    """Resume a paused flow run with the decision as its typed input (ApprovalInput)."""
    from prefect.flow_runs import resume_flow_run

    # _sync: called from anything with a running event loop, Prefect's async_dispatch would
    # hand back an un-awaited coroutine and the run would silently stay paused.
    resume_flow_run(UUID(flow_run_id), run_input=run_input, _sync=True)


@dataclass(frozen=True)
class _Context:
    """One approval as the receiver needs it: the rules' facts and what the message shows."""

    facts: ApprovalFacts
    package_key: str
    package_name: str
    wave: int | None
    release_id: int
    flow_run_id: str | None
    slack_channel: str | None
    slack_ts: str | None


def _load(session: Any, approval_id: int) -> _Context | None:
    approval = session.get(Approval, approval_id)
    if approval is None:
        return None
    release = session.get(Release, approval.release_id)
    pkg = load_package_view(session, approval.package_key)
    names = {d["slack_id"]: d.get("name", "") for d in pkg.delegates if d.get("slack_id")}
    if pkg.owner_slack_id:
        names[pkg.owner_slack_id] = pkg.owner_name
    facts = ApprovalFacts(
        approval_id=approval_id, approvers=pkg.approvers, names=names,
        owner_name=pkg.owner_name, triggered_by=release.triggered_by if release else None,
        deadline=approval.deadline, decided_at=approval.decided_at,
        decision=approval.decision, decided_by=approval.approver)
    return _Context(facts=facts, package_key=pkg.key, package_name=pkg.name, wave=pkg.wave,
                    release_id=approval.release_id, flow_run_id=approval.flow_run_id,
                    slack_channel=approval.slack_channel, slack_ts=approval.slack_ts)


@dataclass
class Interactions:
    """Turns Slack interaction payloads into recorded decisions and resumed flow runs."""

    database_url: str
    web_client: WebClient
    resume: Resumer = prefect_resumer
    clock: Clock = field(default_factory=SystemClock)
    ui_url: str | None = None

    # ------------------------------------------------------------------ entry point

    def handle(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Process one payload; the JSON body to answer Slack with, or None for an empty 200."""
        kind = payload.get("type")
        if kind == "block_actions":
            return self._block_actions(payload)
        if kind == "view_submission":
            view = payload.get("view") or {}
            if view.get("callback_id") == messages.REJECT_CALLBACK:
                return self._reject_submitted(payload, view)
        return None

    # ------------------------------------------------------------------ payload kinds

    def _block_actions(self, payload: dict[str, Any]) -> None:
        user = payload.get("user") or {}
        channel = ((payload.get("channel") or {}).get("id")
                   or (payload.get("container") or {}).get("channel_id"))
        for action in payload.get("actions") or ():
            action_id = action.get("action_id")
            if action_id not in (messages.APPROVE_ACTION, messages.REJECT_ACTION):
                continue
            approval_id = _approval_id(action.get("value"))
            if action_id == messages.APPROVE_ACTION:
                self._settle(approval_id, Click(user.get("id", ""), "approve",
                                                user.get("username") or user.get("name", "")),
                             channel)
            else:
                self._open_reject(approval_id, payload, user, channel)
        return None

    def _open_reject(self, approval_id: int | None, payload: dict[str, Any],
                     user: dict[str, Any], channel: str | None) -> None:
        click = Click(user.get("id", ""), "reject", user.get("username") or user.get("name", ""))
        with session_scope(self.database_url) as s:
            ctx = _load(s, approval_id) if approval_id is not None else None
            outcome = self._judge(ctx, click, need_reason=False)
            if outcome.verdict is Verdict.REFUSE:
                self._audit_refusal(s, ctx, approval_id, click, outcome)
        if outcome.accepted and ctx is not None:
            # The reason is asked for in a modal; its submission carries the decision.
            view = messages.reject_modal(approval_id=ctx.facts.approval_id,
                                         package_name=ctx.package_name, wave=ctx.wave,
                                         channel=channel)
            try:
                self.web_client.views_open(trigger_id=payload.get("trigger_id"), view=view)
            except SlackClientError as exc:
                log.warning("could not open the reject modal for %s: %s", click.user_id, exc)
        else:
            self._answer(channel, click.user_id, outcome)

    def _reject_submitted(self, payload: dict[str, Any], view: dict[str, Any]
                          ) -> dict[str, Any] | None:
        user = payload.get("user") or {}
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            meta = {}
        values = (view.get("state") or {}).get("values") or {}
        reason = ((values.get(messages.REASON_BLOCK) or {}).get(messages.REASON_INPUT)
                  or {}).get("value") or ""
        click = Click(user.get("id", ""), "reject", user.get("username") or user.get("name", ""),
                      comment=reason.strip())
        outcome = self._settle(_approval_id(meta.get("approval_id")), click, meta.get("channel"))
        if outcome.verdict is Verdict.REFUSE:
            # Shown under the reason field; the modal stays open.
            return {"response_action": "errors",
                    "errors": {messages.REASON_BLOCK: outcome.reason[:150]}}
        return None

    # ------------------------------------------------------------------ deciding

    def _judge(self, ctx: _Context | None, click: Click, *, need_reason: bool = True
               ) -> Outcome:
        if ctx is None:
            return Outcome(Verdict.REFUSE, "this approval is unknown to wavekit")
        return decide(click, ctx.facts, self.clock.now(), need_reason=need_reason)

    def _settle(self, approval_id: int | None, click: Click, channel: str | None) -> Outcome:
        """Judge a final click; on accept record it, resume the run and update the message."""
        now = self.clock.now()
        stored = STORED_DECISION.get(click.action, click.action)
        with session_scope(self.database_url) as s:
            ctx = _load(s, approval_id) if approval_id is not None else None
            outcome = self._judge(ctx, click)
            if outcome.accepted and ctx is not None:
                # Only the first decision wins, even if two people click at the same moment.
                won = s.exec(update(Approval)
                             .where(Approval.id == approval_id, Approval.decided_at.is_(None))
                             .values(decided_at=now, decision=stored, approver=click.user_id,
                                     comment=click.comment or None, channel="slack")).rowcount
                if won:
                    audit.record(s, "approval_decided", actor=click.user_id,
                                 package_key=ctx.package_key, wave=ctx.wave,
                                 release_id=ctx.release_id, flow_run_id=ctx.flow_run_id, at=now,
                                 approval_id=approval_id, decision=stored,
                                 approver=click.user_id,
                                 approver_name=ctx.facts.names.get(click.user_id, ""),
                                 comment=click.comment, channel="slack")
                else:
                    s.expire_all()
                    ctx = _load(s, approval_id)
                    assert ctx is not None
                    outcome = decide(click, ctx.facts, now)
            elif outcome.verdict is Verdict.REFUSE:
                self._audit_refusal(s, ctx, approval_id, click, outcome)
        if outcome.accepted and ctx is not None:
            self._after_decision(ctx, click, stored, now, channel)
        else:
            self._answer(channel, click.user_id, outcome)
        return outcome

    def _after_decision(self, ctx: _Context, click: Click, stored: str, now: datetime,
                        channel: str | None) -> None:
        run_input = {"decision": click.action, "approver": click.user_id,
                     "comment": click.comment, "channel": "slack"}
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
        audit.record(session, "approval_refused", actor=click.user_id or "unknown",
                     package_key=ctx.package_key if ctx else None,
                     wave=ctx.wave if ctx else None,
                     release_id=ctx.release_id if ctx else None,
                     flow_run_id=ctx.flow_run_id if ctx else None, at=self.clock.now(),
                     approval_id=approval_id, user=click.user_id, user_name=click.user_name,
                     clicked=click.action, reason=outcome.reason)

    def _answer(self, channel: str | None, user_id: str, outcome: Outcome) -> None:
        if outcome.verdict is Verdict.ALREADY_DECIDED:
            self._ephemeral(channel, user_id, messages.already_decided_message(
                outcome.reason[0].upper() + outcome.reason[1:] + "."))
        elif outcome.verdict is Verdict.REFUSE:
            self._ephemeral(channel, user_id, messages.refusal_message(outcome.reason))

    def _ephemeral(self, channel: str | None, user_id: str, msg: messages.Message) -> None:
        if not channel or not user_id:
            return
        try:
            self.web_client.chat_postEphemeral(channel=channel, user=user_id, text=msg["text"],
                                               blocks=msg["blocks"])
        except SlackClientError as exc:
            log.warning("could not answer %s in Slack: %s", user_id, exc)


def _approval_id(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def create_receiver_app(
    database_url: str,
    signing_secret: str,
    web_client: WebClient,
    resume: Resumer = prefect_resumer,
    clock: Clock | None = None,
    ui_url: str | None = None,
) -> Starlette:
    """The ASGI app: POST /slack/interactivity (Slack's Request URL) and GET /healthz."""
    interactions = Interactions(database_url, web_client, resume, clock or SystemClock(), ui_url)

    async def interactivity(request: Request) -> Response:
        body = await request.body()
        check = await run_in_threadpool(verify_request, database_url, body,
                                        dict(request.headers), signing_secret,
                                        interactions.clock.now())
        if not check.ok:
            return PlainTextResponse(f"refused: {check.reason}", status_code=401)
        raw = parse_qs(body.decode("utf-8")).get("payload", [""])[0]
        try:
            payload = json.loads(raw)
        except ValueError:
            return PlainTextResponse("expected a form field 'payload' holding JSON",
                                     status_code=400)
        answer = await run_in_threadpool(interactions.handle, payload)
        return JSONResponse(answer) if answer else Response(status_code=200)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/slack/interactivity", interactivity, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


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
) -> None:
    """Serve the receiver with uvicorn until interrupted (`wavekit slack-receiver`)."""
    import uvicorn

    app = create_receiver_app(database_url, signing_secret, web_client, resume, ui_url=ui_url)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
