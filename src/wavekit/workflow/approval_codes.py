"""One-time approval codes for the Prefect UI path: issued at the handoff, one per approver.

Prefect's open-source server has no user identity, so a value typed in the form proves
nothing; a code sent to the approver through their own channel (Slack DM, else e-mail) does.
In local mode (WAVEKIT_APPROVALS_UNVERIFIED) no code is sent and UI decisions are recorded
as unverified.
"""

from __future__ import annotations

import logging

from sqlmodel import select

from wavekit.adapters.approval_codes import (
    ChannelChooser,
    CodeMessage,
    CodeSender,
    SlackCodeSender,
    SmtpCodeSender,
    new_code,
    new_salt,
)
from wavekit.adapters.store import audit
from wavekit.adapters.store.approvals import ApprovalContext, load_context
from wavekit.adapters.store.engine import get_one, session_scope
from wavekit.adapters.store.models import Approval, ApprovalCode
from wavekit.domain.decisions import Click, code_digest, is_triggerer
from wavekit.workflow.runtime import Runtime

log = logging.getLogger(__name__)


def code_sender(rt: Runtime) -> ChannelChooser:
    """Slack DMs when Slack is configured, then e-mail when SMTP is; possibly neither."""
    senders: list[CodeSender] = []
    client = getattr(rt.notifier, "client", None)
    if client is not None:
        senders.append(SlackCodeSender(client))
    st = rt.settings
    if st.smtp_host:
        senders.append(SmtpCodeSender(st.smtp_host, st.smtp_port, st.smtp_sender,
                                      st.smtp_starttls, st.smtp_username, st.smtp_password))
    return ChannelChooser(*senders)


def issue_codes(rt: Runtime, approval_id: int, run_url: str | None = None,
                sender: CodeSender | None = None) -> list[str]:
    """Send each eligible approver (never the requester) their own code, once; returns the
    approver ids sent to. The hash is stored before the code is sent; a send that fails
    removes it, so the next run tries again."""
    if rt.settings.approvals_unverified:
        return []
    sender = sender or code_sender(rt)
    now = rt.clock.now()
    with session_scope(rt.database_url) as s:
        ctx = load_context(s, approval_id)
        approval = s.get(Approval, approval_id)
        if ctx is None or approval is None or approval.decided_at is not None:
            return []
        have = set(s.exec(select(ApprovalCode.approver)
                          .where(ApprovalCode.approval_id == approval_id)))
        deadline = approval.deadline
    sent: list[str] = []
    for person in ctx.people:
        if person.id in have or is_triggerer(Click(person.id, "approve"), ctx.facts):
            continue
        if not sender.can_reach(person):
            with session_scope(rt.database_url) as s:
                audit.record(s, "approval_code_unreachable", package_key=ctx.package_key,
                             release_id=ctx.release_id, at=now, approval_id=approval_id,
                             approver=person.id, reason="no Slack id or e-mail that wavekit "
                             "can reach (configure Slack or WAVEKIT_SMTP_HOST)")
            continue
        code, salt = new_code(), new_salt()
        with session_scope(rt.database_url) as s:
            row = ApprovalCode(approval_id=approval_id, approver=person.id, salt=salt,
                               digest=code_digest(code, salt), sent_via="pending",
                               sent_at=now, expires_at=deadline)
            s.add(row)
            s.flush()
            row_id = row.id
        message = CodeMessage(approval_id, ctx.package_name, ctx.wave, person.id, code,
                              deadline, run_url)
        try:
            via = sender.send(person, message)
        except Exception as exc:  # one unreachable approver must not stop the others
            log.warning("could not send the approval code to %s: %s", person.id, exc)
            with session_scope(rt.database_url) as s:
                s.delete(s.get(ApprovalCode, row_id))
                audit.record(s, "approval_code_failed", package_key=ctx.package_key,
                             release_id=ctx.release_id, at=now, approval_id=approval_id,
                             approver=person.id, error=str(exc)[:300] or type(exc).__name__)
            continue
        with session_scope(rt.database_url) as s:
            get_one(s, ApprovalCode, row_id).sent_via = via
            audit.record(s, "approval_code_sent", package_key=ctx.package_key,
                         release_id=ctx.release_id, at=now, approval_id=approval_id,
                         approver=person.id, via=via)
        sent.append(person.id)
    return sent


def notify_locked(rt: Runtime, ctx: ApprovalContext) -> None:
    """Five wrong codes locked the approval: the owner hears of it on their channel."""
    owner = next((p for p in ctx.people if p.role == "owner"), None)
    sender = code_sender(rt)
    if owner is None or not sender.can_reach(owner):
        return
    text = (f"{ctx.package_name} (wave {ctx.wave}): its approval was locked after five wrong "
            "approval codes were typed in the Prefect UI. Nothing was deployed. If that was "
            "not you, tell security; to release it, run the wave again.")
    try:
        sender.notify(owner, f"wavekit: approval locked for {ctx.package_name}", text)
    except Exception as exc:
        log.warning("could not tell the owner of %s about the lock: %s", ctx.package_key, exc)
