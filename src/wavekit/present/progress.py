"""What a release is doing, as lines a release manager reads while it runs.

The follower reads the audit log (the store is the truth, whichever process does the work)
and prints each package as it moves: staged with counts, waiting for its owner and how to
decide, deployed, watching, held with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich.console import Console
from sqlmodel import col, select

from wavekit.adapters.polling import polling
from wavekit.adapters.slack import flow_run_url
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, AuditEvent, RolePackage
from wavekit.domain.clock import as_utc
from wavekit.domain.states import PackageState


def decide_where(link: str | None, slack: bool) -> str:
    """Where an owner can decide, as this configuration makes true: the run's form exists only
    while a run waits on a reachable Prefect server (`link`), Slack only when configured."""
    if link:
        return f"in the run's form in the Prefect UI{' or in Slack' if slack else ''} · {link}"
    if slack:
        return "in Slack"
    return "nobody can decide it yet (no Slack, no run waiting on a Prefect server; see below)"


def describe(event: AuditEvent, ui_url: str | None = None, *, slack: bool = True
             ) -> str | None:
    """One line for an audit event worth showing during a release, else None. `ui_url` only
    when the package's run waits for its form on a Prefect server the owners can reach."""
    d: dict[str, Any] = event.detail or {}
    pkg = f"[bold]{event.package_key}[/bold]"
    if event.action == "plan_staged":
        resumed = " (resuming an interrupted deploy)" if d.get("resuming") else ""
        return (f"{pkg}: staged +{d.get('adds', 0)} grants, -{d.get('removes', 0)}, "
                f"{d.get('retirements', 0)} legacy to retire{resumed}")
    if event.action == "approval_requested":
        return None  # said from the approval itself (Follower.poll), once per run
    if event.action in ("approval_decided", "approval_timed_out"):
        who = d.get("approver") or event.actor
        what = "timed out" if event.action == "approval_timed_out" else d.get("decision")
        return f"{pkg}: handoff {what} ({who})"
    if event.action == "deployed":
        return (f"{pkg}: [green]deployed[/green] +{d.get('added', 0)} -{d.get('removed', 0)} "
                f"in {d.get('batches', 0)} batch(es)")
    if event.action == "legacy_retired":
        return f"{pkg}: retired {d.get('count', 0)} legacy grant(s)"
    if event.action == "rollback_started":
        return f"{pkg}: [red]rolling back[/red] — {d.get('reason', '')}"
    if event.action == "rollback_verified":
        proof = "equals" if d.get("equal") else "DIFFERS FROM"
        return (f"{pkg}: rolled back; the target read back ({d.get('readback_count')}) "
                f"{proof} the prior bundle ({d.get('prior_count')})")
    if event.action == "state_changed":
        to = d.get("to_state")
        if to == PackageState.HELD:
            return f"{pkg}: [red]held[/red] — {d.get('reason', '')}"
        if to == PackageState.CONTAINED:
            return f"{pkg}: [red]contained[/red] — {d.get('reason', '')}"
        if to == PackageState.WATCHING:
            return f"{pkg}: watching — {d.get('reason', '')}"
    return None


def waiting_line(package_key: str, owner: str, deadline: datetime | None, link: str | None,
                 slack: bool) -> str:
    """A package waits for its owner: who, until when, and where to decide."""
    by = f"{as_utc(deadline):%Y-%m-%d %H:%M}" if deadline else "the deadline"
    return (f"[bold]{package_key}[/bold]: [yellow]waiting for {owner}[/yellow] to decide by "
            f"{by} UTC — {decide_where(link, slack)}")


class Follower:
    """Prints new audit events of one wave's packages as they are written, and each open
    handoff once per run that waits for it (a re-run takes the open approval over, without a
    new event: the line and its link name the run that waits now)."""

    def __init__(self, console: Console, database_url: str, packages: list[str],
                 ui_url: str | None = None, slack: bool = True) -> None:
        self.console, self.database_url, self.ui_url = console, database_url, ui_url
        self.slack = slack
        self.packages = list(packages)
        with session_scope(database_url) as s:
            last = s.exec(select(AuditEvent.id).order_by(col(AuditEvent.id).desc())).first()
        self.last_id = last or 0
        self.announced = {(a.id, a.flow_run_id) for a, _ in self._open_approvals()}

    def _open_approvals(self) -> list[tuple[Approval, str]]:
        with session_scope(self.database_url) as s:
            rows = s.exec(select(Approval, RolePackage.owner_name)
                          .join(RolePackage, col(RolePackage.key) == col(Approval.package_key))
                          .where(col(Approval.package_key).in_(self.packages),
                                 col(Approval.decided_at).is_(None))
                          .order_by(col(Approval.id))).all()
            return [(a, owner) for a, owner in rows]

    def poll(self) -> int:
        """Print what happened since the last poll; returns how many lines were printed."""
        with session_scope(self.database_url) as s:
            rows = list(s.exec(select(AuditEvent)
                               .where(col(AuditEvent.id) > self.last_id,
                                      col(AuditEvent.package_key).in_(self.packages))
                               .order_by(col(AuditEvent.id))))
        printed = 0
        for event in rows:
            self.last_id = max(self.last_id, event.id or 0)
            if (line := describe(event, self.ui_url, slack=self.slack)) is not None:
                self.console.print(line)
                printed += 1
        for approval, owner in self._open_approvals():
            if (approval.id, approval.flow_run_id) in self.announced:
                continue
            self.announced.add((approval.id, approval.flow_run_id))
            link = (flow_run_url(self.ui_url, approval.flow_run_id)
                    if self.ui_url and approval.flow_run_id else None)
            self.console.print(waiting_line(approval.package_key, owner, approval.deadline,
                                            link, self.slack))
            printed += 1
        return printed


@contextmanager
def following(console: Console, database_url: str, packages: list[str],
              ui_url: str | None = None, interval: float = 0.5, *, slack: bool = True
              ) -> Iterator[Follower]:
    """Follow the packages in a background thread while the body runs, then catch up."""
    follower = Follower(console, database_url, packages, ui_url, slack)
    try:
        with polling(follower.poll, interval, "wavekit-progress"):
            yield follower
    finally:
        follower.poll()
