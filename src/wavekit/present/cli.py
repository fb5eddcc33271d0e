"""The wavekit command line: a thin layer over the library. Every command has an example."""

from __future__ import annotations

import sys
from datetime import datetime

from wavekit.present.quiet import quiet_prefect

# Before anything imports Prefect: `wavekit serve` keeps run logs (the UI's Logs tab shows
# them); every other command keeps the terminal to what wavekit itself says.
quiet_prefect(terminal=sys.argv[1:2] != ["serve"])

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from wavekit import project
from wavekit.adapters import catalog as catalog_mod
from wavekit.adapters.settings import SettingsInvalid, default_data_dir, load_settings, masked_url
from wavekit.adapters.store import schema
from wavekit.adapters.store.engine import get_engine, raw_engine, session_scope
from wavekit.examples import EXAMPLE_CATALOG, SANDBOX_SEED, seed_target
from wavekit.present.views import print_maintenance_summary
from wavekit.workflow.leases import LeaseHeld
from wavekit.workflow.runtime import Runtime, build_runtime, runtime_override

if TYPE_CHECKING:  # an annotation only: the commands import telemetry where they use it
    from wavekit.adapters.telemetry import TelemetryInvalid


class _Commands(TyperGroup):
    """Every command: a store wavekit cannot use (StoreNotReady), or a wave or package another
    run holds (LeaseHeld), is one line and exit 1."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context
        try:
            return super().invoke(ctx)
        except schema.StoreNotReady as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        except LeaseHeld as exc:  # another run writes the wave or package: name it, stop
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(help="Release IAM role packages to production in gated, watched, reversible "
                       "waves on Prefect.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, cls=_Commands)
catalog_app = typer.Typer(help="Check catalogs.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
audit_app = typer.Typer(help="Check and export the tamper-evident audit log.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")
db_app = typer.Typer(help="The store's schema: Alembic migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()
err_console = Console(stderr=True)

DbOption = typer.Option(None, "--database-url", envvar="WAVEKIT_DATABASE_URL", metavar="URL",
                        help="Store URL (default: SQLite file in WAVEKIT_DATA_DIR).")
TargetOption = typer.Option(None, "--target", envvar="WAVEKIT_TARGET", metavar="KIND",
                            help="sandbox (default), scim or ldap.")
WaveOption = typer.Option(..., "--wave", metavar="N", help="Wave number.")


def _error(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit: no traceback reaches a user."""
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _wave_packages(database_url: str, wave: int, only: list[str] | None) -> list[str]:
    """The keys a release of `wave` takes up; an empty or unknown selection is an error."""
    from wavekit.adapters.store.waves import UnknownPackages, plan_wave_order

    try:
        keys = list(plan_wave_order(database_url, wave, only or None))
    except UnknownPackages as exc:
        _error(str(exc))
    if not keys:
        _error(f"wave {wave} has no packages (see `wavekit status`)")
    return keys


def _runtime(ctx: typer.Context, database_url: str | None, target: str | None = None
             ) -> Runtime:
    """The command's runtime, closed when the command ends; flows the command runs in-process
    are wired the same way (the --database-url and --target given here, not only the
    environment's)."""
    settings = load_settings(database_url=database_url, target=target)
    rt = ctx.with_resource(build_runtime(settings))
    ctx.with_resource(runtime_override(lambda: build_runtime(settings)))
    return rt


def _check_store(database_url: str | None = None) -> None:
    """Before serving: the store the flow runs will open must be usable (an empty one is
    created), or the command stops with one line."""
    get_engine(load_settings(database_url=database_url).resolved_database_url())


def _fail_invalid(exc: catalog_mod.CatalogInvalid | TelemetryInvalid) -> None:
    console.print(f"[red]✗ {len(exc.problems)} problem(s); nothing was written[/red]")
    table = Table("file", "line", "field", "problem")
    for p in exc.problems:  # catalog text is not Rich markup: keep "packages[key]" as written
        table.add_row(escape(p.file), str(p.line or ""), escape(p.field), escape(p.message))
    console.print(table)
    raise typer.Exit(1)


@catalog_app.command("validate")
def catalog_validate(path: Path = typer.Argument(..., help="Catalog directory.")) -> None:
    """Check a catalog and list every problem with file, line and field.

    Example: wavekit catalog validate ./catalog
    """
    try:
        cat = catalog_mod.load_catalog(path)
    except catalog_mod.CatalogInvalid as exc:
        _fail_invalid(exc)
        return
    console.print(f"[green]✓ valid:[/green] {len(cat.packages)} packages, "
                  f"{len(cat.identities)} identities, {len(cat.entitlements)} entitlements")


