"""What a release is doing, as lines a release manager reads while it runs.

The follower reads the audit log (the store is the truth, whichever process does the work)
and prints each package as it moves: staged with counts, waiting for its owner and how to
decide, deployed, watching, held with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from sqlmodel import col, select

from wavekit.adapters.polling import polling
from wavekit.adapters.slack import flow_run_url
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import AuditEvent
from wavekit.domain.states import PackageState


def describe(event: AuditEvent, ui_url: str | None = None) -> str | None:
    """One line for an audit event worth showing during a release, else None."""
    d: dict[str, Any] = event.detail or {}
    pkg = f"[bold]{event.package_key}[/bold]"
    if event.action == "plan_staged":
        resumed = " (resuming an interrupted deploy)" if d.get("resuming") else ""
        return (f"{pkg}: staged +{d.get('adds', 0)} grants, -{d.get('removes', 0)}, "
                f"{d.get('retirements', 0)} legacy to retire{resumed}")
    if event.action == "approval_requested":
        link = (f" · {flow_run_url(ui_url, event.flow_run_id)}"
                if ui_url and event.flow_run_id else "")
        where = f"in Slack or the run's form in the Prefect UI{link}" if link else "in Slack"
        return (f"{pkg}: [yellow]waiting for {d.get('owner') or 'the owner'}[/yellow] to "
                f"decide by {str(d.get('deadline', ''))[:16]} UTC — {where}")
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


class Follower:
    """Prints new audit events of one wave's packages as they are written."""

    def __init__(self, console: Console, database_url: str, packages: list[str],
                 ui_url: str | None = None) -> None:
        self.console, self.database_url, self.ui_url = console, database_url, ui_url
        self.packages = list(packages)
        with session_scope(database_url) as s:
            last = s.exec(select(AuditEvent.id).order_by(col(AuditEvent.id).desc())).first()
        self.last_id = last or 0

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
            if (line := describe(event, self.ui_url)) is not None:
                self.console.print(line)
                printed += 1
        return printed


@contextmanager
def following(console: Console, database_url: str, packages: list[str],
              ui_url: str | None = None, interval: float = 0.5) -> Iterator[Follower]:
    """Follow the packages in a background thread while the body runs, then catch up."""
    follower = Follower(console, database_url, packages, ui_url)
    try:
        with polling(follower.poll, interval, "wavekit-progress"):
            yield follower
    finally:
        follower.poll()
