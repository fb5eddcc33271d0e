"""Reports rendered with Jinja2: the readiness dashboard (HTML), wave and rollback Markdown.

Python gathers the data (pandas where tabular) and the templates in reports/templates draw it;
no markup is built here. Every rendered text passes through `redact` before it leaves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from wavekit.adapters.settings import load_settings, masked_url
from wavekit.adapters.store import audit
from wavekit.adapters.store import cohorts as cohort_store
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import (
    Approval,
    AuditEvent,
    BundleGrant,
    HealthCheckResult,
    MaintenanceTask,
    Release,
    RolePackage,
    Wave,
)
from wavekit.domain.clock import as_utc, utcnow
from wavekit.domain.states import PackageState
from wavekit.present.kpis import DEFINITIONS, PortalKpis, compute_kpis
from wavekit.project import project_dir
from wavekit.workflow.failures import redact

# --------------------------------------------------------------------------- secrets

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|PRIVATE_KEY", re.I)
_SECRET_ENV_PREFIXES = ("WAVEKIT_", "SLACK_", "PREFECT_", "LDAP_", "SCIM_", "PG", "DATABASE_")

# Shorter values would blank ordinary words all over a report.
_MIN_SECRET_LEN = 6



def known_secrets(database_url: str | None = None) -> set[str]:
    """Secret values a report must never contain: credential-like environment variables and
    the store password. Read at render time, never at import."""
    found: set[str] = set()
    for name, value in os.environ.items():
        if name.upper().startswith(_SECRET_ENV_PREFIXES) and _SECRET_NAME.search(name):
            found.add(value)
    for url in (database_url, os.environ.get("WAVEKIT_DATABASE_URL")):
        if url:
            try:
                password = make_url(url).password
            except Exception:
                password = None
            if password:
                found.add(str(password))
    return {s for s in found if len(s) >= _MIN_SECRET_LEN}



# --------------------------------------------------------------------------- formatting


def fmt_dt(value: datetime | None) -> str:
    return "—" if value is None else as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


def fmt_day(value: Any) -> str:
    return "—" if value is None else value.strftime("%d %b")


def fmt_duration(value: timedelta | None) -> str:
    """28h, 2d 4h, 35m: the portal's way of writing a duration."""
    if value is None:
        return "—"
    minutes = int(value.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    days, rest = divmod(hours, 24)
    return f"{days}d {rest}h" if rest else f"{days}d"


def fmt_pct(value: float | None) -> str:
    """A 0..1 share as a percentage."""
    return "—" if value is None else f"{round(value * 100):d}%"


def fmt_score(value: float | None) -> str:
    """A 0..100 score (deploy confidence) as a percentage."""
    return "—" if value is None else f"{round(value):d}%"


def fmt_num(value: float | None) -> str:
    # pandas turns a missing measurement (inconclusive) into NaN.
    if value is None or value != value:
        return "—"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def md_escape(value: Any) -> str:
    """Text safe inside Markdown, table cells included: no pipes, no raw HTML, one line."""
    text = "—" if value is None or value == "" else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(text.split())


def fmt_grant(value: Any) -> str:
    """A grant as `identity → entitlement`, whatever shape the audit detail stored it in."""
    if isinstance(value, dict):
        return f"{value.get('identity')} → {value.get('entitlement')}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"{value[0]} → {value[1]}"
    return str(value)


def state_label(value: Any) -> str:
    try:
        return PackageState(value).label
    except ValueError:
        return str(value)


def templates_dir() -> Path:
    """WAVEKIT_TEMPLATES_DIR, else the project's reports/templates (checkout or wheel)."""
    if override := os.environ.get("WAVEKIT_TEMPLATES_DIR"):
        return Path(override)
    return project_dir() / "reports" / "templates"


def artifact_key(*parts: object) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes): artifact_key("wave", 1,
    "report") -> "wave-1-report"."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


@lru_cache(maxsize=4)
def environment(directory: str | None = None) -> Environment:
    """The Jinja2 environment: HTML autoescaped, Markdown not; undefined names fail loudly."""
    env = Environment(
        loader=FileSystemLoader(directory or str(templates_dir())),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"),
                                     default_for_string=False, default=False),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(dt=fmt_dt, day=fmt_day, duration=fmt_duration, pct=fmt_pct,
                       score=fmt_score,
                       num=fmt_num, md=md_escape, grant=fmt_grant, state=state_label)
    return env


