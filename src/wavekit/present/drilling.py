"""`wavekit drill PACKAGE`: run a rollback drill (the rollback-drill flow) or record a signed
manual one, and say what it proved and where the package's rollback_drill gate stands now."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from wavekit.workflow.drills import DrillOutcome

console = Console()
err_console = Console(stderr=True)


def _error(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def drill(
    ctx: typer.Context,
    package_key: str = typer.Argument(..., metavar="PACKAGE", help="Package key."),
    target_kind: str | None = typer.Option(
        None, "--target-kind", envvar="WAVEKIT_DRILL_TARGET", metavar="KIND",
        help="Drill target: sandbox (default: a sandbox copy of production's scope), scim or "
             "ldap (configured by WAVEKIT_DRILL_* variables). Never production."),
    objective_minutes: float | None = typer.Option(
        None, "--objective-minutes", metavar="MINUTES",
        help="Rollback objective: the drill fails if the restore takes longer (default 30)."),
    signed_by: str | None = typer.Option(
        None, "--signed-by", metavar="NAME",
        help="Record a manual drill someone rehearsed and signed, instead of running one."),
    note: str | None = typer.Option(None, "--note", metavar="TEXT",
                                    help="With --signed-by: what was rehearsed."),
    actor: str | None = typer.Option(None, "--as", metavar="WHO",
                                     help="Who runs (or records) it (default: your OS user)."),
    database_url: str | None = typer.Option(
        None, "--database-url", envvar="WAVEKIT_DATABASE_URL", metavar="URL",
        help="Store URL (default: SQLite file in WAVEKIT_DATA_DIR)."),
    target: str | None = typer.Option(None, "--target", envvar="WAVEKIT_TARGET",
                                      metavar="KIND",
                                      help="Production target: read, never written."),
) -> None:
    """Prove a package's fallback: deploy it to a drill target, force its rollback, read back
    and time it against the rollback objective; production is never written. Or record a
    signed manual drill. Exit 1 when the drill fails.

    Example: wavekit drill service-desk-resolver --objective-minutes 30
    Example: wavekit drill service-desk-resolver --signed-by "Owen Scott" --note "tabletop"
    """
    from wavekit import project
    from wavekit.adapters.settings import load_settings
    from wavekit.adapters.targets.drill import DrillTargetRefused
    from wavekit.present.quiet import quiet_prefect
    from wavekit.present.releasing import os_user
    from wavekit.workflow import drills
    from wavekit.workflow.runtime import build_runtime, runtime_override

    # As every command: closed when the command ends, and the flow run in-process is wired
    # with the same --database-url and --target.
    settings = load_settings(database_url=database_url, target=target)
    rt = ctx.with_resource(build_runtime(settings))
    ctx.with_resource(runtime_override(lambda: build_runtime(settings)))
    who = actor or os_user()
    if signed_by is not None or note is not None:
        if not (signed_by and signed_by.strip() and note and note.strip()):
            _error("a manual drill needs both --signed-by NAME and --note TEXT")
        if objective_minutes is not None:
            _error("--objective-minutes applies to a drill wavekit runs, not a signed one")
        try:
            outcome = drills.record_manual_drill(rt, package_key, signed_by=signed_by or "",
                                                 note=note or "", actor=who)
        except drills.UnknownPackage as exc:
            _error(str(exc))
            return
        console.print(f"[green]✓ recorded[/green] a manual rollback drill of {package_key} "
                      f"signed by {outcome.signed_by} (drill {outcome.drill_id})")
        _print_gate(outcome)
        return
    objective = 30.0 if objective_minutes is None else objective_minutes
    if objective <= 0:
        _error("--objective-minutes must be more than 0")
    try:
        drills.drill_gate(rt, package_key)  # the package exists
    except KeyError:
        _error(f"no package {package_key!r} in the catalog (see `wavekit status`)")
    try:
        probe, owned = drills.open_drill_target(rt, package_key, target_kind)
    except (DrillTargetRefused, ValueError) as exc:
        _error(str(exc))
        return
    if owned:
        probe.close()
    quiet_prefect()
    state = project.flow("rollback_drill")(package_key, objective_minutes=objective,
                                           target_kind=target_kind, actor=who,
                                           return_state=True)
    drill_id = drills.latest_drill_id(rt, package_key)
    if drill_id is None:
        _error(f"the drill run ended without recording a drill: {state.message}")
        return
    outcome = drills.drill_outcome(rt, drill_id)
    print_outcome(console, outcome)
    if not outcome.passed:
        raise typer.Exit(1)


def print_outcome(out: Console, o: DrillOutcome) -> None:
    """The drill as a two-column table, then where the gate stands."""
    from wavekit.domain.drills import fmt_minutes, fmt_seconds

    table = Table(title=f"Rollback drill {o.drill_id} · {o.package_key}", title_justify="left",
                  show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("drill target", o.target)
    table.add_row("deployed", f"+{o.adds} -{o.removes}, {o.retirements} legacy retired")
    table.add_row("rolled back", f"{o.re_granted} re-granted, {o.withdrawn} withdrawn")
    table.add_row("read back", f"{o.readback_count} grants, prior bundle {o.prior_count}"
                  + (f", {o.mismatches} mismatched" if o.mismatches else ""))
    table.add_row("time to restore", f"{fmt_seconds(o.duration_seconds)} (objective "
                  f"{fmt_minutes(o.objective_minutes)})")
    table.add_row("result", "[green]passed[/green]" if o.passed
                  else f"[red]FAILED[/red]: {o.failure}")
    out.print(table)
    _print_gate(o, out)


def _print_gate(o: DrillOutcome, out: Console = console) -> None:
    mark = "[green]passes[/green]" if o.gate.passed else "[red]fails[/red]"
    out.print(f"gate rollback_drill {mark}: {o.gate.reason}")
