"""Fuzzing the inputs a stranger can hand wavekit: catalogs and telemetry files (hypothesis).

Random documents shaped like packages.yaml, byte- and line-level mutations of the example
catalog's files, and random or mutated telemetry files. Whatever comes in, the outcome is a
valid catalog (or stored telemetry) or the documented refusal (CatalogInvalid /
TelemetryInvalid) whose every problem is one line naming a known file and a field; never
another exception, and a refusal writes nothing (no file changes, no row in the store).

WAVEKIT_FUZZ_EXAMPLES  examples per telemetry test, default 100; the catalog tests run a
                       third of it (each example validates a whole catalog, ~0.15 s)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import func, select

from wavekit.adapters.catalog import CatalogInvalid, load_catalog
from wavekit.adapters.problems import Problem
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import AuditEvent, TelemetrySample
from wavekit.adapters.telemetry import TelemetryInvalid, ingest_telemetry
from wavekit.examples import EXAMPLE_CATALOG

EXAMPLES = int(os.environ.get("WAVEKIT_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
FUZZ_CATALOG = settings(FUZZ, max_examples=max(EXAMPLES // 3, 1))
CATALOG_FILES = ("packages.yaml", "identities.csv", "entitlements.csv", "memberships.csv",
                 "sandbox_seed.csv")
NASTY = ["&a", "*a", "<<: *a", "!!python/object/apply:os.system ['touch /tmp/x']", ": ", "- ",
         "[", "{", "}", "\t", "\x00", "\u202e", "\ufeff", "9" * 40, "1e999", ".nan", "-1", "0",
         "~", '"', "'", "\\", "#", "---", "...", "?", "@pd.io.common.os.system('true')",
         "`x`", "__import__('os')", "x/../../etc", "\r", "\n\n", "key:", "health:",
         "interval_hours: 0", "watch_days: 1000000000", "wave: 1e29", "state: watching"]
FIELDS = ["key", "name", "owner", "business_unit", "risk", "wave", "release_date",
          "watch_days", "entitlements", "removes", "retires", "depends_on", "health",
          "fallback", "state", "rollback_only", "guards", "population", "delegates",
          "slack_id", "threshold", "interval_hours", "failure_limit", "number",
          "window_start", "window_end", "entitlement_a", "entitlement_b", "misspelt"]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _documented(problems: list[Problem], files: tuple[str, ...]) -> None:
    assert problems
    for p in problems:
        assert p.file in files, p
        assert p.field and "\n" not in p.field, p
        assert p.message and "\n" not in p.message and "Traceback" not in p.message, p
        assert p.line is None or (isinstance(p.line, int) and p.line >= 1), p


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "catalog"
    shutil.copytree(EXAMPLE_CATALOG, root)
    return root


def _validate_with(root: Path, name: str, data: bytes) -> None:
    """Validate the catalog with `name` replaced by `data`; the file is restored after."""
    original = (root / name).read_bytes()
    (root / name).write_bytes(data)
    before = _snapshot(root)
    try:
        load_catalog(root)
    except CatalogInvalid as exc:
        _documented(exc.problems, CATALOG_FILES)
    finally:
        after = _snapshot(root)
        (root / name).write_bytes(original)
    assert after == before  # validating wrote nothing


# ---------------------------------------------------------------- catalogs

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20), st.sampled_from(NASTY),
                    st.sampled_from(["finance-month-end-operator", "fin-gl-journal-post",
                                     "achen", "low", "high", "2026-04-08", "UFINOWNER1"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5)), max_leaves=25)
documents = st.fixed_dictionaries({}, optional={
    "waves": st.lists(st.dictionaries(st.sampled_from(FIELDS), values, max_size=5), max_size=3),
    "sod_rules": st.lists(st.dictionaries(st.sampled_from(FIELDS), values, max_size=4),
                          max_size=3),
    "packages": st.lists(st.dictionaries(st.sampled_from(FIELDS), values, max_size=10),
                         max_size=4),
})


@FUZZ_CATALOG
@given(doc=st.one_of(documents, values))
def test_random_packages_yaml_documents(catalog_dir: Path, doc: Any) -> None:
    _validate_with(catalog_dir, "packages.yaml", yaml.safe_dump(doc).encode())


yaml_text = st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#%@`,?\t\n abcxyz019._~")),
                    max_size=200)


@FUZZ_CATALOG
@given(text=yaml_text)
def test_random_yaml_text(catalog_dir: Path, text: str) -> None:
    _validate_with(catalog_dir, "packages.yaml", text.encode())


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Line- and byte-level edits: delete, duplicate, splice in a nasty token, truncate."""
    lines = data.split(b"\n")
    for op, a, b in ops:
        i = a % max(len(lines), 1)
        if op == 0 and lines:
            del lines[i]
        elif op == 1 and lines:
            lines.insert(i, lines[b % len(lines)])
        elif op == 2 and lines:
            cut = b % (len(lines[i]) + 1)
            token = NASTY[b % len(NASTY)].encode()
            lines[i] = lines[i][:cut] + token + lines[i][cut:]
        elif op == 3:
            lines = lines[:i + 1]
        elif op == 4 and lines:
            lines[i] = bytes([b % 256]) * (a % 7) + lines[i]
    return b"\n".join(lines)


