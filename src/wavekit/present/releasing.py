"""`wavekit release` as a release manager sees it: where the wave runs, what it is doing, and
what to do next. The flows do the work; this module chooses where and narrates it.
"""

from __future__ import annotations

import contextvars
import getpass
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar, cast

import httpx
from rich.console import Console
from rich.table import Table

from wavekit import project
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import RolePackage
from wavekit.domain.states import PackageState
from wavekit.present.progress import following
from wavekit.present.quiet import quiet_prefect
from wavekit.workflow.runtime import Runtime

S = PackageState
T = TypeVar("T")
RELEASE_DEPLOYMENT = "release-wave/release-wave"
# A package run has done what it can without a person once it is final or waits (suspended).
_SETTLED = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED", "PAUSED"})


def wave_run_tag(wave_run_id: str) -> str:
    """The tag a wave run puts on the package runs it starts: they are top-level runs (a
    subflow cannot suspend), so no parent link finds them; this tag does."""
    return f"wave-run:{wave_run_id}"


def os_user() -> str:
    """Who is at the keyboard, when --as is not given."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def install_interrupt_handler(console: Console, wave: int | None) -> None:
    """Ctrl-C or SIGTERM: one line and out within a second, leaving the store resumable.

    Every stage is keyed in the store and every store write is one transaction, so leaving
    at any instant loses nothing; a deploy cut mid-batch resumes from the frozen plan. The
    process exits at once instead of unwinding Prefect's engine (which printed hundreds of
    lines of tracebacks and kept a paused run alive for minutes).
    """
    again = f"wavekit release --wave {wave}" if wave is not None else "the same command"

    def stop(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        console.print(f"\n[yellow]{name}: stopped.[/yellow] Nothing is lost; run `{again}` to "
                      "resume where it stopped.")
        console.file.flush()
        os._exit(130 if signum == signal.SIGINT else 143)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def off_main_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn` (a flow) in a worker thread, with this context, and wait for it.

    A flow run in the main thread swaps SIGTERM for Prefect's handler, which unwinds the
    engine and waits for every paused package thread: `kill` then did nothing for as long as
    owners took. Off the main thread Prefect installs no handler, and the main thread keeps
    the one line and the prompt exit of `install_interrupt_handler`.
    """
    done: dict[str, Any] = {}
    context = contextvars.copy_context()  # the runtime override and Prefect's settings

    def call() -> None:
        try:
            done["result"] = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread, as if called there
            done["error"] = exc

    worker = threading.Thread(target=call, name="wavekit-flow", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.2)  # short waits: a signal's handler runs between them
    if "error" in done:
        raise done["error"]
    return cast(T, done["result"])


def prefect_server() -> str | None:
    """The configured Prefect API URL, or None when runs would use an embedded server."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def reachable(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def served_deployment(name: str) -> bool:
    """Whether the Prefect server knows the deployment (served or deployed)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def states(database_url: str, keys: list[str]) -> dict[str, tuple[PackageState, str]]:
    with session_scope(database_url) as s:
        rows = [s.get(RolePackage, k) for k in keys]
        return {p.key: (S(p.state), p.state_reason) for p in rows if p is not None}


