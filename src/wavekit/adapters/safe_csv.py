"""CSV tables from hostile files: the header is checked before any row, rows keep their line.

`read_table(path, columns, required, max_bytes)` returns a Table: the known columns as
stripped strings plus `_line` (the file line each row starts on, right also after blank lines
and quoted multi-line cells) and `_ok` (False for a row with a problem of its own: the wrong
number of fields, a control character, an over-long cell). Those row problems are in
`Table.problems`; checks of values should skip rows that are not `_ok`, so that one broken row
is one error.

A file that cannot be used at all raises CsvRefused with one problem per root cause, and no
row is looked at: missing, a directory, over the size cap, binary or not UTF-8, empty, not
parseable as CSV, a header that lacks a required column (one problem per missing column,
naming it) or names a column twice.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wavekit.adapters.safe_files import FileRefused, read_text

MAX_CELL = 1_000
# Control characters other than tab and line breaks, Unicode line separators and the
# bidirectional embedding/override/isolate characters.
BAD_CHARS = "[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
_BAD_RE = re.compile(BAD_CHARS)
_BAD_CELL = BAD_CHARS[:-1] + "\t\n\r]"  # in a cell, tabs and line breaks are refused too

RowProblem = tuple[int | None, str, str]  # (line, field, message)


class CsvRefused(Exception):
    """The file cannot be used; `problems` has one (line, field, message) per root cause."""

    def __init__(self, problems: list[RowProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(m for _, _, m in problems))


@dataclass
class Table:
    frame: pd.DataFrame
    problems: list[RowProblem] = field(default_factory=list)
    header: tuple[str, ...] = ()

    @property
    def ok(self) -> pd.DataFrame:
        """The rows without a problem of their own (what value checks look at)."""
        return self.frame[self.frame["_ok"]]


def _records(text: str) -> tuple[list[int], list[list[str]]]:
    """Each non-blank CSV record with the line it starts on."""
    if '"' not in text and text.count("\r") == text.count("\r\n"):
        # No quoting and no bare CR: one record per line, and csv parses the lines as given.
        crlf = "\r" in text
        numbered = [(i, ln[:-1] if crlf and ln.endswith("\r") else ln)
                    for i, ln in enumerate(text.split("\n"), 1)]
        keep = [(i, ln) for i, ln in numbered if ln.strip()]
        reader = csv.reader([ln for _, ln in keep], skipinitialspace=True)
        try:
            return [i for i, _ in keep], list(reader)
        except csv.Error as exc:
            line = keep[max(reader.line_num - 1, 0)][0] if keep else None
            raise FileRefused(f"cannot be read as CSV: {exc}", line) from None
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    lines: list[int] = []
    rows: list[list[str]] = []
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if row and not (len(row) == 1 and not row[0].strip()):
                lines.append(start)
                rows.append(row)
    except csv.Error as exc:
        raise FileRefused(f"cannot be read as CSV: {exc} (line {reader.line_num})",
                          reader.line_num) from None
    return lines, rows


def describe_bad_char(value: str) -> str:
    """What is wrong with a value holding a character _BAD_CELL matches."""
    found = re.search(_BAD_CELL, value)
    if found is None:
        return "contains a control character"
    char = found.group()
    if "\u202a" <= char <= "\u202e" or "\u2066" <= char <= "\u2069":
        return f"contains the bidirectional-override character {char!r}"
    if char in "\n\r\u2028\u2029":
        return f"contains a line break ({char!r})"
    return f"contains the control character {char!r}"


def check_header(header: Sequence[str], required: Sequence[str], line: int,
                 missing_message: str = "required column is missing from the header"
                 ) -> list[RowProblem]:
    """One problem per missing required column and per column named twice."""
    out: list[RowProblem] = []
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            out.append((line, name, "column appears twice in the header"))
        seen.add(name)
    for col in required:
        if col not in seen:
            near = difflib.get_close_matches(col, [h for h in header if h not in required],
                                             n=1, cutoff=0.75)
            hint = f" (the header has {near[0]!r}: misspelled?)" if near else ""
            out.append((line, col, missing_message + hint))
    return out


def cell_problems(frame: pd.DataFrame, columns: Sequence[str]) -> list[RowProblem]:
    """A problem per cell (by `_line`) with a control character or over MAX_CELL characters."""
    out: list[RowProblem] = []
    for c in columns:
        if c not in frame or not len(frame):
            continue
        values = frame[c].astype(str)
        bad = values.str.contains(_BAD_CELL, regex=True)
        long = ~bad & (values.str.len() > MAX_CELL)
        out.extend((int(line), c, describe_bad_char(value))
                   for line, value in zip(frame.loc[bad, "_line"], values[bad], strict=True))
        out.extend((int(line), c, f"is {len(value):,} characters long (at most {MAX_CELL:,})")
                   for line, value in zip(frame.loc[long, "_line"], values[long], strict=True))
    return out


def read_table(path: Path, columns: Sequence[str], required: Sequence[str], max_bytes: int,
               *, missing_message: str = "required column is missing from the header") -> Table:
    """Read `path` as a CSV table (see the module docstring); CsvRefused if unusable."""
    try:
        text = read_text(path, max_bytes)
    except FileRefused as exc:
        raise CsvRefused([(exc.line, exc.field, exc.message)]) from None
    return table_from_text(text, columns, required, missing_message=missing_message)


def table_from_text(text: str, columns: Sequence[str], required: Sequence[str], *,
                    missing_message: str = "required column is missing from the header"
                    ) -> Table:
    """The CSV `text` as a Table; CsvRefused if it is empty, unparseable or its header bad."""
    try:
        lines, rows = _records(text)
    except FileRefused as exc:
        raise CsvRefused([(exc.line, exc.field, exc.message)]) from None
    if not rows:
        need = f": {', '.join(columns)}" if columns else ""
        raise CsvRefused([(1, "file", f"is empty (the first line must be the header{need})")])
    header = [h.strip() for h in rows[0]]
    if refused := check_header(header, required, lines[0], missing_message):
        raise CsvRefused(refused)
    width = len(header)
    body, body_lines = rows[1:], lines[1:]
    problems: list[RowProblem] = []
    bad_rows: set[int] = set()
    if any(len(r) != width for r in body):
        fixed = []
        for r, line in zip(body, body_lines, strict=True):
            if len(r) != width:  # a shifted row: its values are not where the header says
                problems.append((line, "row", f"has {len(r)} field"
                                 f"{'' if len(r) == 1 else 's'}; the header has {width}"))
                bad_rows.add(line)
                r = (r + [""] * width)[:width]
            fixed.append(r)
        body = fixed
    known = [c for c in columns if c in header] or [c for c in header if c]
    index = [header.index(c) for c in known]
    frame = pd.DataFrame({c: [r[i] for r in body] for c, i in zip(known, index, strict=True)},
                         columns=known, dtype=object).astype(str)
    for c in known:
        frame[c] = frame[c].str.strip()
    frame["_line"] = body_lines
    suspicious = (_BAD_RE.search(text) or "\t" in text or '"' in text
                  or max(map(len, text.split("\n"))) > MAX_CELL)
    if suspicious:  # only then can a cell hold a control character or be over-long
        cells = cell_problems(frame, known)
        problems.extend(cells)
        bad_rows.update(line for line, _, _ in cells if line is not None)
    frame["_ok"] = ~frame["_line"].isin(bad_rows)
    problems.sort(key=lambda p: p[0] or 0)
    return Table(frame=frame, problems=problems, header=tuple(header))
