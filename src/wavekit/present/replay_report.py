"""The replay report (Markdown, reports/templates/replay_report.md.j2) and its table rows."""

from __future__ import annotations

from typing import Any

from wavekit.domain.health import Verdict
from wavekit.domain.replay import ReplayResult
from wavekit.present.reports import render_template

MARKS = {Verdict.PASSED: "✓", Verdict.FAILED: "✗", Verdict.INCONCLUSIVE: "?",
         Verdict.ERROR: "!"}


def _hours(td: Any) -> str:
    h = td.total_seconds() / 3600
    return f"{h / 24:g} d" if h >= 24 and h % 24 == 0 else f"{h:g} h"


def replay_context(result: ReplayResult) -> dict[str, Any]:
    checks = []
    for c in result.checks:
        mine = [m for m in result.measurements if m.check == c.name]
        checks.append({
            "name": c.name, "rule": c.describe(), "every": _hours(c.interval),
            "start_after": _hours(c.start_after), "failure_limit": c.failure_limit,
            "measured": len(mine),
            "failed": sum(m.verdict == Verdict.FAILED for m in mine),
            "inconclusive": sum(m.verdict == Verdict.INCONCLUSIVE for m in mine),
            "errors": sum(m.verdict == Verdict.ERROR for m in mine),
        })
    start = result.deployed_at.date()
    days = [{"n": (day - start).days + 1, "date": day.isoformat(),
             "marks": [MARKS[v[c.name]] if c.name in v else "·" for c in result.checks]}
            for day, v in result.days()]
    decided_day = ((result.decided_at.date() - start).days + 1) if result.decided_at else None
    return {"result": result, "checks": checks, "days": days, "decided_day": decided_day}


def render_replay_report(result: ReplayResult, database_url: str | None = None) -> str:
    return render_template("replay_report.md.j2", replay_context(result), database_url)
