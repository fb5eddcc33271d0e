"""The wavekit command line: a thin layer over the library. Every command has an example."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from wavekit import catalog as catalog_mod
from wavekit.examples import EXAMPLE_CATALOG
from wavekit.runtime import build_runtime
from wavekit.settings import load_settings
from wavekit.store import session_scope

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
    for p in exc.problems:
        table.add_row(p.file, str(p.line or ""), p.field, p.message)
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
    from wavekit.views import print_wave_plan

    rt = _runtime(database_url, target)
    print_wave_plan(console, rt, wave)


@app.command("status")
def status(database_url: str | None = DbOption) -> None:
    """Show packages by wave and state.

    Example: wavekit status
    """
    from wavekit.views import print_status

    print_status(console, _runtime(database_url).database_url)


@app.command("demo")
def demo(target: str = typer.Option("sandbox", help="sandbox, scim or ldap."),
         data_dir: Path | None = typer.Option(None, help="Where the demo store goes.")) -> None:
    """Load the example catalog into a fresh store and release wave 1.

    Example: wavekit demo
    """
    from wavekit.demo import run_demo

    run_demo(console, target=target, data_dir=data_dir, catalog=EXAMPLE_CATALOG)


if __name__ == "__main__":
    app()