def audit_head(database_url: str | None) -> str:
    """The audit chain's head line every report and run artifact ends with, so a truncated
    tail is caught against any of them (`wavekit audit verify --against-report`)."""
    if database_url is None:
        return "audit chain head: unknown (rendered without a store)"
    with session_scope(database_url) as s:
        return audit.head_line(s)


def with_audit_head(text: str, database_url: str | None) -> str:
    """An artifact's Markdown or description followed by the chain's head line."""
    return f"{text}\n\n{audit_head(database_url)}"


def render_template(name: str, context: dict[str, Any], database_url: str | None = None) -> str:
    """Render one template (each shows `audit_head`, the one place it is read) and redact
    secrets from the result."""
    context = {**context, "audit_head": audit_head(database_url)}
    text = environment(str(templates_dir())).get_template(name).render(**context)
    return redact(text, known_secrets(database_url), limit=None)


# --------------------------------------------------------------------------- charts

PLOT_W, PLOT_H, PAD = 320.0, 90.0, 6.0


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    value: float
    verdict: str
    at: datetime


@dataclass(frozen=True)
class Chart:
    """One series over a watch window, already in SVG coordinates (the template only draws)."""

    key: str
    title: str
    start: datetime
    end: datetime
    points: list[ChartPoint]
    y_max: float
    threshold: float | None = None
    threshold_y: float | None = None
    unit: str = ""
    markers: list[dict[str, Any]] = field(default_factory=list)
    pad: float = PAD
    plot_w: float = PLOT_W
    plot_h: float = PLOT_H

    @property
    def width(self) -> float:
        return self.plot_w + 2 * self.pad

    @property
    def height(self) -> float:
        return self.plot_h + 2 * self.pad

    @property
    def path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)

    @property
    def last(self) -> ChartPoint | None:
        return self.points[-1] if self.points else None


def _scale_x(at: pd.Series, start: datetime, end: datetime) -> pd.Series:
    span = max((end - start).total_seconds(), 1.0)
    frac = ((at - pd.Timestamp(start)).dt.total_seconds() / span).clip(0, 1)
    return PAD + frac * PLOT_W


def _scale_y(values: pd.Series, y_max: float) -> pd.Series:
    return PAD + PLOT_H - (values.clip(lower=0) / y_max) * PLOT_H


def health_frame(rows: Sequence[HealthCheckResult]) -> pd.DataFrame:
    """Health check results as a frame: check, due, at, value, threshold, verdict."""
    df = pd.DataFrame(
        [{"check": r.check_name, "due": as_utc(r.due_at), "at": as_utc(r.measured_at),
          "value": r.value, "threshold": r.threshold, "verdict": r.verdict} for r in rows],
        columns=["check", "due", "at", "value", "threshold", "verdict"],
    )
    return df.sort_values(["due", "check"], kind="stable").reset_index(drop=True)


def _check_order(name: str) -> tuple[int, str]:
    # Adoption leads: it is the signal the portal's launch story is told by.
    return (0 if name == "adoption" else 1, name)