class ExportFormat(StrEnum):
    jsonl = "jsonl"


def _store_url(database_url: str | None) -> str:
    return load_settings(database_url=database_url).resolved_database_url()


def _fail_store(url: str, exc: Exception) -> NoReturn:
    """One line, no traceback, no password."""
    from sqlalchemy.engine import make_url

    reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["unknown error"])[0]
    shown = make_url(url).render_as_string(hide_password=True)
    typer.echo(f"cannot read the audit log in {shown}: {reason}", err=True)
    raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(database_url: str | None = DbOption,
                 expect_head: str | None = typer.Option(
                     None, "--expect-head", metavar="HASH",
                     help="A head hash printed earlier (or its first 12+ hex characters): "
                          "fail if the chain no longer contains it (a cut-off tail)."),
                 against_report: Path | None = typer.Option(
                     None, "--against-report", exists=True, dir_okay=False, metavar="FILE",
                     help="Take --expect-head from a report's 'audit chain head' line.")
                 ) -> None:
    """Check the audit log's hash chain; exit 1 naming the first bad event.

    Prints one line: the chain is intact (events, head), or the first event that was edited,
    deleted, inserted or reordered, or that the expected head was cut off.

    Example: wavekit audit verify --against-report out/wave-1.md
    """
    from sqlalchemy.exc import SQLAlchemyError

    from wavekit.adapters.store import audit

    if expect_head and against_report:
        raise typer.BadParameter("give --expect-head or --against-report, not both")
    if against_report is not None:
        found = audit.head_from_text(against_report.read_text(encoding="utf-8",
                                                              errors="replace"))
        if found is None:
            typer.echo(f"no 'audit chain head' line in {against_report}")
            raise typer.Exit(1)
        expect_head = found.hash
    if expect_head:
        try:
            audit.normalise_head(expect_head)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--expect-head") from None
    url = _store_url(database_url)
    try:
        with session_scope(url) as s:
            report = audit.verify_chain(s, expect_head=expect_head)
    except SQLAlchemyError as exc:
        _fail_store(url, exc)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(fmt: ExportFormat = typer.Option(
                     ExportFormat.jsonl, "--format",
                     help="jsonl: one JSON object per event, in chain order."),
                 out: Path | None = typer.Option(
                     None, "--out", dir_okay=False, metavar="FILE",
                     help="File to write (default: standard output)."),
                 database_url: str | None = DbOption) -> None:
    """Export the audit log with its chain fields (seq, prev_hash, hash), streamed.

    Example: wavekit audit export --format jsonl --out audit.jsonl
    """
    from sqlalchemy.exc import SQLAlchemyError

    from wavekit.adapters.store import audit

    url = _store_url(database_url)
    part = out.with_name(out.name + ".part") if out else None
    try:
        with session_scope(url) as s:
            if part is None:
                audit.export_jsonl(s, sys.stdout)
                return
            with part.open("w", encoding="utf-8", newline="\n") as fh:
                count = audit.export_jsonl(s, fh)
    except SQLAlchemyError as exc:
        if part is not None:
            part.unlink(missing_ok=True)
        _fail_store(url, exc)
    assert out is not None and part is not None
    part.replace(out)  # a failed export leaves no half-written file behind
    typer.echo(f"wrote {count} events to {out}", err=True)