edits = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10**6), st.integers(0, 10**6)),
                 min_size=1, max_size=6)


@FUZZ_CATALOG
@given(name=st.sampled_from(CATALOG_FILES), ops=edits)
def test_mutated_example_catalog_files(catalog_dir: Path, name: str,
                                       ops: list[tuple[int, int, int]]) -> None:
    _validate_with(catalog_dir, name, _mutate((EXAMPLE_CATALOG / name).read_bytes(), ops))


@FUZZ_CATALOG
@given(name=st.sampled_from(CATALOG_FILES), data=st.binary(max_size=300))
def test_random_bytes_in_a_catalog_file(catalog_dir: Path, name: str, data: bytes) -> None:
    _validate_with(catalog_dir, name, data)


# ---------------------------------------------------------------- telemetry

TELEMETRY = {
    "usage.csv": b"identity,entitlement,at\nachen,fin-gl-journal-post,2026-04-08T10:00:00Z\n",
    "exports.csv": b"identity,at,volume\nachen,2026-04-09T10:00:00Z,12\n",
    "tickets.csv": b"package,at\nfinance-month-end-operator,2026-04-09T08:00:00Z\n",
    "exports.json": b'[{"identity": "achen", "at": "2026-04-09T10:00:00Z", "volume": 1}]',
    "tickets.jsonl": b'{"package": "finance-month-end-operator", "at": "2026-04-09"}\n',
}


def _counts(url: str) -> tuple[int, int]:
    with session_scope(url) as s:
        return (s.exec(select(func.count()).select_from(TelemetrySample)).one(),
                s.exec(select(func.count()).select_from(AuditEvent)).one())


def _ingest(url: str, where: Path, name: str, data: bytes) -> None:
    path = where / name
    path.write_bytes(data)
    before = _counts(url)
    try:
        ingest_telemetry(url, path)
    except TelemetryInvalid as exc:
        _documented(exc.problems, (name, "environment"))
        assert _counts(url) == before  # a refused file stores nothing
    finally:
        path.unlink()


@FUZZ
@given(name=st.sampled_from(sorted(TELEMETRY)), ops=edits)
def test_mutated_telemetry_files(loaded_store: str, tmp_path: Path, name: str,
                                 ops: list[tuple[int, int, int]]) -> None:
    _ingest(loaded_store, tmp_path, name, _mutate(TELEMETRY[name], ops))


@FUZZ
@given(name=st.sampled_from(sorted(TELEMETRY)), data=st.binary(max_size=300))
def test_random_telemetry_files(loaded_store: str, tmp_path: Path, name: str,
                                data: bytes) -> None:
    _ingest(loaded_store, tmp_path, name, data)