def health_charts(rows: Sequence[HealthCheckResult], start: datetime, end: datetime,
                  markers: Sequence[tuple[datetime, str, str]] = ()) -> list[Chart]:
    """Charts over the watch window [start, end]: share of checks passing, then each check.

    `markers` are (at, kind, label) rules drawn across every chart, e.g. a rollback or now.
    """
    df = health_frame(rows)
    if df.empty:
        return []
    start, end = as_utc(start), as_utc(end)
    span = max((end - start).total_seconds(), 1.0)
    mark = [{"x": PAD + min(max((as_utc(at) - start).total_seconds() / span, 0), 1) * PLOT_W,
             "kind": kind, "label": label, "at": as_utc(at)} for at, kind, label in markers
            if start <= as_utc(at) <= end]
    charts: list[Chart] = []

    ticks = df.groupby("due").agg(at=("at", "max"),
                                  value=("verdict", lambda v: float((v == "passed").mean())),
                                  failed=("verdict", lambda v: bool((v == "failed").any())))
    ticks["x"] = _scale_x(ticks["at"], start, end)
    ticks["y"] = _scale_y(ticks["value"], 1.0)
    charts.append(Chart(
        key="health", title="Health: checks passing", start=start, end=end, y_max=1.0,
        unit="%", markers=mark,
        points=[ChartPoint(r.x, r.y, r.value, "failed" if r.failed else "passed", r.at)
                for r in ticks.itertuples()],
    ))

    for name in sorted(df["check"].unique(), key=_check_order):
        one = df[df["check"] == name].dropna(subset=["value"]).copy()
        if one.empty:
            continue
        threshold = one["threshold"].dropna()
        thr = float(threshold.iloc[-1]) if not threshold.empty else None
        y_max = float(max(one["value"].max(), thr or 0.0)) * 1.15 or 1.0
        one["x"] = _scale_x(one["at"], start, end)
        one["y"] = _scale_y(one["value"].astype(float), y_max)
        charts.append(Chart(
            key=name, title=name.replace("_", " ").capitalize(), start=start, end=end,
            y_max=y_max, threshold=thr,
            threshold_y=float(_scale_y(pd.Series([thr]), y_max).iloc[0]) if thr is not None
            else None,
            markers=mark,
            points=[ChartPoint(r.x, r.y, float(r.value), r.verdict, r.at)
                    for r in one.itertuples()],
        ))
    return charts


# --------------------------------------------------------------------------- store reads


def _events(session: Session, *, release_id: int | None = None,
            actions: Iterable[str] | None = None) -> list[AuditEvent]:
    q = select(AuditEvent).order_by(col(AuditEvent.at), col(AuditEvent.id))
    if release_id is not None:
        q = q.where(AuditEvent.release_id == release_id)
    if actions is not None:
        q = q.where(col(AuditEvent.action).in_(list(actions)))
    return list(session.exec(q))


def _last(events: Sequence[AuditEvent], action: str) -> AuditEvent | None:
    found = [e for e in events if e.action == action]
    return found[-1] if found else None


def _health_rows(session: Session, release_id: int) -> list[HealthCheckResult]:
    return list(session.exec(select(HealthCheckResult)
                             .where(HealthCheckResult.release_id == release_id)
                             .order_by(col(HealthCheckResult.due_at))))


def _bundle(session: Session, release_id: int) -> pd.DataFrame:
    rows = session.exec(select(BundleGrant.kind, BundleGrant.identity, BundleGrant.entitlement)
                        .where(BundleGrant.release_id == release_id)).all()
    return pd.DataFrame(list(rows), columns=["kind", "identity", "entitlement"])


def _latest_release_ids(session: Session) -> dict[str, int]:
    rows = session.exec(select(Release.package_key, Release.id).order_by(col(Release.id))).all()
    return {key: rid for key, rid in rows if rid is not None}


def watch_window(release: Release, package: RolePackage) -> tuple[datetime, datetime] | None:
    """The release's watch window: deployed_at to watch_ends_at (or deployed + watch days)."""
    if release.deployed_at is None:
        return None
    start = as_utc(release.deployed_at)
    end = (as_utc(release.watch_ends_at) if release.watch_ends_at
           else start + timedelta(days=package.watch_days))
    return start, end


def release_outcome(release: Release, package: RolePackage, latest_id: int | None) -> str:
    """How a release ended (or stands): rolled back, the package's state, or superseded."""
    if release.rolled_back_at is not None:
        return "Rolled back"
    if release.id == latest_id:
        return PackageState(package.state).label
    return "Stable" if release.stable_at else "Superseded"


_VERDICT_RANK = {"passed": 0, "inconclusive": 1, "error": 1, "failed": 2}