@app.command("load")
def load(ctx: typer.Context,
         path: Path = typer.Argument(..., metavar="DIR", help="Catalog directory."),
         database_url: str | None = DbOption, target: str | None = TargetOption) -> None:
    """Validate a catalog and write it to the store in one transaction; on the sandbox target,
    also give it the catalog's starting grants (sandbox_seed.csv).

    Example: wavekit load ./catalog
    """
    rt = _runtime(ctx, database_url, target)
    try:
        cat = catalog_mod.load_catalog(path)
    except catalog_mod.CatalogInvalid as exc:
        _fail_invalid(exc)
        return
    with session_scope(rt.database_url) as s:
        counts = catalog_mod.write_catalog(s, cat, source=str(path))
    console.print("[green]✓ loaded[/green] " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    seed = path / SANDBOX_SEED.name
    if rt.target.name.startswith("sandbox") and seed.is_file():
        # The access people hold before wavekit runs: what plans diff against and what every
        # rollback proof restores. Real targets already hold theirs.
        seeded = seed_target(rt.target, seed)
        console.print(f"[green]✓ sandbox[/green] holds the {seeded.added + seeded.unchanged} "
                      f"starting grants of {seed.name}")


@app.command("plan")
def plan(ctx: typer.Context, wave: int = WaveOption,
         database_url: str | None = DbOption, target: str | None = TargetOption) -> None:
    """Show what a wave would change on the target, package by package; writes nothing.

    Example: wavekit plan --wave 1
    """
    from wavekit.present.views import print_wave_plan

    rt = _runtime(ctx, database_url, target)
    print_wave_plan(console, rt, wave)


@app.command("status")
def status(ctx: typer.Context, database_url: str | None = DbOption,
           explain: bool = typer.Option(False, "--explain",
                                        help="Also say what every figure means.")) -> None:
    """Show the KPIs and the packages by wave and state.

    Example: wavekit status --explain
    """
    from wavekit.present.views import print_definitions, print_status

    rt = _runtime(ctx, database_url)
    print_status(console, rt.database_url, review_cadence_days=rt.settings.review_cadence_days)
    if explain:
        print_definitions(console)


@app.command("release")
def release(ctx: typer.Context, wave: int = WaveOption,
            package: list[str] = typer.Option(None, "--package", metavar="KEY",
                                              help="Only these packages (repeatable)."),
            dry_run: bool = typer.Option(False, "--dry-run",
                                         help="Plan and gate only; write nothing."),
            requested_by: str | None = typer.Option(
                None, "--as", metavar="WHO",
                help="Who requests the wave (Slack id or name; default: your OS user)."),
            wait: bool = typer.Option(
                False, "--wait", help="When the wave runs here: keep this process waiting "
                "for the owners, who decide in the run's form (needs PREFECT_API_URL: a "
                "Prefect server they can reach)."),
            database_url: str | None = DbOption, target: str | None = TargetOption) -> None:
    """Release a wave: stage every package, hand each to its owner, deploy what is approved.

    With a Prefect server that serves wavekit's deployments (PREFECT_API_URL), the wave runs
    there and this command follows it; otherwise it runs here, asks the owners, and tells you
    how to continue once they have decided. Re-running the same wave resumes it.

    Example: wavekit release --wave 1 --as U0RELMGR1
    """
    from wavekit.present import releasing

    rt = _runtime(ctx, database_url, target)
    keys = _wave_packages(rt.database_url, wave, package)
    who = requested_by or releasing.os_user()
    releasing.install_interrupt_handler(console, wave)
    if dry_run:
        quiet_prefect()
        result = releasing.off_main_thread(project.flow("release_wave"), wave=wave,
                                           dry_run=True, packages=package or None,
                                           requested_by=who)
        console.print(f"Dry run of wave {wave}: nothing was written.")
        for key in result:
            console.print(f"  {key}")
        return
    releasing.release(console, rt, wave, keys, who, packages=package or None, wait=wait)


@app.command("rollback")
def rollback(ctx: typer.Context,
             package_key: str = typer.Argument(..., metavar="PACKAGE", help="Package key."),
             reason: str = typer.Option("manual rollback by a release manager", "--reason",
                                        metavar="TEXT", help="Why (recorded and notified)."),
             actor: str | None = typer.Option(None, "--as", metavar="WHO",
                                              help="Who rolls back (default: your OS user)."),
             database_url: str | None = DbOption, target: str | None = TargetOption) -> None:
    """Roll a package back to its prior bundle and print the read-back proof.

    Example: wavekit rollback hr-case-intake-specialist --reason "ticket spike"
    """
    from wavekit.present import releasing
    from wavekit.workflow.rollback import NothingToRollBack, find_release

    rt = _runtime(ctx, database_url, target)
    try:
        find_release(rt, package_key)
    except NothingToRollBack as exc:
        _error(str(exc))
    releasing.install_interrupt_handler(console, None)
    quiet_prefect()
    result = releasing.off_main_thread(project.flow("rollback_package"), package_key, reason,
                                       actor=actor or releasing.os_user())
    table = Table("package", "release", "prior bundle", "target read back", "proof",
                  title="Rollback", title_justify="left")
    table.add_row(package_key, str(result["release_id"]), str(result["prior"]),
                  str(result["readback"]),
                  "[green]equal[/green]" if result["equal"] else "[red]DIFFERS[/red]")
    console.print(table)
    if not result["equal"]:
        raise typer.Exit(1)


@app.command("watch")
def watch(ctx: typer.Context,
          database_url: str | None = DbOption, target: str | None = TargetOption) -> None:
    """Take the health measurements that are due now (what the watch-packages schedule runs).

    Example: wavekit watch
    """
    _runtime(ctx, database_url, target)
    quiet_prefect()
    rows = project.flow("watch_packages")()
    if not rows:
        console.print("Nothing due: no watched package has a health check owed now.")
        return
    table = Table("package", "outcome", "checks measured", "reason", title="Watch",
                  title_justify="left")
    for row in rows:
        table.add_row(row["package"], row["action"], str(row["measured"]), row["reason"])
    console.print(table)


@app.command("maintenance")
def maintenance(ctx: typer.Context,
                report_dir: Path | None = typer.Option(None, "--reports", metavar="DIR",
                                                       help="Where reports go."),
                database_url: str | None = DbOption, target: str | None = TargetOption
                ) -> None:
    """Run the nightly maintenance flow now.

    Example: wavekit maintenance --reports ./out
    """
    _runtime(ctx, database_url, target)
    quiet_prefect()
    summary = project.flow("nightly_maintenance")(
        report_dir=str(report_dir) if report_dir else None)
    print_maintenance_summary(console, summary)


@app.command("telemetry")
def telemetry(ctx: typer.Context,
              paths: list[Path] = typer.Argument(..., help="CSV or JSON telemetry files."),
              database_url: str | None = DbOption) -> None:
    """Validate and load telemetry files (all or nothing); see docs/telemetry.md.

    Example: wavekit telemetry usage.csv tickets.csv
    """
    from wavekit.adapters.telemetry import TelemetryInvalid, ingest_telemetry

    rt = _runtime(ctx, database_url)
    try:
        counts = ingest_telemetry(rt.database_url, paths)
    except TelemetryInvalid as exc:
        _fail_invalid(exc)
        return
    console.print("[green]✓ loaded[/green] " + ", ".join(f"{v} {k}" for k, v in counts.items()))


WHEN_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def _setting(text: str) -> tuple[str, str, Any]:
    """CHECK.SETTING=VALUE -> (check, setting, value); the value is read as JSON when it can
    be (3, 0.5, false), else kept as text, and checked later as the catalog checks it."""
    import json

    name, eq, raw = text.partition("=")
    check, dot, setting = name.strip().partition(".")
    if not eq or not dot or not check or not setting:
        _error(f"--set {text!r}: write CHECK.SETTING=VALUE, e.g. ticket_noise.threshold=3")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw.strip()
    return check, setting.strip(), value


@app.command("replay")
def replay(ctx: typer.Context,
           package_key: str = typer.Argument(..., metavar="PACKAGE", help="Package key."),
           telemetry_dir: Path | None = typer.Option(
               None, "--telemetry", metavar="DIR",
               help="Recorded telemetry files (default: the store's telemetry)."),
           start: datetime | None = typer.Option(
               None, "--from", metavar="WHEN", formats=WHEN_FORMATS,
               help="Deployed at, UTC unless an offset is given (default: the first day "
               "with a 28-day baseline)."),
           end: datetime | None = typer.Option(None, "--to", metavar="WHEN",
                                               formats=WHEN_FORMATS,
                                               help="Replay up to (default: end of the watch)."),
           settings: list[str] = typer.Option(
               None, "--set", metavar="CHECK.SETTING=VALUE",
               help="Try another health setting (repeatable): ticket_noise.threshold=3."),
           out: Path | None = typer.Option(None, "--report", metavar="FILE",
                                           help="Also write the Markdown report here."),
           database_url: str | None = DbOption) -> None:
    """Replay a package's health checks over recorded telemetry, as if deployed on a day:
    what each check would have said, and whether the watch would have rolled it back. No
    target is touched and nothing is written (but the report, if asked).

    Example: wavekit replay hr-case-intake-specialist --set ticket_noise.threshold=3
    """
    from wavekit.adapters.telemetry import TelemetryInvalid
    from wavekit.present.replay_report import MARKS, render_replay_report
    from wavekit.workflow.replay import ReplayRefused
    from wavekit.workflow.replay import replay as run_replay

    overrides: dict[str, dict[str, Any]] = {}
    for text in settings or []:
        check, setting, value = _setting(text)
        overrides.setdefault(check, {})[setting] = value
    rt = _runtime(ctx, database_url)
    try:
        result = run_replay(rt, package_key, telemetry_dir=telemetry_dir, deployed_at=start,
                            until=end, settings=overrides)
    except TelemetryInvalid as exc:
        _fail_invalid(exc)
        return
    except ReplayRefused as exc:
        _error(str(exc))
    table = Table("day", "date", *[c.name for c in result.checks],
                  title=f"Replay of {package_key} from {result.deployed_at:%Y-%m-%d %H:%M} UTC",
                  title_justify="left")
    first = result.deployed_at.date()
    for day, verdicts in result.days():
        table.add_row(str((day - first).days + 1), day.isoformat(),
                      *[MARKS[verdicts[c.name]] if c.name in verdicts else "·"
                        for c in result.checks])
    console.print(table)
    when = f" at {result.decided_at:%Y-%m-%d %H:%M} UTC" if result.decided_at else ""
    console.print(f"[bold]{result.outcome}[/bold]{when}: {escape(result.reason)}")
    if result.failing_checks:
        console.print("failed at least once: " + ", ".join(result.failing_checks))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_replay_report(result, rt.database_url), encoding="utf-8")
        console.print(f"wrote {out}")


