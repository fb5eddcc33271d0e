"""`wavekit demo`: the example catalog in a fresh embedded store, wave 1 through the real DAG.

The owner approvals are given by the demo itself (marked as such in the audit log), and the
watch is fast-forwarded: each day of the window is one run of the watch flow with its time
handed in. Synthetic telemetry makes HR Case Intake Specialist degrade after launch, so the
demo shows a rollback for a real reason. The rollback-drill flow drills Service Desk Resolver
(held for its pending drill) on a sandbox copy of production's scope, which turns its "drill
pending" into a recorded drill; the package is then released in steps (its catalog
`rollout`): a 10 % canary cohort, widened to half when its soak passes; a soak too thin to
widen on (a check with no passed measurement) holds it for a human, and the demo's release
manager (WAVEKIT_RELEASE_MANAGERS) reviews it and promotes it to everyone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table
from sqlmodel import col, select

from wavekit import project
from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.settings import Settings, load_settings
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, RolePackage
from wavekit.adapters.targets.base import Target
from wavekit.domain.clock import ManualClock
from wavekit.examples import record_example_drills, seed_target
from wavekit.present.quiet import quiet_prefect
from wavekit.workflow import rollout
from wavekit.workflow.runtime import Runtime

DEGRADING = "hr-case-intake-specialist"
# (package, hours after the handoff request at which its owner approves): the waiting for
# owners is what the portal's median deploy time counts.
DEMO_DECISIONS = (("hr-case-intake-specialist", 20), ("finance-month-end-operator", 28))
# Held one step short of release until its fallback is drilled: the demo drills it, then
# releases it in canary steps (wave 2, ahead of its wave's other package).
DRILLED = "service-desk-resolver"
DRILL_AT_HOURS, STEPPED_APPROVED_AT_HOURS = 30, 34
# The demo's release manager (WAVEKIT_RELEASE_MANAGERS): requests the waves, and promotes a
# stepped package whose soak was too thin to widen on by itself.
DEMO_RELEASE_MANAGER = "demo-release-manager"


def demo_promote(console: Console, day: int) -> None:
    """A soak held for a human: the release manager reviews it and promotes (the CLI's way)."""
    state = project.flow("cohort_action")(
        DRILLED, "promote", DEMO_RELEASE_MANAGER,
        "soak reviewed by the release manager (demo): no failure, thin telemetry",
        return_state=True)
    console.print(f"  day {day:>2}: {DRILLED} → {state.message} (demo)")


def demo_decide(rt: Runtime, package_key: str) -> str:
    """Approve a package's open handoff as its owner, marked as the demo's doing."""
    with session_scope(rt.database_url) as s:
        pkg = s.get(RolePackage, package_key)
        approval = s.exec(select(Approval).where(Approval.package_key == package_key,
                                                 col(Approval.decided_at).is_(None))
                          .order_by(col(Approval.id).desc())).first()
        if pkg is None or approval is None or approval.id is None:
            raise LookupError(f"{package_key} has no open handoff")
        owner, approval_id = pkg.owner_slack_id or pkg.owner_name, approval.id
    decided = rollout.record_decision(rt, approval_id, "approve", owner,
                                      "demo approval (not a real owner)", channel="demo",
                                      proof="unverified")
    if decided != "approved":
        raise LookupError(f"the demo could not approve {package_key}")
    return owner


class _RunningClock:
    """The story's time moving with the wall clock: the drill's restore is really timed."""

    def __init__(self, start: datetime) -> None:
        self._start, self._t0 = start, time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._t0)


