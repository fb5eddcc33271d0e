"""The wavekit command line: a thin layer over the library. Every command has an example."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wavekit import project
from wavekit.adapters import catalog as catalog_mod
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store.engine import session_scope
from wavekit.examples import EXAMPLE_CATALOG
from wavekit.workflow.runtime import build_runtime

app = typer.Typer(help="Release IAM role packages to production in gated, watched, reversible "
                       "waves on Prefect.", no_args_is_help=True, add_completion=False)
catalog_app = typer.Typer(help="Check catalogs.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
console = Console()

DbOption = typer.Option(None, "--database-url", envvar="WAVEKIT_DATABASE_URL",
                        help="Store URL (default: SQLite file in WAVEKIT_DATA_DIR).")
TargetOption = typer.Option(None, "--target", envvar="WAVEKIT_TARGET",
                            help="sandbox (default), scim or ldap.")


def _runtime(database_url: str | None, target: str | None = None):  # type: ignore[no-untyped-def]
    return build_runtime(load_settings(database_url=database_url, target=target))


def _fail_invalid(exc: catalog_mod.CatalogInvalid) -> None:
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


@app.command("load")
def load(path: Path = typer.Argument(..., help="Catalog directory."),
         database_url: str | None = DbOption) -> None:
    """Validate a catalog and write it to the store in one transaction.

    Example: wavekit load ./catalog
    """
    rt = _runtime(database_url)
    try:
        cat = catalog_mod.load_catalog(path)
    except catalog_mod.CatalogInvalid as exc:
        _fail_invalid(exc)
        return
    with session_scope(rt.database_url) as s:
        counts = catalog_mod.write_catalog(s, cat, source=str(path))
    console.print("[green]✓ loaded[/green] " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command("plan")
def plan(wave: int = typer.Option(..., "--wave", help="Wave number."),
         database_url: str | None = DbOption, target: str | None = TargetOption) -> None:
    """Show what a wave would change on the target, package by package; writes nothing.

    Example: wavekit plan --wave 1
    """
    from wavekit.present.views import print_wave_plan

    rt = _runtime(database_url, target)
    print_wave_plan(console, rt, wave)


@app.command("status")
def status(database_url: str | None = DbOption) -> None:
    """Show packages by wave and state.

    Example: wavekit status
    """
    from wavekit.present.views import print_status

    rt = _runtime(database_url)
    print_status(console, rt.database_url, review_cadence_days=rt.settings.review_cadence_days)


@app.command("release")
def release(wave: int = typer.Option(..., "--wave", help="Wave number."),
            package: list[str] = typer.Option(None, "--package", help="Only these packages."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Plan and gate only."),
            triggered_by: str | None = typer.Option(None, "--as",
                                                    help="Who triggers (Slack id or name).")
            ) -> None:
    """Run the release-wave flow in this process; owners approve in Slack or the Prefect UI.

    Example: wavekit release --wave 1 --as U0RELMGR1
    """
    from wavekit.present.demo import quiet_prefect

    quiet_prefect()
    release_wave = project.flow("release_wave")

    result = release_wave(wave=wave, dry_run=dry_run, packages=package or None,
                          triggered_by=triggered_by)
    for key, state in result.items():
        console.print(f"{key}: {state}")


@app.command("rollback")
def rollback(package_key: str = typer.Argument(..., help="Package key."),
             reason: str = typer.Option("manual rollback by a release manager", "--reason"),
             actor: str = typer.Option("release manager", "--as")) -> None:
    """Roll a package back to its prior bundle and print the read-back proof.

    Example: wavekit rollback hr-case-intake-specialist --reason "ticket spike"
    """
    from wavekit.present.demo import quiet_prefect

    quiet_prefect()
    rollback_package = project.flow("rollback_package")

    console.print(rollback_package(package_key, reason, actor=actor))


@app.command("watch")
def watch() -> None:
    """Take the health measurements that are due now (what the watch-packages schedule runs).

    Example: wavekit watch
    """
    from wavekit.present.demo import quiet_prefect

    quiet_prefect()
    watch_packages = project.flow("watch_packages")

    for row in watch_packages():
        console.print(row)


@app.command("maintenance")
def maintenance(report_dir: Path | None = typer.Option(None, "--reports",
                                                       help="Where reports go.")) -> None:
    """Run the nightly maintenance flow now.

    Example: wavekit maintenance --reports ./out
    """
    from wavekit.present.demo import quiet_prefect

    quiet_prefect()
    nightly_maintenance = project.flow("nightly_maintenance")

    console.print(nightly_maintenance(report_dir=str(report_dir) if report_dir else None))


@app.command("telemetry")
def telemetry(paths: list[Path] = typer.Argument(..., help="CSV or JSON telemetry files."),
              database_url: str | None = DbOption) -> None:
    """Validate and load telemetry files (all or nothing); see docs/telemetry.md.

    Example: wavekit telemetry usage.csv tickets.csv
    """
    from wavekit.adapters.telemetry import TelemetryInvalid, ingest_telemetry

    rt = _runtime(database_url)
    try:
        counts = ingest_telemetry(rt.database_url, paths)
    except TelemetryInvalid as exc:
        _fail_invalid(exc)  # type: ignore[arg-type]
        return
    console.print("[green]✓ loaded[/green] " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command("report")
def report(out: Path = typer.Option(Path("out"), "--out", help="Directory to write into."),
           database_url: str | None = DbOption) -> None:
    """Write the readiness dashboard, wave reports and rollback reports.

    Example: wavekit report --out ./out
    """
    from wavekit.present.reports import write_reports

    rt = _runtime(database_url)
    for path in write_reports(rt.database_url, out,
                              review_cadence_days=rt.settings.review_cadence_days):
        console.print(f"wrote {path}")


@app.command("serve")
def serve(no_schedules: bool = typer.Option(False, "--no-schedules",
                                            help="Serve without the cron/interval schedules.")
          ) -> None:
    """Serve prefect.yaml's deployments to a Prefect server (PREFECT_API_URL).

    Example: PREFECT_API_URL=http://127.0.0.1:4200/api wavekit serve
    """
    from wavekit.present.demo import quiet_prefect

    quiet_prefect(terminal=False)
    from wavekit.present.serving import serve_all

    serve_all(schedules=not no_schedules)


@app.command("slack-receiver")
def slack_receiver(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(3000),
                   socket: bool = typer.Option(False, "--socket",
                                               help="Use Socket Mode (no public URL)."),
                   database_url: str | None = DbOption) -> None:
    """Receive Slack button clicks and resume the paused wave (HTTP or Socket Mode).

    Example: WAVEKIT_SLACK_SIGNING_SECRET=... wavekit slack-receiver --port 3000
    """
    from wavekit.adapters.slack import run_receiver, run_socket_mode
    from wavekit.adapters.slack.config import configured_slack

    rt = _runtime(database_url)
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
                        web_client=app_.web_client(), ui_url=rt.settings.prefect_ui_url)
        return
    run_receiver(host, port, database_url=rt.database_url,
                 signing_secret=app_.signing_secret.get_secret_value(),
                 web_client=app_.web_client(), ui_url=rt.settings.prefect_ui_url)


@app.command("demo")
def demo(target: str = typer.Option("sandbox", help="sandbox, scim or ldap."),
         data_dir: Path | None = typer.Option(None, help="Where the demo store goes.")) -> None:
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
def contain_restore(package_key: str = typer.Argument(..., help="Package key."),
                    reason: str = typer.Option("restored by a release manager", "--reason"),
                    actor: str = typer.Option("release manager", "--as"),
                    database_url: str | None = DbOption,
                    target: str | None = TargetOption) -> None:
    """Give a contained package's suspended grants back and return it to where containment
    found it (roll it back instead with `wavekit rollback`, or release it again).

    Example: wavekit contain restore finance-month-end-operator --reason "export approved"
    """
    from wavekit.workflow.containment import NotContained, RestoreUnproven, restore

    rt = _runtime(database_url, target)
    try:
        outcome = restore(rt, package_key, actor=actor, reason=reason)
    except (NotContained, RestoreUnproven) as exc:
        console.print(f"[red]✗ {escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"[green]✓ {escape(outcome.describe())}[/green]")


if __name__ == "__main__":
    app()
