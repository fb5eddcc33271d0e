"""The benchmark harness runs end to end on a tiny catalog (no timing is asserted, ever)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.run import COLUMNS, bench_catalog, render_report, render_table


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_catalog_benchmark_produces_a_complete_table(tmp_path: Path) -> None:
    results = bench_catalog(identities=300, packages=5, workdir=tmp_path, write_sample=50)
    assert [r.benchmark for r in results] == ["a. catalog load + validate",
                                              "a. catalog write to SQLite"]
    table = render_table(results)
    header, rule, *rows = table.strip().splitlines()
    assert tuple(_cells(header)) == COLUMNS
    assert len(_cells(rule)) == len(COLUMNS)
    assert len(rows) == len(results)
    for row, result in zip(rows, results, strict=True):
        cells = _cells(row)
        assert len(cells) == len(COLUMNS)
        assert cells[0] == result.benchmark
        assert result.wavekit_s is not None and result.baseline_s is not None
        assert cells[4].endswith("x")  # the ratio is reported for both rows
    assert "Baseline / wavekit" in render_report(results, quick=True, elapsed=1.0)


def test_p4_meter_counts_overlapping_calls_once_and_nested_calls_not_at_all() -> None:
    from benchmarks.flows import Meter

    meter = Meter(intervals=[(1.0, 3.0), (2.0, 4.0), (6.0, 7.0)])
    assert meter.covered(0.0, 10.0) == 4.0  # [1, 4] and [6, 7]
    assert meter.covered(2.5, 6.5) == 2.0  # clipped to the window
    calls: list[str] = []
    inner = meter.wrap(lambda: calls.append("inner"))
    outer = meter.wrap(lambda: (inner(), calls.append("outer")))
    outer()
    assert calls == ["inner", "outer"] and len(meter.intervals) == 4  # the outer call only
