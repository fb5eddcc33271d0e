"""Block Kit messages, as pure functions of plain values: what people read in Slack.

Every builder returns a `Message` (the `text` fallback Slack shows in notifications, and the
`blocks`), ready to splat into chat.postMessage / chat.update / chat.postEphemeral.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict

from wavekit.domain.clock import as_utc

APPROVE_ACTION = "wavekit_approve"
REJECT_ACTION = "wavekit_reject"
DECISION_BLOCK = "wavekit_decision"
REJECT_CALLBACK = "wavekit_reject_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"
MAX_LISTED = 10  # mismatches listed one by one before "and N more"

Gate = tuple[str, bool, str]  # (name, passed, reason)

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_DECISION_WORDS = {
    "approve": ("Approved", ":white_check_mark:"),
    "approved": ("Approved", ":white_check_mark:"),
    "reject": ("Rejected", ":no_entry:"),
    "rejected": ("Rejected", ":no_entry:"),
    "timeout": ("Timed out", ":hourglass:"),
}


class Message(TypedDict):
    text: str
    blocks: list[dict[str, Any]]


def _message(text: str, blocks: list[dict[str, Any]]) -> Message:
    # The fallback text is mrkdwn too (notifications, screen readers): escape it as well.
    return Message(text=esc(text), blocks=blocks)


def esc(text: object) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def who(person: str | None) -> str:
    """A Slack user id as a mention (Slack renders the name); anything else as plain text."""
    if not person:
        return "someone"
    return f"<@{person}>" if _SLACK_USER.match(person) else esc(person)


def when(at: datetime) -> str:
    """A time Slack shows in the reader's own time zone, with a UTC fallback."""
    at = as_utc(at)
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def flow_run_url(ui_url: str, flow_run_id: str) -> str:
    """The Prefect UI page of a flow run."""
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


def _wave(wave: int | None) -> str:
    return f"wave {wave}" if wave is not None else "no wave"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _header(text: str) -> dict[str, Any]:
    # Header blocks take plain text of at most 150 characters.
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150], "emoji": True}}


def _context(*parts: str) -> dict[str, Any]:
    return {"type": "context",
            "elements": [{"type": "mrkdwn", "text": p} for p in parts if p]}


def _link(url: str | None, label: str = "Open the flow run in Prefect") -> str:
    return f"<{url}|{label}>" if url else ""


def _gate_lines(gates: Sequence[Gate]) -> str:
    lines = []
    for name, passed, reason in gates:
        mark = ":white_check_mark:" if passed else ":x:"
        lines.append(f"{mark} *{esc(name)}*" + (f" — {esc(reason)}" if reason else ""))
    return "\n".join(lines)


def handoff_message(
    *,
    approval_id: int,
    package_key: str,
    package_name: str,
    wave: int | None,
    owner_slack_id: str | None,
    members: int,
    entitlements: int,
    risk: str,
    counts: Mapping[str, int],
    gates: Sequence[Gate] = (),
    flow_run_url: str | None = None,
    deadline: datetime | None = None,
    triggered_by: str | None = None,
) -> Message:
    """The owner handoff: what will change, what the gates said, and Approve / Reject."""
    value = str(approval_id)
    plan = (f"{counts.get('adds', 0)} adds · {counts.get('removes', 0)} removes · "
            f"{counts.get('retirements', 0)} retirements")
    fields = [
        f"*Wave*\n{_wave(wave)}",
        f"*Risk*\n{esc(risk).capitalize()}",
        f"*Members*\n{members}",
        f"*Entitlements*\n{entitlements}",
        f"*Plan*\n{plan}",
        f"*Decide by*\n{when(deadline)}" if deadline else "*Decide by*\nno deadline",
    ]
    blocks: list[dict[str, Any]] = [
        _header(f"Approval needed: {package_name}"),
        _section(f"{who(owner_slack_id)}, *{esc(package_name)}* (`{esc(package_key)}`) is ready "
                 f"to release in {_wave(wave)}. Approve to deploy it, or reject to hold it. "
                 "The owner or a declared delegate can decide."),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if gates:
        blocks.append(_section("*Policy gates*\n" + _gate_lines(gates)))
    blocks.append(_context(
        f"Triggered by {who(triggered_by)}" if triggered_by else "",
        _link(flow_run_url),
        f"Approval #{approval_id}",
    ))
    blocks.append({
        "type": "actions",
        "block_id": DECISION_BLOCK,
        "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "value": value, "style": "primary",
             "text": {"type": "plain_text", "text": "Approve"},
             "confirm": {
                 "title": {"type": "plain_text", "text": "Approve this release?"},
                 "text": {"type": "mrkdwn",
                          "text": f"wavekit will deploy {plan} for *{esc(package_name)}*."},
                 "confirm": {"type": "plain_text", "text": "Approve"},
                 "deny": {"type": "plain_text", "text": "Cancel"},
             }},
            {"type": "button", "action_id": REJECT_ACTION, "value": value, "style": "danger",
             "text": {"type": "plain_text", "text": "Reject"}},
        ],
    })
    text = f"Approval needed: {package_name} ({_wave(wave)}), {plan}"
    return _message(text, blocks=blocks)