def _health_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Per-check totals and a day-by-check timeline for the wave report."""
    if df.empty:
        return {"checks": [], "timeline": [], "columns": [], "runs": 0, "passed": 0,
                "failed": 0, "inconclusive": 0}
    counts = (df.pivot_table(index="check", columns="verdict", values="due", aggfunc="count",
                             fill_value=0)
              .reindex(columns=["passed", "failed", "inconclusive"], fill_value=0))
    last = df.groupby("check").tail(1).set_index("check")
    checks = [{"name": name, "runs": int(counts.loc[name].sum()),
               "passed": int(counts.loc[name, "passed"]),
               "failed": int(counts.loc[name, "failed"]),
               "inconclusive": int(counts.loc[name, "inconclusive"]),
               "last_value": last.loc[name, "value"], "threshold": last.loc[name, "threshold"],
               "last_verdict": last.loc[name, "verdict"]}
              for name in sorted(counts.index, key=_check_order)]
    columns = [c["name"] for c in checks]
    # One row per day: anomaly checks run every few hours and would bury the daily ones.
    # A cell shows the day's last value, its worst verdict and how many runs it covers.
    daily = df.assign(day=df["due"].dt.strftime("%Y-%m-%d"),
                      rank=df["verdict"].map(_VERDICT_RANK).fillna(0))
    timeline = []
    for day, group in daily.groupby("day", sort=True):
        cells: dict[str, dict[str, Any]] = {}
        for name, runs in group.groupby("check"):
            worst = runs.loc[runs["rank"].idxmax(), "verdict"]
            cells[str(name)] = {"value": runs["value"].iloc[-1], "verdict": worst,
                                "runs": len(runs)}
        timeline.append({"day": day, "cells": [cells.get(c) for c in columns]})
    return {"checks": checks, "timeline": timeline, "columns": columns, "runs": len(df),
            "passed": int((df["verdict"] == "passed").sum()),
            "failed": int((df["verdict"] == "failed").sum()),
            "inconclusive": int((df["verdict"] == "inconclusive").sum())}


# --------------------------------------------------------------------------- wave report


def release_summary(session: Session, release: Release, package: RolePackage,
                    latest_id: int | None) -> dict[str, Any]:
    """Everything the wave report says about one release, from its row and its audit trail."""
    assert release.id is not None
    events = _events(session, release_id=release.id)
    staged = _last(events, "plan_staged")
    plan = ({k: int(staged.detail.get(k, 0)) for k in ("adds", "removes", "retirements")}
            if staged else {"adds": release.adds, "removes": release.removes,
                            "retirements": release.retirements})
    gates = _last(events, "gates_checked")
    deployed = _last(events, "deployed")
    batches = [e for e in events if e.action == "deploy_batch"]
    retired = _last(events, "legacy_retired")
    approvals = [e for e in events
                 if e.action in ("approval_requested", "approval_signed", "approval_decided",
                                 "approval_refused", "approval_timed_out", "approval_locked")]
    df = health_frame(_health_rows(session, release.id))
    return {
        "release": release, "package": package, "plan": plan,
        "approvals": approvals,
        "gates": list(gates.detail.get("results", [])) if gates else None,
        "gates_event": gates,
        "batches": len(batches) or release.applied_batches,
        "deployed": ({"added": int(deployed.detail.get("added", 0)),
                      "removed": int(deployed.detail.get("removed", 0)), "at": deployed.at}
                     if deployed else None),
        "retired": int(retired.detail.get("count", 0)) if retired else None,
        "window": watch_window(release, package),
        "health": _health_summary(df),
        "outcome": release_outcome(release, package, latest_id),
        "rollback_file": rollback_filename(release) if _rolled_back(release, events) else None,
    }


def _rolled_back(release: Release, events: Sequence[AuditEvent]) -> bool:
    return release.rolled_back_at is not None or any(e.action == "rollback_started"
                                                     for e in events)


def wave_report_context(session: Session, wave: int, as_of: datetime | None = None
                        ) -> dict[str, Any]:
    """The wave report's data: every release of the wave and the packages not yet started."""
    packages = {p.key: p for p in session.exec(select(RolePackage))}
    releases = list(session.exec(select(Release).where(Release.wave == wave)
                                 .order_by(col(Release.package_key), col(Release.id))))
    latest = _latest_release_ids(session)
    summaries = [release_summary(session, r, packages[r.package_key],
                                 latest.get(r.package_key)) for r in releases]
    started = {r.package_key for r in releases}
    outcomes = pd.Series([s["outcome"] for s in summaries], dtype="object")
    return {
        "wave": wave, "wave_row": session.get(Wave, wave), "generated_at": as_of or utcnow(),
        "releases": summaries,
        "not_started": sorted((p for p in packages.values()
                               if p.wave == wave and p.key not in started), key=lambda p: p.key),
        "totals": {k: sum(s["plan"][k] for s in summaries)
                   for k in ("adds", "removes", "retirements")},
        "outcomes": outcomes.value_counts().sort_index().to_dict(),
    }


