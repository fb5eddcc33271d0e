"""Owner-handoff decisions in the store: every channel settles a decision here.

`settle` reads the approval's facts, asks the pure rule (wavekit.domain.decisions.decide),
and writes what it decided, in the caller's transaction: an accepted sign-off (and, when it
completes the approval, the decision itself, first writer wins), or the refusal with its
reason in the audit log. A wrong code is counted; the fifth locks the approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from wavekit.adapters.store import audit
from wavekit.adapters.store.models import (
    Approval,
    ApprovalCode,
    ApprovalSignoff,
    AuditEvent,
    Release,
    RolePackage,
)
from wavekit.adapters.store.packages import load_package_view
from wavekit.domain.clock import as_utc
from wavekit.domain.decisions import (
    MAX_WRONG_CODES,
    STORED_DECISION,
    ApprovalFacts,
    Click,
    IssuedCode,
    Outcome,
    Proof,
    Ruling,
    decide,
)
from wavekit.domain.packages import Approver
from wavekit.domain.states import PackageState

TIMEOUT_APPROVER = "wavekit"  # the approver of a decision wavekit took: timeout, lock


@dataclass(frozen=True)
class ApprovalContext:
    """One approval as the channels need it: the rule's facts and what messages show."""

    facts: ApprovalFacts
    package_key: str
    package_name: str
    wave: int | None
    release_id: int
    flow_run_id: str | None
    slack_channel: str | None
    slack_ts: str | None
    people: tuple[Approver, ...]

    @property
    def requested_by(self) -> str | None:
        return self.facts.triggered_by


def load_context(session: Session, approval_id: int) -> ApprovalContext | None:
    """The approval `approval_id` with everything the rule needs, or None if unknown."""
    approval = session.get(Approval, approval_id)
    if approval is None:
        return None
    release = session.get(Release, approval.release_id)
    pkg_row = session.get(RolePackage, approval.package_key)
    pkg = load_package_view(session, approval.package_key)
    people = pkg.approver_people
    names = {p.id: p.name for p in people}
    signoffs = session.exec(select(ApprovalSignoff).where(
        ApprovalSignoff.approval_id == approval_id)).all()
    codes = session.exec(select(ApprovalCode).where(ApprovalCode.approval_id == approval_id)).all()
    awaiting = (release is not None and not release.closed and pkg_row is not None
                and PackageState(pkg_row.state) == PackageState.AWAITING_HANDOFF)
    facts = ApprovalFacts(
        approval_id=approval_id, approvers=pkg.approvers, names=names,
        owner_name=pkg.owner_name, triggered_by=release.triggered_by if release else None,
        deadline=approval.deadline, decided_at=approval.decided_at,
        decision=approval.decision, decided_by=(approval.approver or "").split(",")[-1] or None,
        awaiting=awaiting, required=approval.required,
        approved_by=frozenset(o.approver for o in signoffs if o.decision == "approved"),
        codes=tuple(IssuedCode(c.approver, c.salt, c.digest, c.expires_at, c.used_at)
                    for c in codes),
        locked=approval.locked_at is not None)
    return ApprovalContext(facts=facts, package_key=pkg.key, package_name=pkg.name,
                           wave=pkg.wave, release_id=approval.release_id,
                           flow_run_id=approval.flow_run_id,
                           slack_channel=approval.slack_channel, slack_ts=approval.slack_ts,
                           people=people)


@dataclass(frozen=True)
class Settled:
    """What `settle` decided and wrote."""

    outcome: Outcome
    ctx: ApprovalContext | None
    locked_now: bool = False  # this refusal was the wrong code that locked the approval

    @property
    def final(self) -> bool:
        return self.outcome.accepted and self.outcome.final


def settle(session: Session, approval_id: int | None, click: Click, *, channel: str,
           proof: Proof, now: datetime, need_reason: bool = True) -> Settled:
    """Judge one decision and record it (or its refusal) in `session`'s transaction."""
    ctx = load_context(session, approval_id) if approval_id is not None else None
    if ctx is None:
        outcome = Outcome(Ruling.REFUSE, "this approval is unknown to wavekit")
        refuse(session, None, approval_id, click, outcome, channel=channel, now=now)
        return Settled(outcome, None)
    outcome = decide(click, ctx.facts, now, need_reason=need_reason, proof=proof)
    if outcome.verdict is Ruling.REFUSE:
        locked = refuse(session, ctx, approval_id, click, outcome, channel=channel, now=now)
        return Settled(outcome, ctx, locked)
    if not outcome.accepted or not need_reason:
        return Settled(outcome, ctx)
    stored = STORED_DECISION[click.action]
    if outcome.code_used is not None and not _spend_code(session, ctx, outcome.code_used, now):
        outcome = Outcome(Ruling.REFUSE, "that approval code was already used",
                          wrong_code=True)
        return Settled(outcome, ctx, refuse(session, ctx, approval_id, click, outcome,
                                            channel=channel, now=now))
    approvers = (sorted(ctx.facts.approved_by | {click.user_id}) if stored == "approved"
                 else [click.user_id])
    if outcome.final:
        # Only the first decision wins, even if two people decide at the same moment.
        won = session.exec(update(Approval)
                           .where(col(Approval.id) == approval_id,
                                  col(Approval.decided_at).is_(None))
                           .values(decided_at=now, decision=stored, approver=",".join(approvers),
                                   comment=click.comment or None, channel=channel,
                                   proof=proof)).rowcount
        if not won:
            session.expire_all()
            again = load_context(session, ctx.facts.approval_id)  # the id ctx was loaded by
            assert again is not None
            return Settled(decide(click, again.facts, now, proof=proof), again)
    _sign(session, approval_id, click, stored, channel, proof, now)
    common: dict[str, Any]  # audit fields and detail, of mixed types
    common = dict(actor=click.user_id, package_key=ctx.package_key, wave=ctx.wave,
                  release_id=ctx.release_id, flow_run_id=ctx.flow_run_id, at=now,
                  approval_id=approval_id, approver=click.user_id,
                  approver_name=ctx.facts.names.get(click.user_id, ""),
                  comment=click.comment, channel=channel, proof=proof,
                  verified=proof != "unverified", requested_by=ctx.requested_by)
    if outcome.final:
        audit.record(session, "approval_decided", decision=stored, approvers=approvers,
                     **common)
    else:
        audit.record(session, "approval_signed", decision=stored, approvals=len(approvers),
                     required=ctx.facts.required, **common)
    return Settled(outcome, ctx)