def release(console: Console, rt: Runtime, wave: int, keys: list[str], who: str, *,
            packages: list[str] | None, wait: bool) -> None:
    """Run or trigger the wave, narrate it, and end with what each package needs next."""
    api = prefect_server()
    ui = rt.settings.ui_url(api)
    slack = rt.notifier is not None
    if api and not reachable(api):
        console.print(f"[red]error:[/red] the Prefect server at {api} does not answer. Start "
                      "it (`prefect server start`) or unset PREFECT_API_URL to run the wave "
                      "here.", soft_wrap=True)  # one line, however narrow the terminal
        raise SystemExit(1)
    if wait and not api:
        # Waiting on an embedded server is waiting on a form nobody can open.
        console.print("[red]error:[/red] --wait needs a Prefect server the owners can reach: "
                      "set PREFECT_API_URL (`prefect server start`), or leave --wait out.",
                      soft_wrap=True)
        raise SystemExit(1)
    quiet_prefect()
    params: dict[str, Any] = {"wave": wave, "packages": packages, "requested_by": who}
    if api and served_deployment(RELEASE_DEPLOYMENT):
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment

        run = run_deployment(RELEASE_DEPLOYMENT, parameters=params, timeout=0)
        assert isinstance(run, FlowRun)  # sync context: Prefect's dual API returned the run
        console.print(f"Wave {wave} started on the Prefect server as run [bold]{run.name}"
                      f"[/bold] ({ui}/runs/flow-run/{run.id}); following it here. Ctrl-C "
                      "stops following, not the wave.")
        if wait:
            console.print("(--wait is not needed: on the server each package run waits for "
                          "its owner by itself.)")
        with following(console, rt.database_url, keys, ui, slack=slack):
            _until_settled(str(run.id), len(keys))
        how = Deciding(form=True, resumes=True, slack=slack, server=True,
                       unverified=rt.settings.approvals_unverified)
    else:
        where = f"the Prefect server at {api}" if api else "an embedded Prefect server"
        console.print(f"Releasing wave {wave} here, on {where}"
                      + ("" if api else " (no one else can reach it: decisions are kept in "
                         "the store and a re-run continues)") + ".")
        # Only a paused run (--wait on a reachable server) has a form to decide in.
        with following(console, rt.database_url, keys, ui if wait else None, slack=slack):
            off_main_thread(project.flow("release_wave"), **params, wait_for_owners=wait)
        how = Deciding(form=wait, resumes=wait, slack=slack, server=bool(api),
                       unverified=rt.settings.approvals_unverified)
    print_outcome(console, rt.database_url, wave, keys, how)


@dataclass(frozen=True)
class Deciding:
    """How the owners of this release can decide, as its configuration makes true."""

    form: bool  # a run waits for its form on a Prefect server the owners can reach
    resumes: bool  # the decision resumes that run (nothing to re-run)
    slack: bool  # Slack is configured
    server: bool  # a Prefect server was used at all
    unverified: bool  # local mode: the form takes no one-time code

    def advice(self, wave: int) -> list[str]:
        again = f"run `wavekit release --wave {wave}` again"
        if self.form:
            channels = "in its run's form in the Prefect UI (links above)" + (
                " or in Slack" if self.slack else "")
            then = ("the decision resumes the run by itself" if self.resumes
                    else f"if this command was stopped first, {again}")
            code = ("Local mode: the form takes no one-time code; the decision is recorded "
                    "as unverified." if self.unverified else
                    "The form asks each approver for the one-time code wavekit sent them.")
            return [f"Each owner decides {channels}; {then}. Decisions are kept.", code]
        if self.slack:
            return [f"Each owner decides in Slack; once they have, {again} to continue. "
                    "Decisions are kept."]
        fix = ("serve wavekit on it (`wavekit serve`), or add --wait to keep this process "
               "waiting" if self.server else
               "start a Prefect server (`prefect server start`), serve wavekit on it "
               "(`wavekit serve`) and set PREFECT_API_URL")
        return ["Nobody can decide these yet: Slack is not configured and no run waits on "
                f"a Prefect server. Configure Slack (WAVEKIT_SLACK_*), or {fix}; then {again}. "
                "What is staged is kept."]


def _until_settled(run_id: str, packages: int, poll: float = 1.0,
                   timeout: float = 3600.0) -> None:
    """Follow until the wave run is final and each of its package runs is final or waits."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    children = FlowRunFilter(tags=FlowRunFilterTags(all_=[wave_run_tag(run_id)]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            wave_run = client.read_flow_run(UUID(run_id))
            if wave_run.state is not None and wave_run.state.is_final():
                runs = client.read_flow_runs(flow_run_filter=children)
                if len(runs) >= packages and all(
                        r.state is not None and r.state.type.value in _SETTLED for r in runs):
                    return
                if wave_run.state.is_failed() or wave_run.state.is_crashed():
                    return
            time.sleep(poll)


def print_outcome(console: Console, database_url: str, wave: int, keys: list[str],
                  how: Deciding) -> None:
    """Where each package stands, and the one thing to do next when it waits for someone."""
    now = states(database_url, keys)
    table = Table("package", "state", "reason", title=f"Wave {wave}", title_justify="left")
    for key in keys:
        state, reason = now[key]
        style = {S.HELD: "red", S.ROLLED_BACK: "red", S.AWAITING_HANDOFF: "yellow"}.get(state)
        label = f"[{style}]{state.label}[/{style}]" if style else state.label
        table.add_row(key, label, reason)
    console.print(table)
    waiting = [k for k in keys if now[k][0] == S.AWAITING_HANDOFF]
    if waiting:
        console.print(f"{len(waiting)} package(s) wait for their owners.")
        for line in how.advice(wave):
            console.print(line)
