"""A problem in an input file, located precisely enough to fix it (file, line, field)."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located precisely enough to fix it."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


_SHOW = reprlib.Repr()
_SHOW.maxstring = 80
_SHOW.maxother = 80
_SHOW.maxlist = _SHOW.maxdict = _SHOW.maxtuple = _SHOW.maxset = 4
_SHOW.maxlevel = 2


def show(value: object) -> str:
    """A short, safe repr of a value from hostile input for a message.

    Bounded in length however large or deeply nested the value is; control, bidirectional
    and other non-printable characters come out escaped (Python's repr escapes them).
    """
    text = _SHOW.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