def handoff_dm(*, package_name: str, wave: int | None, channel: str,
               owner_slack_id: str | None) -> Message:
    """The owner's direct message pointing at the handoff in the release channel."""
    text = (f"{who(owner_slack_id)}, *{esc(package_name)}* ({_wave(wave)}) is waiting for your "
            f"approval in <#{channel}>. Approve or reject it there.")
    return _message(f"Your approval is needed: {package_name}", blocks=[_section(text)])


def decided_message(
    *,
    package_name: str,
    wave: int | None,
    decision: str,
    approver: str | None,
    decided_at: datetime,
    comment: str | None = None,
    flow_run_url: str | None = None,
) -> Message:
    """The handoff after a decision: no buttons; who decided, what, when and why."""
    word, icon = _DECISION_WORDS.get(decision, (decision.capitalize(), ":grey_question:"))
    line = f"{icon} *{word}* by {who(approver)} at {when(decided_at)}"
    if decision == "timeout":
        line = f"{icon} *{word}*: nobody decided by {when(decided_at)}; the package is held."
    blocks = [_header(f"{word}: {package_name}"),
              _section(f"*{esc(package_name)}* ({_wave(wave)})\n{line}")]
    if comment:
        blocks.append(_section(f"> {esc(comment)}"))
    link = _link(flow_run_url)
    if link:
        blocks.append(_context(link))
    return _message(f"{word}: {package_name} ({_wave(wave)})", blocks=blocks)


def reminder_message(*, package_name: str, wave: int | None, owner_slack_id: str | None,
                     deadline: datetime | None) -> Message:
    """A nudge to the owner that a handoff still waits."""
    until = f" It times out {when(deadline)} and the package is then held." if deadline else ""
    text = (f":bell: Reminder: {who(owner_slack_id)}, *{esc(package_name)}* ({_wave(wave)}) "
            f"is still waiting for your decision.{until}")
    return _message(f"Reminder: {package_name} waits for approval", blocks=[_section(text)])


def escalation_message(*, package_name: str, wave: int | None, owner_slack_id: str | None,
                       delegate_slack_ids: Sequence[str], deadline: datetime | None) -> Message:
    """Escalation to the delegates once the owner has not answered."""
    until = f" It times out {when(deadline)}." if deadline else ""
    if delegate_slack_ids:
        names = ", ".join(who(d) for d in delegate_slack_ids)
        ask = f"{names}: as a declared delegate you can approve or reject it."
    else:
        ask = "No delegate is declared for this package; only the owner can decide."
    text = (f":rotating_light: *{esc(package_name)}* ({_wave(wave)}) is still waiting for "
            f"{who(owner_slack_id)}. {ask}{until}")
    return _message(f"Escalation: {package_name} waits for approval",
                   blocks=[_section(text)])


def refusal_message(reason: str) -> Message:
    """The ephemeral answer to someone whose click was refused."""
    text = f":no_entry: Your decision was not recorded: {esc(reason)}"
    return _message(f"Your decision was not recorded: {reason}", blocks=[_section(text)])


def already_decided_message(reason: str) -> Message:
    """The ephemeral answer to a click on an approval that is already decided."""
    return _message(reason, blocks=[_section(f":information_source: {esc(reason)}")])


def notice_message(text: str) -> Message:
    """A one-line ephemeral notice (for example: decision recorded, run not resumed)."""
    return _message(text, blocks=[_section(esc(text))])


def reject_modal(*, approval_id: int, package_name: str, wave: int | None,
                 channel: str | None) -> dict[str, Any]:
    """The modal Reject opens: a required reason, submitted as a view_submission."""
    meta = json.dumps({"approval_id": approval_id, "channel": channel})
    return {
        "type": "modal",
        "callback_id": REJECT_CALLBACK,
        "private_metadata": meta,
        "title": {"type": "plain_text", "text": "Reject release"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            _section(f"Rejecting holds *{esc(package_name)}* ({_wave(wave)}): nothing is "
                     "deployed and the release manager sees your reason."),
            {"type": "input", "block_id": REASON_BLOCK, "optional": False,
             "label": {"type": "plain_text", "text": "Reason"},
             "element": {"type": "plain_text_input", "action_id": REASON_INPUT,
                         "multiline": True, "max_length": 2000}},
        ],
    }


