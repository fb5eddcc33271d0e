"""Rollback drills as plain values: what a recorded drill proves, and when a package's fallback
counts as tested.

An automated drill deploys a package to a drill target (never production), forces its
rollback, reads the target back and times the restore against the rollback objective. It
passes when the read-back equals the prior bundle exactly (`RestoreProof.equal`) and the
restore (rollback start -> read-back proof) took no longer than the objective. A manual
drill is one a person rehearsed elsewhere and signed.

`drill_standing` is the one rule the gate `rollback_drill`, the KPI "Fallback tested", the
dashboard and the nightly backlog read:

- once a package has a finished recorded drill, the latest one decides: passed and no older
  than the review cadence -> tested; failed -> not tested (whatever its age) until a drill
  passes; passed but older than the cadence -> due;
- a package with no recorded drill is not tested, whatever the catalog's `fallback.drill`
  says: a line of catalog text proves no rehearsal and names no signer. Its legacy `signed`
  is reported as "signed in catalog only" (a drill is still pending: run one, or record a
  signed manual drill with `wavekit drill PACKAGE --manual --signed-by NAME --note ...`);
  `pending` and `not_required` are reported as they say. None of them passes the gate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from wavekit.domain.clock import as_utc
from wavekit.domain.planning import RestoreProof

AUTOMATED, MANUAL = "automated", "manual"
DEFAULT_OBJECTIVE_MINUTES = 30.0


@dataclass(frozen=True)
class DrillRecord:
    """A finished (or running) drill as the rules see it, detached from the store."""

    package_key: str
    kind: str  # automated | manual
    passed: bool
    finished_at: datetime | None  # None while the drill runs
    id: int | None = None
    target: str = ""
    signed_by: str | None = None
    duration_seconds: float | None = None
    objective_minutes: float | None = None
    failure: str = ""


@dataclass(frozen=True)
class DrillStanding:
    """Where a package's fallback stands, with words for the gate, the dashboard and status."""

    status: str  # drilled | signed | signed_catalog | failed | due | pending | not_required
    tested: bool  # the fallback counts as tested: the gate passes
    recorded: bool  # ... by a drill recorded in the store within the cadence: the KPI counts it
    label: str  # a few words: "drilled 2026-04-20", "signed (catalog)", "drill failed ..."
    detail: str  # one sentence
    last: DrillRecord | None = None


def fmt_seconds(seconds: float | None) -> str:
    """0.4 s, 12 s, 4m 05s, 1h 02m: a drill's time to restore."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def fmt_minutes(minutes: float | None) -> str:
    if minutes is None:
        return "—"
    return f"{minutes:g} min"


def judge_drill(proof: RestoreProof, restore_time: timedelta, objective: timedelta) -> list[str]:
    """Why a drill failed, in words; empty when it passed (exact read-back, within objective)."""
    failures = []
    if not proof.touched_restored:
        failures.append(f"{len(proof.mismatched)} grant(s) the package changed differ from the "
                        "prior bundle after the rollback")
    if proof.drift_outside:
        failures.append(f"{len(proof.drift_outside)} grant(s) the package did not change differ "
                        "from the prior bundle")
    if restore_time > objective:
        failures.append(f"restore took {fmt_seconds(restore_time.total_seconds())}, over the "
                        f"rollback objective of {fmt_minutes(objective / timedelta(minutes=1))}")
    return failures


def _latest(drills: Iterable[DrillRecord], as_of: datetime) -> DrillRecord | None:
    done = [d for d in drills if d.finished_at is not None and as_utc(d.finished_at) <= as_of]
    if not done:
        return None
    def finished(d: DrillRecord) -> tuple[datetime, int]:
        assert d.finished_at is not None, "only finished drills are in `done`"
        return as_utc(d.finished_at), d.id or 0

    return max(done, key=finished)


def drill_standing(catalog_drill: str, drills: Iterable[DrillRecord], as_of: datetime,
                   cadence_days: int) -> DrillStanding:
    """The package's fallback standing as of `as_of` (see the module docstring)."""
    as_of = as_utc(as_of)
    last = _latest(drills, as_of)
    if last is not None:
        assert last.finished_at is not None
        when = f"{as_utc(last.finished_at):%Y-%m-%d}"
        age = as_of - as_utc(last.finished_at)
        if not last.passed:
            return DrillStanding("failed", False, False, f"drill failed {when}",
                                 f"the last rollback drill ({when}) failed: "
                                 f"{last.failure or 'no reason recorded'}", last)
        if age > timedelta(days=cadence_days):
            return DrillStanding("due", False, False, "drill due",
                                 f"the last rollback drill passed on {when}, "
                                 f"{age / timedelta(days=1):.0f} days ago (cadence "
                                 f"{cadence_days} days)", last)
        if last.kind == MANUAL:
            return DrillStanding("signed", True, True, f"signed by {last.signed_by} {when}",
                                 f"rollback drill signed by {last.signed_by} on {when}", last)
        return DrillStanding("drilled", True, True, f"drilled {when}",
                             f"rollback drill passed on {when} on {last.target}: restored in "
                             f"{fmt_seconds(last.duration_seconds)} (objective "
                             f"{fmt_minutes(last.objective_minutes)})", last)
    if catalog_drill == "signed":
        return DrillStanding("signed_catalog", False, False, "drill pending (catalog text only)",
                             "the catalog says the rollback drill was signed, but no drill or "
                             "signer is recorded")
    if catalog_drill == "not_required":
        return DrillStanding("not_required", False, False, "drill not required",
                             "the catalog marks the rollback drill not required")
    return DrillStanding("pending", False, False, "drill pending",
                         "no rollback drill recorded")


def drill_backlog_reason(package_key: str, standing: DrillStanding) -> str | None:
    """Why the nightly run keeps a drill item open for the package; None when none is due."""
    run = f"`wavekit drill {package_key}`"
    if standing.status == "failed":
        return f"{standing.detail}: fix the fallback and drill it again ({run})"
    if standing.status == "due":
        return f"rollback drill due: {standing.detail}; drill it again ({run})"
    if standing.status in ("pending", "signed_catalog"):
        return (f"rollback drill pending: no drill recorded; rehearse the rollback ({run}) "
                "or record a signed manual drill")
    return None
