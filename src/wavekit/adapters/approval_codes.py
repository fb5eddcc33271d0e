"""One-time approval codes: made here, sent to each approver through their own channel.

A code reaches one person: by Slack DM (slack_sdk) when Slack is configured and the approver
has a Slack id, otherwise by e-mail over SMTP (smtplib). Only its salted hash is stored
(wavekit.domain.decisions.code_digest); the code itself exists only in the message.
"""

from __future__ import annotations

import secrets
import smtplib
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Protocol

from wavekit.domain.clock import as_utc
from wavekit.domain.packages import Approver

# No 0/O or 1/I/L: codes are read off a phone and typed into a form.
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 10  # ~50 bits; five wrong guesses lock the approval


def new_code() -> str:
    """A random code, shown as XXXXX-XXXXX."""
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def new_salt() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class CodeMessage:
    """What an approver is told with their code."""

    approval_id: int
    package_name: str
    wave: int | None
    approver_id: str
    code: str
    expires_at: datetime | None
    run_url: str | None = None

    @property
    def subject(self) -> str:
        return f"wavekit: your approval code for {self.package_name} (wave {self.wave})"

    @property
    def text(self) -> str:
        until = (f" It expires at {as_utc(self.expires_at):%Y-%m-%d %H:%M} UTC."
                 if self.expires_at else "")
        where = f" at {self.run_url}" if self.run_url else " in the Prefect UI"
        return (f"{self.package_name} (wave {self.wave}) waits for your decision. To decide it"
                f"{where}, enter your approver id {self.approver_id} and this one-time code: "
                f"{self.code}.{until} It works once, for you only; never share it.")


class CodeSender(Protocol):
    """Delivers a code to one approver; returns the channel used (slack | email)."""

    def can_reach(self, person: Approver) -> bool: ...

    def send(self, person: Approver, message: CodeMessage) -> str: ...

    def notify(self, person: Approver, subject: str, text: str) -> str: ...


class SlackCodeSender:
    """A Slack DM through the slack_sdk WebClient."""

    def __init__(self, web_client: Any) -> None:
        self.client = web_client

    def can_reach(self, person: Approver) -> bool:
        return bool(person.slack_id)

    def send(self, person: Approver, message: CodeMessage) -> str:
        return self.notify(person, message.subject, message.text)

    def notify(self, person: Approver, subject: str, text: str) -> str:
        assert person.slack_id
        opened = self.client.conversations_open(users=person.slack_id)
        self.client.chat_postMessage(channel=opened["channel"]["id"], text=text)
        return "slack"


@dataclass(frozen=True)
class SmtpCodeSender:
    """An e-mail over SMTP (STARTTLS and login when configured)."""

    host: str
    port: int = 25
    sender: str = "wavekit@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0

    def can_reach(self, person: Approver) -> bool:
        return bool(person.email)

    def send(self, person: Approver, message: CodeMessage) -> str:
        return self.notify(person, message.subject, message.text)

    def notify(self, person: Approver, subject: str, text: str) -> str:
        assert person.email
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = self.sender, person.email, subject
        mail.set_content(text)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(mail)
        return "email"


class ChannelChooser:
    """Slack when configured and the person has a Slack id; otherwise e-mail."""

    def __init__(self, *senders: CodeSender) -> None:
        self.senders = senders

    def can_reach(self, person: Approver) -> bool:
        return any(s.can_reach(person) for s in self.senders)

    def send(self, person: Approver, message: CodeMessage) -> str:
        return self._first(person).send(person, message)

    def notify(self, person: Approver, subject: str, text: str) -> str:
        return self._first(person).notify(person, subject, text)

    def _first(self, person: Approver) -> CodeSender:
        for sender in self.senders:
            if sender.can_reach(person):
                return sender
        raise LookupError(f"no channel reaches {person.name or person.id}")