# --------------------------------------------------------------------------- rollback report


def report_filename(kind: str, key: str, number: int | None) -> str:
    """`<kind>-<key>-<number>.md`, one path segment whatever `key` holds.

    Catalog keys are [a-z0-9-]; anything else (a store loaded before keys were checked, a
    row written by hand) becomes "_": no "/", "..", control or bidi character gets through.
    """
    return f"{kind}-{re.sub(r'[^a-z0-9-]', '_', key)}-{number}.md"


def rollback_filename(release: Release) -> str:
    return report_filename("rollback", release.package_key, release.id)


def _inside(directory: Path, name: str) -> Path:
    """`directory / name`, refusing a name that would resolve outside the directory."""
    path = directory / name
    if path.resolve().parent != directory.resolve():
        raise ValueError(f"report file name {name!r} leaves {directory}")
    return path


def rollback_report_context(session: Session, release_id: int) -> dict[str, Any]:
    """The rollback report's data: what, why, when, what was restored, and the read-back proof."""
    release = session.get(Release, release_id)
    if release is None:
        raise KeyError(f"no release {release_id} in the store")
    package = session.get(RolePackage, release.package_key)
    assert package is not None
    events = _events(session, release_id=release_id)
    started = _last(events, "rollback_started")
    verified = _last(events, "rollback_verified")
    contained = _last(events, "package_contained")
    health = _health_rows(session, release_id)
    failed = [h for h in health if h.verdict == "failed"]

    bundle = _bundle(session, release_id)
    prior = bundle[bundle["kind"] == "prior"]
    touched = bundle[bundle["kind"].isin(["add", "remove", "retire"])]
    cohort = cohort_store.progress(session, release_id)
    if cohort is not None:  # a stepped release touched only the members its steps took up
        granted = cohort_store.granted_members(session, release_id) or frozenset()
        touched = touched[touched["identity"].isin(granted)]
    prior_keys = set(zip(prior["identity"], prior["entitlement"], strict=True))
    touched = touched.assign(held_before=[(i, e) in prior_keys for i, e in
                                          zip(touched["identity"], touched["entitlement"],
                                              strict=True)])
    # Touched grants that were held before are re-granted; the rest are taken away again.
    restored = (touched.drop_duplicates(["identity", "entitlement"])
                .groupby("entitlement")["held_before"]
                .agg(regranted="sum", withdrawn=lambda s: int((~s).sum()))
                .reset_index())
    prior_by_ent = (prior.groupby("entitlement").size().rename("grants").reset_index()
                    .sort_values("entitlement"))

    started_at = started.at if started else None
    restored_at = release.rolled_back_at or (verified.at if verified else None)
    return {
        "release": release, "package": package, "started": started, "verified": verified,
        "contained": contained,
        "cohort": ({"step": cohort.step + 1, "steps": cohort.steps, "granted": cohort.granted,
                    "total": cohort.total} if cohort is not None else None),
        "reason": (release.rollback_reason
                   or (started.detail.get("reason") if started else None) or "not recorded"),
        "failed_checks": failed,
        "plan": {k: int((bundle["kind"] == k).sum()) for k in ("add", "remove", "retire")},
        "prior_count": len(prior),
        "prior_by_entitlement": prior_by_ent.to_dict("records"),
        "restored": restored.to_dict("records"),
        "regranted": int(restored["regranted"].sum()) if not restored.empty else 0,
        "withdrawn": int(restored["withdrawn"].sum()) if not restored.empty else 0,
        "timeline": {
            "deployed_at": release.deployed_at,
            "first_failure_at": failed[0].measured_at if failed else None,
            "started_at": started_at, "restored_at": restored_at,
            "time_to_restore": (as_utc(restored_at) - as_utc(started_at)
                                if started_at and restored_at else None),
        },
        "proof": _proof(verified),
    }


