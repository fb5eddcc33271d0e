"""Figures the fault tiers prove (kills survived, faults injected, examples tried), recorded
as the tests run and printed in pytest's terminal summary (tests/conftest.py), so CI's
output states them without `-s`."""

from __future__ import annotations

RECORDED: list[str] = []


def record(line: str) -> None:
    """One figure, a line of plain text naming what was proved and how often."""
    RECORDED.append(line)