def rollback_message(
    *,
    package_key: str,
    package_name: str,
    wave: int | None,
    reason: str,
    prior_count: int,
    readback_count: int,
    equal: bool,
    mismatches: Sequence[tuple[str, str]] = (),
    owner_slack_id: str | None = None,
    flow_run_url: str | None = None,
) -> Message:
    """What a rollback did, why, and the read-back proof that access is back as it was."""
    verdict = (":white_check_mark: equal to the prior bundle" if equal
               else ":warning: NOT equal to the prior bundle")
    fields = [f"*Prior bundle*\n{prior_count} grants", f"*Read back*\n{readback_count} grants",
              f"*Equal*\n{'yes' if equal else 'no'}", f"*Mismatches*\n{len(mismatches)}"]
    blocks = [
        _header(f"Rolled back: {package_name}"),
        _section(f"{who(owner_slack_id) + ', ' if owner_slack_id else ''}*{esc(package_name)}* "
                 f"(`{esc(package_key)}`, {_wave(wave)}) was rolled back to the exact access "
                 f"it had before release.\n*Why:* {esc(reason)}\n*Proof:* {verdict}."),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if mismatches:
        listed = [f"• `{esc(i)}` → `{esc(e)}`" for i, e in sorted(mismatches)[:MAX_LISTED]]
        if len(mismatches) > MAX_LISTED:
            listed.append(f"… and {len(mismatches) - MAX_LISTED} more")
        blocks.append(_section("*Mismatched grants*\n" + "\n".join(listed)))
    link = _link(flow_run_url)
    if link:
        blocks.append(_context(link))
    text = (f"Rolled back: {package_name} ({_wave(wave)}); read-back "
            f"{'equal' if equal else 'NOT equal'} to the prior bundle")
    return _message(text, blocks=blocks)


def held_message(*, package_key: str, package_name: str, wave: int | None, reason: str,
                 owner_slack_id: str | None = None,
                 flow_run_url: str | None = None) -> Message:
    """A package held back from release, and why."""
    blocks = [
        _header(f"Held: {package_name}"),
        _section(f"{who(owner_slack_id) + ', ' if owner_slack_id else ''}*{esc(package_name)}* "
                 f"(`{esc(package_key)}`, {_wave(wave)}) is held: nothing was deployed.\n"
                 f"*Why:* {esc(reason)}"),
    ]
    link = _link(flow_run_url)
    if link:
        blocks.append(_context(link))
    return _message(f"Held: {package_name} ({_wave(wave)}): {reason}", blocks=blocks)


def contained_message(*, package_key: str, package_name: str, wave: int | None, reason: str,
                      identities: Sequence[str] = (), grants: Sequence[tuple[str, str]] = (),
                      owner_slack_id: str | None = None,
                      flow_run_url: str | None = None) -> Message:
    """A live package contained after an anomaly: who lost which grants, and the way out."""
    shown = ", ".join(f"{esc(i)}: {esc(e)}" for i, e in list(grants)[:20])
    more = f" and {len(grants) - 20} more" if len(grants) > 20 else ""
    blocks = [
        _header(f"Contained: {package_name}"),
        _section(f"{who(owner_slack_id) + ', ' if owner_slack_id else ''}*{esc(package_name)}* "
                 f"(`{esc(package_key)}`, {_wave(wave)}) is contained: it stays deployed and "
                 f"watched, and the access at risk is suspended.\n*Why:* {esc(reason)}"),
        _section(f"*Who:* {esc(', '.join(identities)) or 'nobody'}\n"
                 f"*Suspended:* {len(grants)} grant(s){': ' + shown + more if grants else ''}"),
        _context(f"Restore with `wavekit contain restore {esc(package_key)}`, roll back with "
                 f"`wavekit rollback {esc(package_key)}`, or release it again."),
    ]
    link = _link(flow_run_url)
    if link:
        blocks.append(_context(link))
    return _message(f"Contained: {package_name} ({_wave(wave)}): {reason}", blocks=blocks)


def gate_failed_message(*, package_key: str, package_name: str, wave: int | None,
                        gates: Sequence[Gate], owner_slack_id: str | None = None,
                        flow_run_url: str | None = None) -> Message:
    """Policy gates that stopped a package, with every gate's result and reason."""
    failed = [g for g in gates if not g[1]]
    names = ", ".join(esc(g[0]) for g in failed) or "none"
    blocks = [
        _header(f"Gate failed: {package_name}"),
        _section(f"{who(owner_slack_id) + ', ' if owner_slack_id else ''}*{esc(package_name)}* "
                 f"(`{esc(package_key)}`, {_wave(wave)}) did not pass its policy gates, so it "
                 f"is held. Failed: {names}."),
        _section("*Policy gates*\n" + _gate_lines(gates)),
    ]
    link = _link(flow_run_url)
    if link:
        blocks.append(_context(link))
    reasons = "; ".join(f"{g[0]}: {g[2]}" for g in failed)
    return _message(f"Gate failed: {package_name} ({_wave(wave)}): {reasons}",
                   blocks=blocks)