@app.command("report")
def report(ctx: typer.Context, out: Path = typer.Option(Path("out"), "--out", metavar="DIR",
                                    help="Directory to write into."),
           database_url: str | None = DbOption) -> None:
    """Write the readiness dashboard, wave reports and rollback reports.

    Example: wavekit report --out ./out
    """
    from wavekit.present.reports import write_reports

    rt = _runtime(ctx, database_url)
    for path in write_reports(rt.database_url, out,
                              review_cadence_days=rt.settings.review_cadence_days):
        console.print(f"wrote {path}")


@app.command("serve")
def serve(no_schedules: bool = typer.Option(False, "--no-schedules",
                                            help="Serve without the cron/interval schedules."),
          database_url: str | None = DbOption) -> None:
    """Serve prefect.yaml's deployments to a Prefect server (PREFECT_API_URL).

    Example: PREFECT_API_URL=http://127.0.0.1:4200/api wavekit serve
    """
    import os

    _check_store(database_url)
    if database_url:
        # Each served run is a process of its own that wires its store from the environment.
        os.environ["WAVEKIT_DATABASE_URL"] = database_url
    quiet_prefect(terminal=False)
    from wavekit.present.serving import serve_all

    serve_all(schedules=not no_schedules)


@app.command("slack-receiver")
def slack_receiver(ctx: typer.Context, host: str = typer.Option("127.0.0.1", metavar="HOST",
                                            help="Address to listen on."),
                   port: int = typer.Option(3000, metavar="PORT", help="Port to listen on."),
                   socket: bool = typer.Option(False, "--socket",
                                               help="Use Socket Mode (no public URL)."),
                   database_url: str | None = DbOption) -> None:
    """Receive Slack button clicks and resume the paused wave (HTTP or Socket Mode).

    Example: WAVEKIT_SLACK_SIGNING_SECRET=... wavekit slack-receiver --port 3000
    """
    from wavekit.adapters.slack import run_receiver, run_socket_mode
    from wavekit.adapters.slack.config import configured_slack

    rt = _runtime(ctx, database_url)
    app_ = configured_slack()
    if app_ is None:
        console.print("[red]Slack is not configured: set WAVEKIT_SLACK_BOT_TOKEN and "
                      "WAVEKIT_SLACK_SIGNING_SECRET, or WAVEKIT_SLACK_BLOCK[/red]")
        raise typer.Exit(1)
    if socket:
        if app_.app_token is None:
            console.print("[red]Socket Mode needs WAVEKIT_SLACK_APP_TOKEN[/red]")
            raise typer.Exit(1)
        run_socket_mode(app_.app_token.get_secret_value(), database_url=rt.database_url,
                        web_client=app_.web_client(), ui_url=rt.settings.ui_url())
        return
    run_receiver(host, port, database_url=rt.database_url,
                 signing_secret=app_.signing_secret.get_secret_value(),
                 web_client=app_.web_client(), ui_url=rt.settings.ui_url())


