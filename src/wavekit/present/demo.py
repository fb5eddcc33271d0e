"""`wavekit demo`: the example catalog in a fresh embedded store, wave 1 through the real DAG.

The owner approvals are given by the demo itself (marked as such in the audit log), and the
watch is fast-forwarded: each day of the window is one run of the watch flow with its time
handed in. Synthetic telemetry makes HR Case Intake Specialist degrade after launch, so the
demo shows a rollback for a real reason.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from wavekit import project
from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.settings import Settings, load_settings
from wavekit.adapters.targets.base import Target
from wavekit.examples import seed_target
from wavekit.present.quiet import quiet_prefect

DEGRADING = "hr-case-intake-specialist"


@contextlib.contextmanager
def demo_target(kind: str, settings: Settings, catalog: Path) -> Iterator[Target]:
    """The demo's target: the sandbox, or a SCIM / LDAP server (a local one unless configured)."""
    identities = pd.read_csv(catalog / "identities.csv", dtype=str).fillna("")
    groups = list(pd.read_csv(catalog / "entitlements.csv", dtype=str)["key"])
    with contextlib.ExitStack() as stack:
        if kind == "sandbox":
            from wavekit.adapters.targets.sandbox import SandboxTarget

            target: Target = SandboxTarget(settings.resolved_database_url())
        elif kind == "scim":
            from wavekit.adapters.targets.scim import (
                ScimConfig,
                ScimTarget,
                provision_scim_directory,
            )

            if os.environ.get("WAVEKIT_SCIM_URL"):
                config = ScimConfig.from_env()
            else:
                from wavekit.devservers.scim import run_local_scim_server

                config = stack.enter_context(run_local_scim_server())
            provision_scim_directory(config, identities.to_dict("records"), groups)
            target = ScimTarget(config)
        elif kind == "ldap":
            from wavekit.adapters.targets.ldap import (
                LdapConfig,
                LdapTarget,
                provision_ldap_directory,
            )

            if os.environ.get("WAVEKIT_LDAP_URL"):
                config = LdapConfig.from_env()
            else:
                from wavekit.devservers.slapd import run_local_slapd

                config = stack.enter_context(run_local_slapd())
            target = LdapTarget(config)
            provision_ldap_directory(target, identities.to_dict("records"), groups)
        else:
            raise ValueError(f"unknown target {kind!r}")
        stack.callback(target.close)
        yield target


def run_demo(console: Console, *, target: str, data_dir: Path | None, catalog: Path) -> None:
    quiet_prefect()
    nightly_maintenance = project.flow("nightly_maintenance")
    watch_packages = project.flow("watch_packages")
    release_wave = project.flow("release_wave")
    from wavekit.adapters.store.engine import reset_store, session_scope
    from wavekit.adapters.telemetry import ingest_frame
    from wavekit.domain.clock import as_utc, utcnow
    from wavekit.examples.synth_telemetry import generate_telemetry
    from wavekit.present.views import print_status, print_wave_plan, release_summary
    from wavekit.workflow.approvals import auto_approver
    from wavekit.workflow.runtime import build_runtime, runtime_override

    base = load_settings(target=target)
    demo_dir = (data_dir or base.data_dir / "demo").resolve()
    url = f"sqlite:///{demo_dir / 'wavekit.db'}"
    os.environ["WAVEKIT_DATABASE_URL"] = url  # flows in this process wire the same store
    settings = load_settings(target=target, database_url=url, data_dir=demo_dir)
    reset_store(url)
    with session_scope(url) as s:
        counts = write_catalog(s, load_catalog(catalog), source=str(catalog))
    with demo_target(target, settings, catalog) as tgt:
        seed_target(tgt)
        rt = build_runtime(settings, target=tgt)
        console.print(f"[bold]wavekit demo[/bold] · store {url} · target {tgt.name}")
        console.print("Loaded " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        print_wave_plan(console, rt, 1)

        # Synthetic telemetry: 28 days of baseline before launch, 15 days after.
        launch = utcnow()
        frames = generate_telemetry(url, start=launch - timedelta(days=28), deployed_at=launch,
                                    days=43, degrading=DEGRADING, seed=7)
        for kind, df in frames.items():
            ingest_frame(url, kind, df, source="demo-synthetic")

        console.print("\n[bold]Releasing wave 1[/bold] on Prefect (embedded server) · owner "
                      "approvals are given by the demo itself, [yellow]not by real owners"
                      "[/yellow]")
        with runtime_override(lambda: build_runtime(settings, target=tgt)), \
                auto_approver(url):
            states = release_wave(wave=1, triggered_by="demo-release-manager")
            console.print("After release: " + ", ".join(f"{k} → {v}" for k, v in
                                                         states.items()))
            console.print("\n[bold]Fast-forwarding the watch[/bold] (simulated clock: one watch "
                          "run per day of the window)")
            for day in range(1, 16):
                for tick in watch_packages(as_of=launch + timedelta(days=day, minutes=5)):
                    if tick["action"] != "continue":
                        console.print(f"  day {day:>2}: {tick['package']} → {tick['action']} "
                                      f"({tick['reason']})")
            summary = nightly_maintenance(as_of=launch + timedelta(days=15, hours=2),
                                          report_dir=str(demo_dir / "reports"))
        console.print(f"\nNightly maintenance: {summary}")
        table = Table(title="Wave 1 outcome", title_justify="left")
        for col in ("package", "state", "adds", "removes", "retired", "health checks",
                    "rollback proof"):
            table.add_column(col)
        for row in release_summary(url, wave=1):
            table.add_row(*[str(row[c]) for c in ("package", "state", "adds", "removes",
                                                  "retired", "checks", "proof")])
        console.print(table)
        print_status(console, url, as_of=as_utc(launch + timedelta(days=15, hours=2)))
        console.print(f"Reports: {demo_dir / 'reports'}  ·  inspect with "
                      f"WAVEKIT_DATABASE_URL={url} wavekit status")
