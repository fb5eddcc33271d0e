"""Issue 13's hostile inputs as data: each breaks the example catalog (or a telemetry file) in
one way and names the one problem it must give (file, line, field, words in the message).

Used by scripts/repro_validation.py (the real CLI, one subprocess per case) and by
tests/test_validation_cli.py (the CLI in-process, every case).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tests.test_catalog_hostile import CASES as SCHEMA_CASES
from tests.test_catalog_hostile import FIN, FIN_HEAD, FOCUS
from wavekit.examples import EXAMPLE_CATALOG


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    field: str
    words: str
    line: int | None = None  # the line reported; None: `line_text`'s line, else not checked
    line_text: str | None = None
    edits: tuple[tuple[str, str], ...] = ()  # packages.yaml: (old, new), once each
    files: dict[str, bytes | str | None] = field(default_factory=dict)  # None: delete it
    data: bytes = b""  # telemetry cases: the file's content


def _drop_column(name: str, column: str) -> str:
    lines = (EXAMPLE_CATALOG / name).read_text().splitlines()
    drop = lines[0].split(",").index(column)
    return "\n".join(",".join(c for i, c in enumerate(ln.split(",")) if i != drop)
                     for ln in lines) + "\n"


def _bomb(levels: int) -> str:
    return "a0: &a0 [x, x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n"
                                        for i in range(1, levels))


def _key(key: str) -> Case:
    written = key.encode().decode("unicode_escape")
    rows = (EXAMPLE_CATALOG / "memberships.csv").read_text().splitlines(keepends=True)
    members = "".join(r.replace("finance-month-end-operator", f'"{written}"') for r in rows
                      if written.isprintable() or "finance-month-end-operator" not in r)
    return Case(f"package key {key!r}", "packages.yaml", "packages[#1].key",
                "is not a valid package key", line_text=f'  - key: "{key}"',
                edits=(("  - key: finance-month-end-operator", f'  - key: "{key}"'),
                       ("    depends_on: [finance-month-end-operator]",
                        f'    depends_on: ["{key}"]')),
                files={"memberships.csv": members})


FILE_CASES = [
    Case("empty identities.csv", "identities.csv", "file", "is empty", line=1,
         files={"identities.csv": ""}),
    *[Case(f"missing column {name}.{col}", f"{name}.csv", col, "required column is missing",
           line=1, files={f"{name}.csv": _drop_column(f"{name}.csv", col)})
      for name, col in (("entitlements", "system"), ("identities", "active"),
                        ("identities", "department"), ("memberships", "identity"))],
    Case("a directory where a CSV should be", "memberships.csv", "file", "is a directory",
         files={"memberships.csv": "DIR"}),
    Case("binary packages.yaml", "packages.yaml", "file", "UTF-8",
         files={"packages.yaml": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"}),
    Case("empty packages.yaml", "packages.yaml", "file", "is empty",
         files={"packages.yaml": ""}),
    Case("packages.yaml of comments only", "packages.yaml", "file", "is empty",
         files={"packages.yaml": "# nothing here yet\n\n"}),
    Case("packages.yaml without packages", "packages.yaml", "packages",
         "at least one package",
         line_text="waves: []", files={"packages.yaml": "waves: []\nsod_rules: []\n"}),
    Case("missing packages.yaml", "packages.yaml", "file", "is missing",
         files={"packages.yaml": None}),
    Case("YAML indentation error", "packages.yaml", "yaml", "column",
         line_text="     wave: 2",
         edits=(("    risk: medium\n    wave: 2", "    risk: medium\n     wave: 2"),)),
    Case("duplicate YAML key", "packages.yaml", f"{FIN}.risk", "duplicate key 'risk'",
         line_text="risk: High", edits=((FIN_HEAD, FIN_HEAD + "    risk: High\n"),)),
    Case("YAML alias bomb", "packages.yaml", "yaml", "aliases",
         files={"packages.yaml": _bomb(40)}),
    Case("dependency cycle", "packages.yaml", "packages[hr-case-intake-specialist].depends_on",
         "dependency cycle", line_text="    depends_on: [finance-month-end-operator]",
         edits=((FIN_HEAD, FIN_HEAD + "    depends_on: [hr-case-intake-specialist]\n"),
                ("    watch_days: 7\n",
                 "    watch_days: 7\n    depends_on: [finance-month-end-operator]\n"))),
    Case("watch_days: 366", "packages.yaml", f"{FIN}.watch_days", "out of range",
         line_text="watch_days: 366",
         edits=((FIN_HEAD, FIN_HEAD.replace("watch_days: 14", "watch_days: 366")),)),
    Case("inconclusive_limit: -1", "packages.yaml",
         f"{FIN}.health.adoption.inconclusive_limit", "out of range",
         line_text="inconclusive_limit: -1",
         edits=((FOCUS, FOCUS + "    health:\n      adoption: {inconclusive_limit: -1}\n"),)),
    Case("error_limit: -1", "packages.yaml", f"{FIN}.health.ticket_noise.error_limit",
         "out of range", line_text="error_limit: -1",
         edits=((FOCUS, FOCUS + "    health:\n      ticket_noise: {error_limit: -1}\n"),)),
    Case("interval_hours: -3", "packages.yaml", f"{FIN}.health.access_drift.interval_hours",
         "out of range", line_text="interval_hours: -3",
         edits=((FOCUS, FOCUS + "    health:\n      access_drift: {interval_hours: -3}\n"),)),
    Case("interval_hours: .inf", "packages.yaml", f"{FIN}.health.access_drift.interval_hours",
         "finite", line_text="interval_hours: .inf",
         edits=((FOCUS, FOCUS + "    health:\n      access_drift: {interval_hours: .inf}\n"),)),
    *[_key(k) for k in ("x/../../../outside/EVIL", "finance\\nmonth", "fin\\u202eance")],
]

CATALOG_CASES = FILE_CASES + [
    Case(f"{fld}: {words[:40]}", "packages.yaml", fld, words, line_text=text,
         edits=tuple(edits))
    for edits, fld, text, words in SCHEMA_CASES
]

USAGE = "identity,entitlement,at\nachen,fin-gl-journal-post,2026-04-08T10:00:00Z\n"
TELEMETRY_CASES = [
    Case("telemetry: empty usage.csv", "usage.csv", "file", "is empty", line=1, data=b""),
    Case("telemetry: missing column", "usage.csv", "entitlement", "required column is missing",
         line=1, data=b"identity,at\nachen,2026-04-08\n"),
    Case("telemetry: timestamp out of range", "usage.csv", "at", "outside 2000..2099", line=2,
         data=USAGE.replace("2026-04-08T10:00:00Z", "1970-01-01T00:00:00Z").encode()),
    Case("telemetry: not a timestamp", "usage.csv", "at", "is not a timestamp", line=2,
         data=USAGE.replace("2026-04-08T10:00:00Z", "next tuesday").encode()),
    Case("telemetry: infinite volume", "exports.csv", "volume", "not a finite number", line=2,
         data=b"identity,at,volume\nachen,2026-04-09T10:00:00Z,inf\n"),
    Case("telemetry: negative volume", "exports.csv", "volume", "negative volume", line=2,
         data=b"identity,at,volume\nachen,2026-04-09T10:00:00Z,-5\n"),
    Case("telemetry: NaN in JSON", "exports.json", "file", "NaN", data=b'[{"identity": '
         b'"achen", "at": "2026-04-09T10:00:00Z", "volume": NaN}]'),
    Case("telemetry: deep JSON", "exports.json", "file", "nested too deeply",
         data=b"[" * 100_000 + b"]" * 100_000),
    Case("telemetry: binary", "tickets.csv", "file", "UTF-8", data=b"\xff\xfe\x00"),
]


def broken_catalog(where: Path, case: Case) -> Path:
    """A copy of the example catalog under `where`, broken as `case` says."""
    root = where / "catalog"
    shutil.copytree(EXAMPLE_CATALOG, root)
    text = (root / "packages.yaml").read_text()
    for old, new in case.edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    (root / "packages.yaml").write_text(text)
    for name, data in case.files.items():
        path = root / name
        if data is None:
            path.unlink()
        elif data == "DIR":
            path.unlink()
            path.mkdir()
        else:
            path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return root


def expected_line(root: Path, case: Case) -> int | None:
    """The line the case's problem must name (None: not checked)."""
    if case.line is not None or case.line_text is None:
        return case.line
    lines = (root / case.file).read_text().splitlines()
    return [i for i, ln in enumerate(lines, 1) if case.line_text in ln][-1]
