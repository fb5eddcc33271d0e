"""A real SMTP server on loopback (aiosmtpd) that keeps what it is sent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support.servers import free_port


class Mailbox:
    """aiosmtpd handler: keeps every message it is sent."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def code_for(self, address: str) -> str:
        for m in self.messages:
            if m["To"] == address:
                found = re.search(r"code: ([A-Z0-9]{5}-[A-Z0-9]{5})", m.get_content())
                if found:
                    return found.group(1)
        raise LookupError(f"no code mailed to {address}")

    def to(self, address: str) -> list[Any]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """(mailbox, port) of an SMTP server on 127.0.0.1 for one test."""
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()
