"""Telemetry ingestion: every kind round-trips through the store; a bad row loads nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlmodel import func, select

from wavekit.adapters.catalog import write_catalog
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import TelemetrySample
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.telemetry import (
    TelemetryInvalid,
    ingest_frame,
    ingest_telemetry,
    kind_from_name,
    load_frames,
)
from wavekit.domain.frames import TelemetryFrames
from wavekit.examples.synth_telemetry import generate_telemetry, write_telemetry

FILES = {
    "usage.csv": "identity,entitlement,at\n"
                 "achen,fin-gl-journal-post,2026-04-08T10:00:00Z\n"
                 "alopez,fin-close-dashboard,2026-04-08T12:30:00+02:00\n",
    "tickets.csv": "package,at,category\n"
                   "finance-month-end-operator,2026-04-09T08:00:00Z,missing-access\n",
    "exceptions.csv": "package,identity,at,reason\n"
                      "hr-case-intake-specialist,anakamura,2026-04-09T09:00:00Z,sod-waiver\n",
    "exports.csv": "identity,at,volume\nachen,2026-04-09T10:00:00Z,1250.5\n",
    "assignments.csv": "identity,entitlement,action,at,actor\n"
                       "achen,fin-payment-release,add,2026-04-09T11:00:00Z,it-helpdesk\n"
                       "alopez,fin-gl-journal-post,REMOVE,2026-04-09T12:00:00Z,wavekit\n",
}


def _write(directory: Path, files: dict[str, str]) -> list[Path]:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return [directory / name for name in files]


def _count(url: str) -> int:
    with session_scope(url) as s:
        return s.exec(select(func.count()).select_from(TelemetrySample)).one()


@pytest.fixture
def catalog_store(store_url: str, example_catalog) -> str:
    with session_scope(store_url) as s:
        write_catalog(s, example_catalog)
    return store_url


def test_every_kind_round_trips(catalog_store: str, tmp_path: Path) -> None:
    paths = _write(tmp_path / "feed", FILES)
    counts = ingest_telemetry(catalog_store, paths)
    assert counts == {"usage": 2, "tickets": 1, "exceptions": 1, "exports": 1,
                      "assignments": 2}
    f = load_frames(catalog_store)
    # 12:30 at +02:00 is 10:30 UTC; usage comes back in UTC, in the file's columns.
    assert f.usage.sort_values("at").to_dict("records") == [
        {"identity": "achen", "entitlement": "fin-gl-journal-post",
         "at": pd.Timestamp("2026-04-08 10:00", tz="UTC")},
        {"identity": "alopez", "entitlement": "fin-close-dashboard",
         "at": pd.Timestamp("2026-04-08 10:30", tz="UTC")},
    ]
    assert f.tickets[["package", "category"]].values.tolist() == [
        ["finance-month-end-operator", "missing-access"]]
    assert f.exceptions[["package", "identity", "reason"]].values.tolist() == [
        ["hr-case-intake-specialist", "anakamura", "sod-waiver"]]
    assert f.exports["volume"].tolist() == [1250.5]
    a = f.assignments.sort_values("at")
    assert a[["identity", "entitlement", "action", "actor"]].values.tolist() == [
        ["achen", "fin-payment-release", "add", "it-helpdesk"],
        ["alopez", "fin-gl-journal-post", "remove", "wavekit"],
    ]
    assert "fin-payment-release" in f.privileged
    assert f.latest["assignments"] == pd.Timestamp("2026-04-09 12:00", tz="UTC")
    with session_scope(catalog_store) as s:
        assert audit.events(s, action="telemetry_ingested")[-1].detail["rows"] == counts


def test_every_bad_row_is_reported_and_nothing_loads(loaded_store: str, tmp_path: Path) -> None:
    paths = _write(tmp_path, {
        **FILES,  # good files in the same call must not load either
        "usage.csv": "identity,entitlement,at\n"
                     "achen,fin-gl-journal-post,2026-04-08T10:00:00Z\n"
                     "ghost,fin-nope,yesterday\n",
        "tickets.csv": "package,at\nno-such-package,2026-04-09T08:00:00Z\n,2026-04-09\n",
        "exports.csv": "identity,at,volume\nachen,2026-04-09T10:00:00Z,-5\n"
                       "achen,2026-04-09T10:00:00Z,lots\n",
        "assignments.csv": "identity,entitlement,action,at,actor\n"
                           "achen,fin-payment-release,grant,2026-04-09T11:00:00Z,\n",
    })
    with pytest.raises(TelemetryInvalid) as err:
        ingest_telemetry(loaded_store, paths)
    found = {(p.file, p.line, p.field) for p in err.value.problems}
    assert found == {
        ("usage.csv", 3, "identity"), ("usage.csv", 3, "entitlement"), ("usage.csv", 3, "at"),
        ("tickets.csv", 2, "package"), ("tickets.csv", 3, "package"),
        ("exports.csv", 2, "volume"), ("exports.csv", 3, "volume"),
        ("assignments.csv", 2, "action"), ("assignments.csv", 2, "actor"),
    }
    messages = {str(p) for p in err.value.problems}
    assert "usage.csv:3: identity: unknown identity 'ghost'" in messages
    assert "tickets.csv:2: package: unknown package 'no-such-package'" in messages
    assert "exports.csv:2: volume: negative volume -5" in messages
    assert "assignments.csv:2: action: 'grant' is not add or remove" in messages
    assert _count(loaded_store) == 0


def test_missing_columns_and_unknown_kinds_are_problems(loaded_store: str,
                                                        tmp_path: Path) -> None:
    paths = _write(tmp_path, {"exports.csv": "identity,at\nachen,2026-04-09T10:00:00Z\n",
                              "notes.csv": "a\n1\n"})
    with pytest.raises(TelemetryInvalid) as err:
        ingest_telemetry(loaded_store, paths)
    assert [str(p) for p in err.value.problems] == [
        "exports.csv:1: volume: required column is missing",
        "notes.csv: kind: cannot tell the kind from 'notes.csv'; name it one of usage, "
        "tickets, exceptions, exports, assignments",
    ]
    assert _count(loaded_store) == 0


@pytest.mark.parametrize(("name", "kind"), [
    ("usage.csv", "usage"), ("tickets-2026-04.json", "tickets"), ("ticket.csv", "tickets"),
    ("Exports_april.jsonl", "exports"), ("assignments.ndjson", "assignments"),
    ("usages.csv", None), ("exceptional.csv", None), ("notes.csv", None),
])
def test_kind_is_read_from_the_file_name(name: str, kind: str | None) -> None:
    assert kind_from_name(name) == kind


def test_json_arrays_and_json_lines(loaded_store: str, tmp_path: Path) -> None:
    records = [{"identity": "achen", "at": "2026-04-09T10:00:00Z", "volume": 10},
               {"identity": "alopez", "at": "2026-04-09T11:00:00Z", "volume": 20.5}]
    (tmp_path / "exports.json").write_text(json.dumps(records))
    (tmp_path / "feed.jsonl").write_text(
        '{"package": "finance-month-end-operator", "at": "2026-04-09T08:00:00Z"}\n'
        '{"package": "finance-month-end-operator", "at": "never"}\n')
    with pytest.raises(TelemetryInvalid) as err:
        ingest_telemetry(loaded_store, {"exports": tmp_path / "exports.json",
                                        "tickets": [tmp_path / "feed.jsonl"]})
    # JSON lines: the line number; the first line is line 1.
    assert [str(p) for p in err.value.problems] == [
        "feed.jsonl:2: at: 'never' is not a timestamp (ISO 8601)"]
    counts = ingest_telemetry(loaded_store, tmp_path / "exports.json")
    assert counts == {"exports": 2}
    assert load_frames(loaded_store).exports["volume"].tolist() == [10.0, 20.5]


def test_reingesting_a_source_replaces_it(loaded_store: str, tmp_path: Path) -> None:
    paths = _write(tmp_path, {"usage.csv": FILES["usage.csv"]})
    ingest_telemetry(loaded_store, paths)
    ingest_telemetry(loaded_store, paths)  # the nightly refresh re-runs: no doubled events
    assert _count(loaded_store) == 2
    ingest_telemetry(loaded_store, paths, source="feed-2026-04-10")  # another delivery adds
    assert _count(loaded_store) == 4


def test_empty_file_loads_nothing_without_error(loaded_store: str, tmp_path: Path) -> None:
    paths = _write(tmp_path, {"tickets.csv": "package,at,category\n"})
    assert ingest_telemetry(loaded_store, paths) == {"tickets": 0}
    assert load_frames(loaded_store).tickets.empty


def test_ingest_frame_takes_datetimes_and_numbers(loaded_store: str) -> None:
    df = pd.DataFrame({"identity": ["achen", "nobody"],
                       "at": pd.to_datetime(["2026-04-09 10:00", "2026-04-09 11:00"]),
                       "volume": [5, 7]})
    with pytest.raises(TelemetryInvalid) as err:
        ingest_frame(loaded_store, "exports", df)
    assert [str(p) for p in err.value.problems] == [
        "<exports frame>:2: identity: unknown identity 'nobody'"]
    assert ingest_frame(loaded_store, "exports", df.iloc[:1]) == 1
    row = load_frames(loaded_store).exports.iloc[0]
    assert (row["identity"], row["at"], row["volume"]) == (
        "achen", pd.Timestamp("2026-04-09 10:00", tz="UTC"), 5.0)  # naive means UTC
    with pytest.raises(ValueError, match="unknown telemetry kind"):
        ingest_frame(loaded_store, "logins", df)


def test_load_frames_window_is_half_open_and_scoped(loaded_store: str, tmp_path: Path) -> None:
    ingest_telemetry(loaded_store, _write(tmp_path, FILES))
    f = load_frames(loaded_store, datetime(2026, 4, 8, 10, tzinfo=UTC),
                    datetime(2026, 4, 8, 10, 30, tzinfo=UTC))
    assert f.usage["identity"].tolist() == ["achen"]  # 10:00 in, 10:30 out
    with session_scope(loaded_store) as s:
        hr = load_package_view(s, "hr-case-intake-specialist")
        f = load_frames(s, package=hr)
    # HR's frames: its exception, no finance ticket, no finance usage or exports.
    assert len(f.exceptions) == 1 and f.tickets.empty and f.usage.empty and f.exports.empty
    # Assignments of privileged entitlements stay (escalations of HR members are checked).
    assert f.assignments["entitlement"].tolist() == ["fin-payment-release"]
    assert f.latest["usage"] == pd.Timestamp("2026-04-08 10:30", tz="UTC")  # unscoped


def test_frames_build_normalises_hand_made_frames() -> None:
    f = TelemetryFrames.build(usage=pd.DataFrame({
        "identity": ["a"], "entitlement": ["e"], "at": ["2026-04-08T09:00:00+01:00"]}))
    assert f.usage["at"].tolist() == [pd.Timestamp("2026-04-08 08:00", tz="UTC")]
    assert f.latest == {"usage": pd.Timestamp("2026-04-08 08:00", tz="UTC")}
    assert list(f.assignments.columns) == ["identity", "entitlement", "action", "at", "actor"]
    assert f.tickets.empty and f.privileged == frozenset()
    with pytest.raises(TypeError, match="logins"):
        TelemetryFrames.build(logins=pd.DataFrame())


def test_synthetic_csv_files_ingest_as_documented(loaded_store: str, tmp_path: Path) -> None:
    deployed = datetime(2026, 4, 8, 9, tzinfo=UTC)
    frames = generate_telemetry(loaded_store, start=deployed - timedelta(days=2),
                                deployed_at=deployed, days=4, seed=3,
                                packages=["finance-month-end-operator",
                                          "hr-case-intake-specialist"],
                                anomaly="finance-month-end-operator")
    paths = write_telemetry(frames, tmp_path / "feed")
    assert sorted(p.name for p in paths.values()) == [
        "assignments.csv", "exceptions.csv", "exports.csv", "tickets.csv", "usage.csv"]
    assert paths["usage"].read_text().splitlines()[0] == "identity,entitlement,at"
    counts = ingest_telemetry(loaded_store, list(paths.values()))
    assert counts == {k: len(v) for k, v in frames.items()}
    back = load_frames(loaded_store)
    for kind, df in frames.items():
        got = back.as_dict()[kind].sort_values(["at", *df.columns.drop("at")])
        want = TelemetryFrames.build(**{kind: df}).as_dict()[kind].sort_values(
            ["at", *df.columns.drop("at")])
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    # The anomaly is a privileged grant added out of band, which the store knows is privileged.
    oob = back.assignments[back.assignments["actor"] != "wavekit"]
    assert set(oob["entitlement"]) <= back.privileged and len(oob) == 1