def _proof(verified: AuditEvent | None) -> dict[str, Any] | None:
    if verified is None:
        return None
    d = verified.detail
    return {"prior_count": int(d.get("prior_count", 0)),
            "readback_count": int(d.get("readback_count", 0)),
            "equal": bool(d.get("equal")), "mismatched": list(d.get("mismatched") or []),
            "re_granted": d.get("re_granted"), "removed": d.get("removed"),
            "drift_outside": list(d.get("drift_outside") or []), "at": verified.at,
            "actor": verified.actor}


# --------------------------------------------------------------------------- render


def render_wave_report(database_url: str, wave: int, as_of: datetime | None = None) -> str:
    """The wave report as Markdown."""
    with session_scope(database_url) as s:
        context = wave_report_context(s, wave, as_of)
        return render_template("wave_report.md.j2", context, database_url)


def render_rollback_report(database_url: str, release_id: int) -> str:
    """The rollback report as Markdown; its last section is the read-back proof."""
    with session_scope(database_url) as s:
        context = rollback_report_context(s, release_id)
        return render_template("rollback_report.md.j2", context, database_url)


# --------------------------------------------------------------------------- dashboard

# Audit actions shown as release activity; batches and passing checks would drown the rest.
ACTIVITY_ACTIONS = ("state_changed", "plan_staged", "approval_requested", "approval_decided",
                    "approval_signed", "approval_refused", "gates_checked", "deployed",
                    "health_checked",
                    "legacy_retired", "rollback_started", "rollback_verified",
                    "package_contained", "catalog_loaded", "drill_recorded")
ACTIVITY_LIMIT = 8


def _activity(session: Session, as_of: datetime, limit: int = ACTIVITY_LIMIT,
              package_key: str | None = None) -> list[AuditEvent]:
    """The newest release events up to `as_of`, newest first; passing checks are left out."""
    q = (select(AuditEvent).where(col(AuditEvent.action).in_(ACTIVITY_ACTIONS),
                                  col(AuditEvent.at) <= as_of)
         .order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc()))
    if package_key is not None:
        q = q.where(AuditEvent.package_key == package_key)
    out: list[AuditEvent] = []
    offset, page = 0, 200
    # Page through: a long healthy watch leaves many passing checks to skip over.
    while len(out) < limit:
        batch = list(session.exec(q.offset(offset).limit(page)))
        out += [e for e in batch
                if not (e.action == "health_checked" and e.detail.get("verdict") == "passed")]
        if len(batch) < page:
            break
        offset += page
    return out[:limit]


def _latest_gates(session: Session) -> dict[int, AuditEvent]:
    """The last gates_checked event of every release."""
    out: dict[int, AuditEvent] = {}
    for e in _events(session, actions=["gates_checked"]):
        if e.release_id is not None:
            out[e.release_id] = e
    return out


def _open_at(opened: datetime, closed: datetime | None, as_of: datetime) -> bool:
    return as_utc(opened) <= as_utc(as_of) and (closed is None or as_utc(closed) > as_utc(as_of))


