"""`wavekit demo`: the example catalog, a fresh embedded store, and wave 1."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from wavekit.catalog import load_catalog, write_catalog
from wavekit.examples import seed_target
from wavekit.runtime import build_runtime
from wavekit.settings import load_settings
from wavekit.store import reset_store, session_scope
from wavekit.views import print_status, print_wave_plan


def run_demo(console: Console, *, target: str, data_dir: Path | None, catalog: Path) -> None:
    settings = load_settings(target=target)
    demo_dir = (data_dir or settings.data_dir / "demo").resolve()
    settings = load_settings(target=target, database_url=f"sqlite:///{demo_dir / 'wavekit.db'}")
    rt = build_runtime(settings)
    reset_store(rt.database_url)
    with session_scope(rt.database_url) as s:
        counts = write_catalog(s, load_catalog(catalog), source=str(catalog))
    seed_target(rt.target)
    console.print(f"[bold]wavekit demo[/bold] · store {rt.database_url} · target {rt.target.name}")
    console.print("Loaded " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print_wave_plan(console, rt, 1)
    print_status(console, rt.database_url)