@db_app.command("upgrade")
def db_upgrade(database_url: str | None = DbOption) -> None:
    """Upgrade the store's schema to the one this wavekit needs (back the store up first).

    A store created before wavekit had migrations is recognised and stamped first with the
    revision whose tables it has (0001, the schema before migrations). One transaction: on
    any error nothing is changed.

    Example: wavekit db upgrade --database-url postgresql+psycopg2://wavekit@db/wavekit
    """
    url = load_settings(database_url=database_url).resolved_database_url()
    where = masked_url(url)
    result = schema.upgrade_store(url)
    if result.stamped:
        typer.echo(f"the store at {where} was created before migrations: stamped "
                   f"{result.stamped}")
        result = schema.UpgradeResult(result.stamped, result.after, result.stamped)
    if result.before == result.after:
        typer.echo(f"the store at {where} is at revision {result.after} (head)")
    else:
        typer.echo(f"upgraded the store at {where} from revision {result.before or 'none'} to "
                   f"{result.after} (head)")


@db_app.command("current")
def db_current(database_url: str | None = DbOption) -> None:
    """Show the store's revision and the one this wavekit needs; changes nothing.

    Example: wavekit db current
    """
    url = load_settings(database_url=database_url).resolved_database_url()
    typer.echo(schema.read_state(url, raw_engine(url)).describe())