def demo_drill(console: Console, rt: Runtime, package_key: str) -> None:
    """Run the rollback-drill flow on a package whose drill is pending; three lines."""
    from wavekit.domain.drills import fmt_minutes, fmt_seconds
    from wavekit.workflow import drills
    from wavekit.workflow.runtime import runtime_override

    with session_scope(rt.database_url) as s:
        pkg = s.get(RolePackage, package_key)
        name, before = (pkg.name, pkg.fallback_drill) if pkg else (package_key, "?")
    console.print(f"\n[bold]Rollback drill[/bold] of {name} (catalog: drill {before}): "
                  "deployed to a drill target, rolled back, read back; production not written")
    timed = dataclasses.replace(rt, clock=_RunningClock(rt.clock.now()))
    with runtime_override(lambda: timed):
        project.flow("rollback_drill")(package_key, actor=DEMO_RELEASE_MANAGER,
                                       return_state=True)
    drill_id = drills.latest_drill_id(rt, package_key)
    if drill_id is None:
        console.print("  [red]the drill recorded nothing[/red]")
        return
    o = drills.drill_outcome(timed, drill_id)
    verdict = "[green]passed[/green]" if o.passed else f"[red]FAILED[/red]: {o.failure}"
    console.print(f"  {o.target}: +{o.adds} deployed, rollback withdrew {o.withdrawn} and "
                  f"re-granted {o.re_granted}, read back {o.readback_count} = prior "
                  f"{o.prior_count} grants in {fmt_seconds(o.duration_seconds)} (objective "
                  f"{fmt_minutes(o.objective_minutes)}) → {verdict}")
    console.print(f"  gate rollback_drill {'passes' if o.gate.passed else 'fails'}: "
                  f"{o.gate.reason}")