def _spend_code(session: Session, ctx: ApprovalContext, code: IssuedCode, now: datetime) -> bool:
    """Mark the code used; False if another decision spent it first."""
    return bool(session.exec(update(ApprovalCode)
                             .where(col(ApprovalCode.approval_id) == ctx.facts.approval_id,
                                    col(ApprovalCode.approver) == code.approver,
                                    col(ApprovalCode.used_at).is_(None))
                             .values(used_at=now)).rowcount)


def _sign(session: Session, approval_id: int | None, click: Click, stored: str, channel: str,
          proof: str, now: datetime) -> None:
    row = session.exec(select(ApprovalSignoff).where(
        ApprovalSignoff.approval_id == approval_id,
        ApprovalSignoff.approver == click.user_id)).first()
    if row is None:
        assert approval_id is not None
        row = ApprovalSignoff(approval_id=approval_id, approver=click.user_id, decision=stored,
                              channel=channel, proof=proof)
    row.decision, row.comment, row.channel, row.proof, row.at = (
        stored, click.comment, channel, proof, now)
    session.add(row)


def refuse(session: Session, ctx: ApprovalContext | None, approval_id: int | None,
           click: Click, outcome: Outcome, *, channel: str, now: datetime) -> bool:
    """Audit a refused decision (nothing else changes); count a wrong code. True when this
    refusal locked the approval."""
    audit.record(session, "approval_refused", actor=click.user_id or "unknown",
                 package_key=ctx.package_key if ctx else None,
                 wave=ctx.wave if ctx else None,
                 release_id=ctx.release_id if ctx else None,
                 flow_run_id=ctx.flow_run_id if ctx else None, at=now,
                 approval_id=approval_id, user=click.user_id, user_name=click.user_name,
                 clicked=click.action, reason=outcome.reason, channel=channel,
                 requested_by=ctx.requested_by if ctx else None)
    if not outcome.wrong_code or approval_id is None:
        return False
    approval = session.get(Approval, approval_id)
    assert approval is not None
    approval.wrong_codes += 1
    if approval.wrong_codes < MAX_WRONG_CODES or approval.locked_at is not None:
        return False
    # Locked: the approval is decided as a rejection, so the package is held and its release
    # closed; the next run of the wave opens a fresh approval with fresh codes.
    approval.locked_at = now
    approval.decided_at, approval.decision, approval.approver = now, "rejected", TIMEOUT_APPROVER
    approval.comment = f"locked after {approval.wrong_codes} wrong approval codes"
    approval.channel, approval.proof = channel, "locked"
    audit.record(session, "approval_locked", package_key=approval.package_key,
                 release_id=approval.release_id, flow_run_id=approval.flow_run_id, at=now,
                 approval_id=approval_id, wrong_codes=approval.wrong_codes,
                 decision="rejected")
    return True


def time_out(session: Session, approval_id: int, now: datetime) -> bool:
    """Record that the approval's deadline passed undecided: the one place a timeout is
    written (the deadline sweep and a run whose pause timed out both call it). False when a
    decision was recorded first: it wins."""
    approval = session.get(Approval, approval_id)
    if approval is None:
        return False
    deadline = approval.deadline or now
    comment = f"no decision by {as_utc(deadline):%Y-%m-%d %H:%M} UTC"
    won = session.exec(update(Approval)
                       .where(col(Approval.id) == approval_id, col(Approval.decided_at).is_(None))
                       .values(decided_at=now, decision="timeout", approver=TIMEOUT_APPROVER,
                               comment=comment, channel="deadline", proof="deadline")).rowcount
    if won:
        audit.record(session, "approval_timed_out", package_key=approval.package_key,
                     release_id=approval.release_id, flow_run_id=approval.flow_run_id, at=now,
                     approval_id=approval_id, decision="timeout",
                     deadline=as_utc(deadline).isoformat())
    session.expire_all()
    return bool(won)


def last_form_refusal(session: Session, approval_id: int) -> str | None:
    """Why the approval's latest Prefect UI input was refused (None: none was), for the
    next form to say: the person typing learns why on the channel they used."""
    approval = session.get(Approval, approval_id)
    if approval is None:
        return None
    refusals = session.exec(select(AuditEvent)
                            .where(AuditEvent.action == "approval_refused",
                                   AuditEvent.release_id == approval.release_id)
                            .order_by(col(AuditEvent.id).desc()))
    for event in refusals:
        if event.detail.get("approval_id") == approval_id and \
                event.detail.get("channel") == "prefect-ui":
            return str(event.detail.get("reason") or "refused")
    return None