@app.command("demo")
def demo(target: str = typer.Option("sandbox", metavar="KIND", help="sandbox, scim or ldap."),
         data_dir: Path | None = typer.Option(None, metavar="DIR",
                                              help="Where the demo store goes.")) -> None:
    """Load the example catalog into a fresh store and release wave 1.

    Example: wavekit demo
    """
    from wavekit.present.demo import run_demo

    run_demo(console, target=target, data_dir=data_dir, catalog=EXAMPLE_CATALOG)


# ------------------------------------------------------------------ containment

contain_app = typer.Typer(help="Contained packages: give suspended grants back.",
                          no_args_is_help=True)
app.add_typer(contain_app, name="contain")


@contain_app.command("restore")
def contain_restore(ctx: typer.Context,
                    package_key: str = typer.Argument(..., metavar="PACKAGE",
                                                      help="Package key."),
                    reason: str = typer.Option("restored by a release manager", "--reason",
                                               metavar="TEXT", help="Why (recorded)."),
                    actor: str = typer.Option("release manager", "--as", metavar="WHO",
                                              help="Who restores."),
                    database_url: str | None = DbOption,
                    target: str | None = TargetOption) -> None:
    """Give a contained package's suspended grants back and return it to where containment
    found it (roll it back instead with `wavekit rollback`, or release it again).

    Example: wavekit contain restore finance-month-end-operator --reason "export approved"
    """
    from wavekit.workflow.containment import NotContained, RestoreUnproven, restore

    rt = _runtime(ctx, database_url, target)
    try:
        outcome = restore(rt, package_key, actor=actor, reason=reason)
    except (NotContained, RestoreUnproven) as exc:
        console.print(f"[red]✗ {escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"[green]✓ {escape(outcome.describe())}[/green]")


# ------------------------------------------------------------------ canary cohorts

cohort_app = typer.Typer(help="Stepped packages: promote, pause, resume or abort a rollout.",
                         no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")
ActorOption = typer.Option(..., "--as", metavar="WHO",
                           help="Who acts (required: audited with the action).")
CohortReason = typer.Option("", "--reason", metavar="TEXT", help="Why (recorded).")


def _cohort(ctx: typer.Context, action: str, package_key: str, actor: str, reason: str,
            database_url: str | None, target: str | None) -> None:
    """Run the cohort-action flow here (as the UI's deployment does) and say what it did."""
    from wavekit.domain.cohorts import check_action
    from wavekit.present import releasing

    if not actor.strip():  # the same rule the flow applies, before any Prefect start-up
        _error(check_action(action, actor, stepped=True, live=True, step=0, steps=2,
                            paused=False, widening=False).reason)
    rt = _runtime(ctx, database_url, target)
    from wavekit.workflow.cohorts import CohortActionRefused, authorize

    try:  # who may act: the flow asks the same rule; a stranger stops here, audited
        authorize(rt, package_key, action, actor)
    except CohortActionRefused as exc:
        _error(escape(str(exc)))
    releasing.install_interrupt_handler(console, None)
    quiet_prefect()
    state = releasing.off_main_thread(project.flow("cohort_action"), package_key, action,
                                      actor, reason, return_state=True)
    if state.is_failed():
        _error(escape(state.message or f"{action} failed"))
    console.print(f"[green]✓ {escape(state.message or action)}[/green]")
    from wavekit.workflow.cohorts import progress_view

    if (view := progress_view(rt, package_key)) is not None:
        console.print(escape(view.describe()))


# The four rollout actions share one signature; only the verb and its help differ.
COHORT_ACTIONS = {
    "promote": """Widen a stepped package to its next cohort now, before its soak ends.

    Example: wavekit cohort promote finance-month-end-operator --as rm-alex
    """,
    "pause": """Stop a stepped package widening at its soak's end (still watched; can roll back).

    Example: wavekit cohort pause finance-month-end-operator --as rm-alex --reason "close week"
    """,
    "resume": """Let a paused stepped package widen again at its soak's end.

    Example: wavekit cohort resume finance-month-end-operator --as rm-alex
    """,
    "abort": """Abort a stepped package: roll back exactly the members granted so far, with proof.

    Example: wavekit cohort abort finance-month-end-operator --as rm-alex --reason "tickets"
    """,
}


def _cohort_command(action: str, doc: str) -> None:
    def command(ctx: typer.Context,
                package_key: str = typer.Argument(..., metavar="PACKAGE"),
                actor: str = ActorOption, reason: str = CohortReason,
                database_url: str | None = DbOption,
                target: str | None = TargetOption) -> None:
        _cohort(ctx, action, package_key, actor, reason, database_url, target)

    command.__doc__ = doc
    command.__name__ = f"cohort_{action}"
    cohort_app.command(action)(command)


for _action, _doc in COHORT_ACTIONS.items():
    _cohort_command(_action, _doc)


@app.command("check-target")
def check_target(target: str | None = TargetOption) -> None:
    """Verify the target's credentials may do what wavekit needs, and no more.

    LDAP: read users, write member under the group base (a write that puts back what it
    read); warns on an administrator bind or readable password hashes. SCIM: read Users,
    PATCH Groups; warns when the token may also create or delete users. Exit 1 when a
    needed permission is missing.

    Example: wavekit check-target --target ldap
    """
    from wavekit.adapters.targets.factory import build_target
    from wavekit.adapters.targets.privileges import check_target as check

    chosen = build_target(load_settings(target=target))
    try:
        findings = check(chosen)
    finally:
        close = getattr(chosen, "close", None)
        if callable(close):
            close()
    table = Table("check", "", "detail", title=f"Permissions on {chosen.name}",
                  title_justify="left")
    marks = {"ok": "[green]ok[/green]", "warn": "[yellow]WARN[/yellow]", "fail": "[red]FAIL[/red]"}
    for f in findings:
        table.add_row(f.check, marks[f.status], escape(f.detail))
    console.print(table)
    if any(f.status == "fail" for f in findings):
        raise typer.Exit(1)


# ---------------------------------------------------------------- rollback drills
from wavekit.present.drilling import drill as _drill

app.command("drill")(_drill)


def _unauthorized(exc: BaseException) -> bool:
    """A Prefect server behind basic auth answered 401 (somewhere down the cause chain)."""
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.HTTPStatusError) and seen.response.status_code == 401:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def main() -> None:
    """The console script: any unexpected error is one line; the traceback goes to the log."""
    import logging
    import os

    try:
        app()
    except Exception as exc:  # the last line of defence: typer has handled usage errors
        try:
            log_path = load_settings().data_dir / "wavekit.log"
        except SettingsInvalid:  # the error being reported may be this very one
            log_path = default_data_dir() / "wavekit.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(filename=log_path, level=logging.DEBUG, force=True)
        logging.getLogger("wavekit").exception("wavekit failed")
        if os.environ.get("WAVEKIT_DEBUG"):
            raise
        from wavekit.adapters.targets.base import TargetError

        # A target's error already names the target and what failed, on one line.
        said = (str(exc) if isinstance(exc, TargetError | SettingsInvalid)
                else f"{type(exc).__name__}: {exc}")
        if _unauthorized(exc):
            said = ("the Prefect server refused wavekit (401 Unauthorized): set "
                    "PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING")
        err_console.print(f"[red]error:[/red] {escape(said)}".rstrip()
                          + f"\n[dim](traceback in {log_path}; WAVEKIT_DEBUG=1 shows it)[/dim]",
                          soft_wrap=True)  # the error stays one line, however wide
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