def demo_stepped_release(console: Console, rt: Runtime, clock: ManualClock, package_key: str,
                         approve_at: datetime) -> None:
    """Release a stepped package: its owner approves (the demo), its first cohort deploys."""
    from wavekit.workflow.cohorts import progress_view

    release_wave = project.flow("release_wave")
    with session_scope(rt.database_url) as s:
        pkg = s.get(RolePackage, package_key)
        name, wave = (pkg.name, pkg.wave) if pkg else (package_key, None)
    console.print(f"\n[bold]Releasing {name} in steps[/bold] (wave {wave}, catalog rollout: "
                  "a canary cohort first)")
    release_wave(wave=wave, packages=[package_key], requested_by=DEMO_RELEASE_MANAGER,
                 wait_for_owners=False)
    clock.set(approve_at)
    who = demo_decide(rt, package_key)
    states = release_wave(wave=wave, packages=[package_key],
                          requested_by=DEMO_RELEASE_MANAGER)
    view = progress_view(rt, package_key)
    console.print(f"  approved by {who} (demo) → {states[package_key]}: "
                  + (view.describe() if view else "no steps"))


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
                ldap_config = LdapConfig.from_env()
            else:
                from wavekit.devservers.slapd import run_local_slapd

                ldap_config = stack.enter_context(run_local_slapd())
            target = LdapTarget(ldap_config)
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
    from wavekit.adapters.store.engine import reset_store
    from wavekit.adapters.telemetry import ingest_frame
    from wavekit.domain.clock import utcnow
    from wavekit.examples.synth_telemetry import generate_telemetry
    from wavekit.present.views import (
        print_maintenance_summary,
        print_status,
        print_wave_plan,
        wave_package_rows,
    )
    from wavekit.workflow.runtime import build_runtime, runtime_override

    base = load_settings(target=target)
    demo_dir = (data_dir or base.data_dir / "demo").resolve()
    url = f"sqlite:///{demo_dir / 'wavekit.db'}"
    os.environ["WAVEKIT_DATABASE_URL"] = url  # flows in this process wire the same store
    # Local mode: the demo's own approvals carry no one-time code; each is recorded as
    # unverified (audit log, reports), and the demo says so.
    # Finance's owner answers after 28 hours in the story: the deadline allows it.
    settings = load_settings(target=target, database_url=url, data_dir=demo_dir,
                             approvals_unverified=True, approval_deadline_hours=48,
                             release_managers=DEMO_RELEASE_MANAGER)
    reset_store(url)
    with session_scope(url) as s:
        counts = write_catalog(s, load_catalog(catalog), source=str(catalog))
    with demo_target(target, settings, catalog) as tgt:
        seed_target(tgt)
        rt = build_runtime(settings, target=tgt)
        console.print(f"[bold]wavekit demo[/bold] · store {url} · target {tgt.name}")
        console.print("Loaded " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        print_wave_plan(console, rt, 1)

        # One clock drives every timestamp the demo writes. The story is placed in the past so
        # that it ends now: `wavekit status` afterwards shows the demo's closing numbers.
        launch = utcnow() - timedelta(days=15, hours=2)
        clock = ManualClock(launch)
        # The rollback_drill gate takes recorded drills only, never catalog text: the example
        # world's medium/high-risk packages come with a signed manual drill on record.
        signed = record_example_drills(url, launch - timedelta(days=2))
        console.print(f"Recorded signed manual rollback drills (example world): "
                      f"{', '.join(signed)}; {DRILLED}: drill pending (drilled below); "
                      "a catalog's `drill: signed` alone counts for nothing")
        frames = generate_telemetry(url, start=launch - timedelta(days=28), deployed_at=launch,
                                    days=43, degrading=DEGRADING, seed=7)
        for kind, df in frames.items():
            ingest_frame(url, kind, df, source="demo-synthetic")
        rt = build_runtime(settings, target=tgt, clock=clock)

        console.print("\n[bold]Releasing wave 1[/bold] on Prefect (embedded server): every "
                      "package is handed to its owner at once")
        with runtime_override(lambda: rt):
            release_wave(wave=1, requested_by=DEMO_RELEASE_MANAGER, wait_for_owners=False)
            console.print("[yellow]Local mode (WAVEKIT_APPROVALS_UNVERIFIED): the owners' "
                          "decisions below are given by the demo itself, without approval "
                          "codes, and are recorded as unverified in the audit log and the "
                          "reports.[/yellow]")
            for key, hours in DEMO_DECISIONS:
                clock.set(launch + timedelta(hours=hours))
                who = demo_decide(rt, key)
                console.print(f"  +{hours}h: {key} approved by {who} (demo)")
                states = release_wave(wave=1, packages=[key],
                                      requested_by=DEMO_RELEASE_MANAGER)
                console.print(f"  +{hours}h: {key} → {states[key]}")
            clock.set(launch + timedelta(hours=DRILL_AT_HOURS))
            demo_drill(console, rt, DRILLED)
            clock.set(launch + timedelta(hours=DRILL_AT_HOURS + 1))  # the drill is recorded
            demo_stepped_release(console, rt, clock, DRILLED,
                                 launch + timedelta(hours=STEPPED_APPROVED_AT_HOURS))
            console.print("\n[bold]Fast-forwarding the watch[/bold] (simulated clock: one watch "
                          "run per day of the window)")
            for day in range(1, 16):
                clock.set(launch + timedelta(days=day, minutes=5))
                for tick in watch_packages(as_of=clock.now()):
                    if tick["action"] != "continue":
                        console.print(f"  day {day:>2}: {tick['package']} → {tick['action']} "
                                      f"({tick['reason']})")
                    if tick["package"] == DRILLED and tick["action"] == "inconclusive":
                        demo_promote(console, day)
            clock.set(launch + timedelta(days=15, hours=2))
            summary = nightly_maintenance(as_of=clock.now(),
                                          report_dir=str(demo_dir / "reports"))
        print_maintenance_summary(console, summary)
        table = Table(title="Wave 1 outcome", title_justify="left")
        for col in ("package", "state", "adds", "removes", "retired", "health checks",
                    "rollback proof"):
            table.add_column(col)
        for row in wave_package_rows(url, wave=1):
            table.add_row(*[str(row[c]) for c in ("package", "state", "adds", "removes",
                                                  "retired", "checks", "proof")])
        console.print(table)
        print_status(console, url, as_of=clock.now())
        console.print(f"Reports: {demo_dir / 'reports'}  ·  inspect with "
                      f"WAVEKIT_DATABASE_URL={url} wavekit status")