def operations_focus(session: Session, as_of: datetime) -> list[dict[str, Any]]:
    """What needs a person now, most urgent first: unproven rollbacks, held packages and their
    failed gates, contained packages, failed gates elsewhere, pending approvals, open
    maintenance tasks."""
    packages = {p.key: p for p in session.exec(select(RolePackage))}
    latest = _latest_release_ids(session)
    gates = _latest_gates(session)
    items: list[dict[str, Any]] = []

    for e in _events(session, actions=["rollback_verified"]):
        rid = e.release_id
        if not e.detail.get("equal") and rid is not None and latest.get(e.package_key or "") == rid:
            items.append({"kind": "rollback_unproven", "package": packages.get(e.package_key or ""),
                          "since": e.at, "reason": f"{len(e.detail.get('mismatched') or [])} "
                          "grant(s) differ from the prior bundle after rollback",
                          "gates": []})

    for key, pkg in sorted(packages.items()):
        rid = latest.get(key)
        event = gates.get(rid) if rid is not None else None
        failed = [g for g in (event.detail.get("results", []) if event else [])
                  if not g.get("passed")]
        if PackageState(pkg.state) == PackageState.HELD:
            items.append({"kind": "held", "package": pkg, "since": pkg.state_changed_at,
                          "reason": pkg.state_reason, "gates": failed})
        elif PackageState(pkg.state) == PackageState.CONTAINED:
            items.append({"kind": "contained", "package": pkg, "since": pkg.state_changed_at,
                          "reason": pkg.state_reason, "gates": []})
        elif failed and PackageState(pkg.state) not in (PackageState.ROLLED_BACK,
                                                         PackageState.STABLE):
            items.append({"kind": "gates", "package": pkg, "since": event.at if event else None,
                          "reason": "", "gates": failed})

    for a in session.exec(select(Approval).order_by(col(Approval.requested_at))):
        if not _open_at(a.requested_at, a.decided_at, as_of):
            continue
        overdue = a.deadline is not None and as_utc(a.deadline) < as_utc(as_of)
        items.append({"kind": "approval", "package": packages.get(a.package_key),
                      "since": a.requested_at, "deadline": a.deadline, "overdue": overdue,
                      "reason": f"waiting for {packages[a.package_key].owner_name}"
                      if a.package_key in packages else "", "gates": []})

    for t in session.exec(select(MaintenanceTask).order_by(col(MaintenanceTask.opened_at))):
        # Open as of `as_of`, the same rule as the Maintenance tasks KPI.
        if not _open_at(t.opened_at, t.closed_at, as_of):
            continue
        items.append({"kind": "maintenance", "package": packages.get(t.package_key or ""),
                      "since": t.opened_at, "reason": t.reason, "task_kind": t.kind,
                      "gates": []})
    return items


def _wave_label(pkg: RolePackage) -> str:
    if pkg.rollback_only:
        return "Fallback hold"
    if pkg.wave is None:
        return "Not scheduled"
    return f"Wave {pkg.wave}"


def package_detail(session: Session, pkg: RolePackage, row: Any, confidence: Any,
                   as_of: datetime) -> dict[str, Any]:
    """A package's detail panel: facts, latest release, watch charts, tasks and recent events."""
    release = session.exec(select(Release).where(Release.package_key == pkg.key)
                           .order_by(col(Release.id).desc())).first()
    charts: list[Chart] = []
    window = watch_window(release, pkg) if release else None
    if release and window and release.id is not None:
        marks: list[tuple[datetime, str, str]] = [(as_of, "now", "now")]
        if release.rolled_back_at:
            marks.append((release.rolled_back_at, "rollback", "rolled back"))
        charts = health_charts(_health_rows(session, release.id), *window, markers=marks)
    tasks = [t for t in session.exec(select(MaintenanceTask)
                                     .where(MaintenanceTask.package_key == pkg.key))
             if _open_at(t.opened_at, t.closed_at, as_of)]
    events = _activity(session, as_of, limit=5, package_key=pkg.key)
    return {"pkg": pkg, "row": row, "confidence": confidence, "release": release,
            "window": window, "charts": charts, "tasks": tasks, "events": events,
            "wave_label": _wave_label(pkg)}


