"""Hostile telemetry files: one problem per root cause with file, line and field; nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import func, select

from wavekit.adapters.safe_files import Limits
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import TelemetrySample
from wavekit.adapters.telemetry import TelemetryInvalid, ingest_telemetry

USAGE = "identity,entitlement,at\nachen,fin-gl-journal-post,2026-04-08T10:00:00Z\n"


def _count(url: str) -> int:
    with session_scope(url) as s:
        return s.exec(select(func.count()).select_from(TelemetrySample)).one()


def _refused(url: str, path: Path, **kw) -> list:
    with pytest.raises(TelemetryInvalid) as err:
        ingest_telemetry(url, path, **kw)
    assert _count(url) == 0
    return err.value.problems


def _one(url: str, path: Path, **kw):
    problems = _refused(url, path, **kw)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


@pytest.mark.parametrize(("data", "line", "field", "words"), [
    (b"", 1, "file", "is empty"),
    (b"identity,at\n" + b"achen,2026-04-08\n" * 3, 1, "entitlement",
     "required column is missing"),
    (b"identity,entitlement,at\nachen,fin-gl-journal-post,2026-04-08\x00\n", 2, "file",
     "binary"),
    (b"identity,entitlement,at\nach\xe9n,fin-gl-journal-post,2026-04-08\n", 2, "file",
     "not UTF-8"),
    (b'identity,entitlement,at\nachen,"fin-gl-journal-post,2026-04-08\n', 2, "file",
     "cannot be read as CSV"),
    (b"identity,entitlement,at\nachen,fin-gl-journal-post,2026-04-08,extra\n", 2, "row",
     "has 4 fields; the header has 3"),
    (USAGE.replace("10:00:00Z", "10:00:00Z\u202e").encode(), 2, "at", "bidirectional"),
    (USAGE.replace("2026-04-08T10:00:00Z", "1970-01-01T00:00:00Z").encode(), 2, "at",
     "outside 2000..2099"),
    (USAGE.replace("2026-04-08T10:00:00Z", "2150-01-01").encode(), 2, "at", "outside"),
    (USAGE.replace("2026-04-08T10:00:00Z", "99999-01-01").encode(), 2, "at",
     "is not a timestamp"),
])
def test_a_bad_usage_csv_is_one_problem(loaded_store, tmp_path, data, line, field, words
                                        ) -> None:
    path = tmp_path / "usage.csv"
    path.write_bytes(data)
    p = _one(loaded_store, path)
    assert (p.file, p.line, p.field) == ("usage.csv", line, field), str(p)
    assert words in p.message, str(p)


@pytest.mark.parametrize(("volume", "words"), [
    ("inf", "not a finite number"), ("1e999", "not a finite number"), ("nan", "not a number"),
    ("-5", "negative volume -5"), ("1e20", "not a plausible export size"),
])
def test_export_volumes_are_finite_and_plausible(loaded_store, tmp_path, volume, words) -> None:
    path = tmp_path / "exports.csv"
    path.write_text(f"identity,at,volume\nachen,2026-04-09T10:00:00Z,{volume}\n")
    p = _one(loaded_store, path)
    assert (p.file, p.line, p.field) == ("exports.csv", 2, "volume")
    assert words in p.message


def test_a_directory_or_an_oversized_file(loaded_store, tmp_path, monkeypatch) -> None:
    (tmp_path / "usage.csv").mkdir()
    p = _one(loaded_store, tmp_path / "usage.csv")
    assert (p.file, p.line, p.field, p.message) == ("usage.csv", None, "file",
                                                     "is a directory, not a file")
    big = tmp_path / "tickets.csv"
    big.write_text("package,at\n" + "finance-month-end-operator,2026-04-09T08:00:00Z\n" * 100)
    p = _one(loaded_store, big, limits=Limits(telemetry_bytes=1000))
    assert (p.file, p.field) == ("tickets.csv", "file") and "larger than" in p.message
    monkeypatch.setenv("WAVEKIT_MAX_TELEMETRY_MB", "0.001")
    p = _one(loaded_store, big)
    assert (p.file, p.field) == ("tickets.csv", "file") and "1,048 bytes allowed" in p.message


@pytest.mark.parametrize(("name", "text", "line", "field", "words"), [
    ("exports.json", '[{"identity": "achen", "at": "2026-04-09T10:00:00Z", "volume": NaN}]',
     None, "file", "NaN is not a number JSON allows"),
    ("exports.json", '[{"identity": "achen", "at": "2026-04-09T10:00:00Z", "volume": [1]}]',
     1, "volume", "holds a list or an object"),
    ("exports.json", '{"identity": "achen", "volume": 1}\n{"identity": "alopez", "volume": 2}\n',
     None, "at",
     "required field is missing from every record"),
    ("exports.json", '[{"identity": "achen", "at": "2026-04-09T10:00:00Z", "volume": 1}, 5]',
     2, "record", "is not a JSON object"),
    ("exports.json", "[" * 100_000 + "]" * 100_000, None, "file", "nested too deeply"),
    ("exports.json", '"just text"', None, "file", "must be a JSON array"),
    ("tickets.jsonl", '{"package": "finance-month-end-operator", "at": "2026-04-09"}\n'
     '{"package": "finance-month-end-operator", "at": \n', 2, "record", "is not valid JSON"),
    ("tickets.jsonl", '{"package": "finance-month-end-operator", "at": "2026-04-09"}\n'
     '{"package": "finance-month-end-operator"}\n', 2, "at", "is missing from this record"),
])
def test_bad_json_is_one_problem(loaded_store, tmp_path, name, text, line, field, words
                                 ) -> None:
    path = tmp_path / name
    path.write_text(text)
    p = _one(loaded_store, path)
    assert (p.file, p.line, p.field) == (name, line, field), str(p)
    assert words in p.message, str(p)


def test_many_bad_rows_are_capped(loaded_store, tmp_path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text("identity,entitlement,at\n" + "achen,fin-gl-journal-post,04/09/2026\n" * 500)
    problems = _refused(loaded_store, path)
    assert len(problems) == 21
    assert problems[-1].message.startswith("... and 480 more rows with this problem")


def test_a_refused_file_stores_nothing_from_the_good_ones(loaded_store, tmp_path) -> None:
    good = tmp_path / "usage.csv"
    good.write_text(USAGE)
    bad = tmp_path / "tickets.csv"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TelemetryInvalid) as err:
        ingest_telemetry(loaded_store, [good, bad])
    assert [(p.file, p.field) for p in err.value.problems] == [("tickets.csv", "file")]
    assert _count(loaded_store) == 0
    assert ingest_telemetry(loaded_store, [good]) == {"usage": 1}
