"""A problem in an input file, located precisely enough to fix it (file, line, field)."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
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


class InputInvalid(ValueError):
    """Input files have problems; nothing was written. The message lists them, one a line."""

    what = "the input"  # how the message names the files
    listed = 200  # problems shown before "... and N more"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:self.listed])
        more = (f"\n  ... and {len(problems) - self.listed} more"
                if len(problems) > self.listed else "")
        super().__init__(f"{len(problems)} problem(s) in {self.what}:\n{shown}{more}")


def capped(file: str, found: Iterable[tuple[int | None, str, str]], limit: int, unit: str
           ) -> list[Problem]:
    """Problems (line, field, message) of `file`, at most `limit` per field, then one per field
    saying how many more rows have a problem in this `unit` (column, field)."""
    out: list[Problem] = []
    counts: dict[str, int] = {}
    for line, fld, message in found:
        counts[fld] = counts.get(fld, 0) + 1
        if counts[fld] <= limit:
            out.append(Problem(file, line, fld, message))
    out.extend(Problem(file, None, fld, f"... and {n - limit:,} more rows with a problem in "
                       f"this {unit}") for fld, n in counts.items() if n > limit)
    return out


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