def _lead(kpis: PortalKpis, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The lead rollout pack: the most confident unreleased package of the ready wave
    (release-ready ones first), else the most confident package whose action is Release."""
    ready = set(kpis.wave_ready.packages) if kpis.wave_ready else set()
    candidates = ([r for r in rows if r["row"].key in ready]
                  or [r for r in rows if r["row"].action == "Release"])
    if not candidates:
        return None
    best = max(candidates, key=lambda r: (r["row"].state == PackageState.RELEASE_READY.value,
                                          r["confidence"].score, r["row"].key))
    pkg: RolePackage = best["pkg"]
    handoff_ready = bool(pkg.owner_name.strip()) and (
        bool(pkg.owner_slack_id) or any(d.get("slack_id") for d in pkg.delegates or ()))
    drill = kpis.drills.get(pkg.key)
    return {**best, "handoff": "Ready" if handoff_ready else "Owner not reachable",
            "fallback": ("Drilled" if drill and drill.status == "drilled" else
                         "Signed drill" if drill and drill.status == "signed" else
                         "Defined" if pkg.fallback_plan.strip() else "Missing")}


def dashboard_context(session: Session, as_of: datetime, selected: str | None = None,
                      **kpi_options: Any) -> dict[str, Any]:
    """Everything the dashboard shows, read in one session. The figures come from
    compute_kpis (`kpi_options` go to it), the same source as `wavekit status`."""
    kpis = compute_kpis(session, as_of, **kpi_options)
    packages = {p.key: p for p in session.exec(select(RolePackage))}
    rows: list[dict[str, Any]] = [
        {"row": row, "pkg": packages[row.key], "wave_label": _wave_label(packages[row.key]),
         "confidence": row.confidence} for row in kpis.packages]
    lead = _lead(kpis, rows)
    chosen = selected if selected in packages else (lead["pkg"].key if lead else None)
    if selected and selected not in packages:
        raise KeyError(f"no role package {selected!r} in the store")
    details = [package_detail(session, r["pkg"], r["row"], r["confidence"], as_of)
               for r in rows]
    return {
        "generated_at": as_of, "kpis": kpis, "packages": rows, "lead": lead,
        "definitions": DEFINITIONS,
        "focus": operations_focus(session, as_of), "activity": _activity(session, as_of),
        "details": details,
        "selected": next((d for d in details if d["pkg"].key == chosen), None),
        "name_by_key": {k: p.name for k, p in packages.items()},
        "telemetry_live": any(PackageState(p.state) == PackageState.WATCHING
                              for p in packages.values()),
        # Decisions taken without proof of who decided (WAVEKIT_APPROVALS_UNVERIFIED).
        "unverified_approvals": len(session.exec(select(Approval.id).where(
            Approval.proof == "unverified")).all()),
        "store": None,
    }


def render_dashboard(database_url: str, as_of: datetime | None = None,
                     selected: str | None = None, *, review_cadence_days: int | None = None
                     ) -> str:
    """The readiness dashboard as one self-contained HTML page.

    The review cadence defaults to WAVEKIT_REVIEW_CADENCE_DAYS, as for `wavekit status`.
    """
    if review_cadence_days is None:
        review_cadence_days = load_settings().review_cadence_days
    with session_scope(database_url) as s:
        context = dashboard_context(s, as_utc(as_of or utcnow()), selected,
                                    review_cadence_days=review_cadence_days)
        context["store"] = masked_url(database_url)
        return render_template("dashboard.html.j2", context, database_url)


# --------------------------------------------------------------------------- files


def write_reports(database_url: str, out_dir: str | Path, as_of: datetime | None = None,
                  *, review_cadence_days: int | None = None) -> list[Path]:
    """Write dashboard.html, wave-N.md for each wave with releases, and a rollback report
    per rolled-back release; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    as_of = as_of or utcnow()
    written = [out / "dashboard.html"]
    written[0].write_text(render_dashboard(database_url, as_of,
                                           review_cadence_days=review_cadence_days),
                          encoding="utf-8")
    with session_scope(database_url) as s:
        waves = sorted({w for w in s.exec(select(Release.wave)) if w is not None})
        started = {e.release_id for e in _events(s, actions=["rollback_started"])}
        rollbacks = [r for r in s.exec(select(Release).order_by(col(Release.id)))
                     if r.rolled_back_at is not None or r.id in started]
    for wave in waves:
        path = out / f"wave-{wave}.md"
        path.write_text(render_wave_report(database_url, wave, as_of), encoding="utf-8")
        written.append(path)
    for release in rollbacks:
        assert release.id is not None
        path = _inside(out, rollback_filename(release))
        path.write_text(render_rollback_report(database_url, release.id), encoding="utf-8")
        written.append(path)
    written += _write_drill_reports(database_url, out, review_cadence_days)
    return written


def _write_drill_reports(database_url: str, out: Path, cadence_days: int | None) -> list[Path]:
    """drill-<package>-<id>.md for every finished rollback drill."""
    from wavekit.present.drill_report import drill_filename, drill_runs, render_drill_report

    with session_scope(database_url) as s:
        runs = drill_runs(s)
    paths = []
    for run in runs:
        assert run.id is not None
        path = _inside(out, drill_filename(run))
        path.write_text(render_drill_report(database_url, run.id, cadence_days),
                        encoding="utf-8")
        paths.append(path)
    return paths
