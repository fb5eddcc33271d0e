"""P1 whole flow and P4: the wave flow itself, Prefect included (issue 16).

Both run flows/wave.py's `release_wave` and flows/watch.py's `watch_packages` in this process
against a temporary Prefect server (`prefect_test_harness`, as the flow tests do), on a
catalog written on the fly (tests/support/fault_world.py's writer: low-risk packages whose
every gate passes). Owners approve as in the tests that pre-approve (tests/test_wave_reruns.py,
tests/test_cli_speaks.py): a first run stages every package and opens its handoff without
waiting (`wait_for_owners=False`), each owner's approval is recorded in the store (local mode,
recorded as unverified), and a second run of the wave applies the stored decisions and
deploys. No owner think-time and no polling interval is in the figures. Health comes from a
fixed healthy source (tests/support/flows.py's ScriptedMetrics): computing metrics from
telemetry is P3's subject. Time is a ManualClock: the watch runs once per simulated day with
`as_of` handed in, as the tests and the demo fast-forward it, and never sleeps.

P1 whole flow: a wave of 20 groups x 2,000 members (in `packages` packages) on slapd and on
scim2-server, trigger to every package Watching, against the raw client writing the same
grants (benchmarks/targets.py), repetitions interleaved into fresh groups and fresh stores.

P4: 50 packages on the sandbox target, trigger to every package Stable, on SQLite and
PostgreSQL. Its Prefect share is measured two ways:
- subtraction: the same domain calls the flows' tasks make, in the same order, run in one
  thread without Prefect on a fresh copy of the store (`plain_wave`); share = 1 - plain/flow;
- wrapping: every public function of wavekit.workflow's rollout, watch, leases, cohorts,
  containment, notices and rollback modules, the reports the flows render and the runtime
  factory are wrapped while the flow runs; the wall time during which no thread was inside one
  of them (the union of their intervals) is Prefect's (and the benchmark driver's, a few
  store queries). Under the GIL a thread inside wavekit code can be waiting for one in
  Prefect, so this share is a lower bound.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

# Keep Prefect quiet and local (no telemetry, no network), as tests/conftest.py does.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

REQUESTER = "rm-bench"
OWNER = "UOWNER"  # the owner's Slack id in fault_world's catalogs


class PrefectServer:
    """One temporary Prefect server for the benchmark process, started on first use."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.started_s: float | None = None

    def __call__(self) -> None:
        if self.started_s is not None:
            return
        from prefect.testing.utilities import prefect_test_harness

        start = time.perf_counter()
        self.stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        self.started_s = time.perf_counter() - start


# ------------------------------------------------------------------ the wave, two ways


def write_wave(directory: Path, url: str, identities: list[str],
               packages: dict[str, tuple[list[str], list[str]]],
               watch_days: int | None = None) -> None:
    """A wave-1 catalog (package key -> (members, entitlements)) written to a fresh store;
    watch_days: every package's watch window (default: the catalog's, 14 days)."""
    import yaml

    from tests.support.fault_world import PackageDef, load_world, write_catalog_dir
    from wavekit.adapters.store.engine import reset_store

    ents = sorted({e for _, es in packages.values() for e in es})
    write_catalog_dir(directory, identities, ents,
                      [PackageDef(key, members, es, [], []) for key, (members, es)
                       in packages.items()])
    if watch_days is not None:
        doc = yaml.safe_load((directory / "packages.yaml").read_text())
        for pkg in doc["packages"]:
            pkg["watch_days"] = watch_days
        (directory / "packages.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    reset_store(url)
    load_world(url, directory)


def settings_for(url: str, work: Path) -> Any:
    from wavekit.adapters.settings import load_settings

    # Local mode, as the flow tests run (WAVEKIT_APPROVALS_UNVERIFIED): the benchmark's
    # approvals carry no one-time code and are recorded as unverified.
    return load_settings(database_url=url, data_dir=work, approvals_unverified=True)


def runtime_factory(settings: Any, make_target: Callable[[], Any], clock: Any,
                    metrics: Any) -> Callable[[], Any]:
    """A runtime per flow run with a target of its own, closed with the run (as a runtime
    built from settings is): package runs go in threads and share no connection."""
    from wavekit.workflow.runtime import build_runtime

    def build() -> Any:
        target = make_target()
        rt = build_runtime(settings, target=target, clock=clock, metrics=metrics)
        rt.opened.callback(target.close)
        rt.notifier = None  # no Slack, whatever the environment says
        return rt

    return build


def approve(rt: Any, key: str) -> None:
    """The owner approves the package's open handoff (local mode: unverified)."""
    from sqlmodel import col, select

    from wavekit.adapters.store.engine import session_scope
    from wavekit.adapters.store.models import Approval
    from wavekit.workflow import rollout

    with session_scope(rt.database_url) as s:
        approval = s.exec(select(Approval).where(Approval.package_key == key,
                                                 col(Approval.decided_at).is_(None))
                          .order_by(col(Approval.id).desc())).first()
        approval_id = approval.id if approval else None
    if approval_id is None:
        raise AssertionError(f"{key} has no open handoff")
    if rollout.record_decision(rt, approval_id, "approve", OWNER, "benchmark approval",
                               channel="benchmark", proof="unverified") != "approved":
        raise AssertionError(f"{key} was not approved")


def states(url: str) -> dict[str, str]:
    from sqlmodel import select

    from wavekit.adapters.store.engine import session_scope
    from wavekit.adapters.store.models import RolePackage

    with session_scope(url) as s:
        return {p.key: p.state for p in s.exec(select(RolePackage))}


def flow_wave(factory: Callable[[], Any], rt: Any, keys: list[str]) -> dict[str, str]:
    """Trigger the wave on Prefect, the owners approve, the wave runs again and deploys."""
    from flows.wave import release_wave
    from wavekit.workflow.runtime import runtime_override

    with runtime_override(factory):
        first = release_wave(wave=1, requested_by=REQUESTER, wait_for_owners=False)
        if set(first.values()) != {"awaiting_handoff"}:
            raise AssertionError(f"first run of the wave left {first}")
        for key in keys:
            approve(rt, key)
        return release_wave(wave=1, requested_by=REQUESTER)


def flow_watch(factory: Callable[[], Any], url: str, clock: Any, deployed: datetime,
               days: int) -> int:
    """The watch flow once per simulated day until every package is Stable; days run."""
    from flows.watch import watch_packages
    from wavekit.workflow.runtime import runtime_override

    with runtime_override(factory):
        for day in range(1, days + 1):
            clock.set(deployed + timedelta(days=day, minutes=1))
            watch_packages(as_of=clock.now())
            if set(states(url).values()) == {"stable"}:
                return day
    raise AssertionError(f"not every package is Stable after {days} days: {states(url)}")


def plain_wave(rt: Any, keys: list[str]) -> dict[str, str]:
    """What flow_wave does, as the flows' tasks call the domain, without Prefect: one
    thread, no flow or task runs, no artifacts. The success path only."""
    from wavekit.present.reports import render_wave_report, with_audit_head
    from wavekit.workflow import cohorts, leases, notices, rollout, watch

    def release(first: bool) -> dict[str, str]:
        schedule = rollout.release_order(rt, 1, None)
        out: dict[str, str] = {}
        with leases.hold(rt, leases.wave(1)):
            leases.check_free(rt, [leases.package(k) for k in schedule])
            for key in schedule:
                with leases.hold(rt, leases.package(key)):
                    staged = rollout.stage_package(rt, key, wave=1, flow_run_id=None,
                                                   triggered_by=REQUESTER)
                    assert staged.release_id is not None and not staged.held
                    with_audit_head(f"Plan for {key}", rt.database_url)
                    request = rollout.request_handoff(rt, staged.release_id)
                    notices.ask_approvers(rt, request, staged, None)
                    if not first:
                        assert rollout.apply_stored_decision(
                            rt, request.approval_id) == "approved"
                        assert all(g.passed for g in rollout.enforce_gates(
                            rt, staged.release_id))
                        cohorts.first_step_label(rt, key)
                        rollout.deploy_package(rt, staged.release_id)
                        cohorts.progress_view(rt, key)
                        _after_tick(rt, watch.watch_tick(rt, staged.release_id,
                                                         rt.clock.now(), rt.metrics))
                    render_wave_report(rt.database_url, 1)  # each package run's _end
                    rollout.package_outcome(rt, key)
                out[key] = rollout.package_state(rt, key)[0]
        render_wave_report(rt.database_url, 1)
        return out

    first = release(True)
    if set(first.values()) != {"awaiting_handoff"}:
        raise AssertionError(f"first pass left {first}")
    for key in keys:
        approve(rt, key)
    return release(False)


def _after_tick(rt: Any, tick: Any) -> bool:
    """flows.wave.after_tick on the success path: retire when due; True: release dependents."""
    from wavekit.workflow import rollout, watch

    actions = watch.next_actions(rt, tick)
    if actions.rollback or actions.contain or actions.widen or actions.notify_hold:
        raise AssertionError(f"{tick.package_key}: {tick.action} ({tick.reason})")
    if actions.retire_legacy:
        rollout.retire_legacy(rt, tick.release_id)
    return bool(actions.release_dependents)


def plain_watch(rt: Any, url: str, clock: Any, deployed: datetime, days: int) -> int:
    """What flow_watch does, as watch_packages' tasks call the domain, without Prefect."""
    from wavekit.workflow import leases, rollout, watch

    for day in range(1, days + 1):
        clock.set(deployed + timedelta(days=day, minutes=1))
        now = clock.now()
        for release_id in watch.releases_due(rt, now):
            with leases.attempt(rt, leases.release_package(rt, release_id)) as refused:
                assert not refused
                tick = watch.watch_tick(rt, release_id, now, rt.metrics)
                stable = _after_tick(rt, tick)
            if stable:
                rollout.dependents_ready(rt, tick.package_key)
        for release_id in rollout.releases_awaiting_retirement(rt, now):
            rollout.retire_legacy(rt, release_id)
        if set(states(url).values()) == {"stable"}:
            return day
    raise AssertionError(f"not every package is Stable after {days} days: {states(url)}")


# ------------------------------------------------------------------ wavekit's own time


@dataclass
class Meter:
    """Wall-clock intervals spent inside wavekit's own functions, outermost calls only."""

    intervals: list[tuple[float, float]] = field(default_factory=list)
    local: threading.local = field(default_factory=threading.local)

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self.local, "depth", 0)
            self.local.depth = depth + 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.local.depth = depth
                if depth == 0:
                    self.intervals.append((start, time.perf_counter()))

        return timed

    def covered(self, since: float, until: float) -> float:
        """Seconds of [since, until] during which some thread was inside wavekit."""
        total, end = 0.0, since
        for a, b in sorted(self.intervals):
            a, b = max(a, end), min(b, until)
            if b > a:
                total += b - a
                end = b
        return total


def _wavekit_modules() -> list[ModuleType]:
    from wavekit.workflow import cohorts, containment, leases, notices, rollback, rollout, watch

    return [rollout, watch, leases, cohorts, containment, notices, rollback]


@contextmanager
def metered(meter: Meter) -> Iterator[None]:
    """Wrap wavekit's domain functions (see the module docstring) while the flows run."""
    import inspect

    import flows.wave as wave_flow
    from wavekit.workflow import leases

    patched: list[tuple[Any, str, Any]] = []
    for module in _wavekit_modules():
        for name, obj in list(vars(module).items()):
            if (inspect.isfunction(obj) and obj.__module__ == module.__name__
                    and not name.startswith("_")):
                patched.append((module, name, obj))
    patched += [(wave_flow, n, getattr(wave_flow, n)) for n in
                ("render_wave_report", "render_rollback_report", "with_audit_head")]
    patched += [(leases._Lease, n, getattr(leases._Lease, n)) for n in ("take", "give_back")]
    for owner, name, obj in patched:
        setattr(owner, name, meter.wrap(obj))
    try:
        yield
    finally:
        for owner, name, obj in patched:
            setattr(owner, name, obj)


# ------------------------------------------------------------------ P1 whole flow


@dataclass(frozen=True)
class FlowRow:
    wavekit_s: float
    raw_s: float
    outside_s: float  # median wall time outside wavekit's functions (Prefect's share)
    note: str


def _split(items: list[str], parts: int) -> list[list[str]]:
    return [items[i::parts] for i in range(parts)]


def p1_flow(kind: str, groups: int, members: int, packages: int, reps: int, work: Path,
            prefect: Callable[[], None]) -> FlowRow:
    """P1: release_wave deploying groups x members on slapd / scim2-server vs the raw client
    (one write per group with every member), interleaved, medians of `reps`."""
    from benchmarks import targets
    from tests.support.flows import ScriptedMetrics
    from wavekit.domain.clock import ManualClock, utcnow
    from wavekit.workflow.runtime import build_runtime

    prefect()
    flow_groups = {rep: [f"w{rep}-g{g:02d}" for g in range(groups)] for rep in range(reps)}
    raw_groups = {rep: [f"r{rep}-g{g:02d}" for g in range(groups)] for rep in range(reps)}
    every = [g for d in (flow_groups, raw_groups) for gs in d.values() for g in gs]
    pair_of = targets.ldap_pair if kind == "ldap" else targets.scim_pair
    with pair_of(members, every) as pair:
        if kind == "ldap":
            from wavekit.adapters.targets.ldap import LdapTarget

            def make_target() -> Any:
                return LdapTarget(pair.config)

            def raw_add(group: str) -> None:
                assert isinstance(pair, targets.LdapPair)
                targets.ldap_raw_add(pair, group)
        else:
            from wavekit.adapters.targets.scim import ScimTarget

            def make_target() -> Any:
                return ScimTarget(pair.config)

            def raw_add(group: str) -> None:
                assert isinstance(pair, targets.ScimPair)
                targets.scim_raw_patch(pair, group)

        ids = [str(p["id"]) for p in pair.people]
        prepared = []
        for rep in range(reps):  # a fresh store per repetition (not timed)
            url = f"sqlite:///{work / f'p1-flow-{kind}-{rep}.db'}"
            catalog = {f"bench-pkg-{k}": (ids, ents)
                       for k, ents in enumerate(_split(flow_groups[rep], packages))}
            write_wave(work / f"p1-flow-{kind}-{rep}", url, ids, catalog)
            settings = settings_for(url, work)
            clock = ManualClock(utcnow())
            factory = runtime_factory(settings, make_target, clock, ScriptedMetrics())
            prepared.append((list(catalog), factory, build_runtime(
                settings, target=pair.target, clock=clock, metrics=ScriptedMetrics())))
        meter = Meter()
        outside: list[float] = []

        def wk(rep: int) -> None:
            keys, factory, rt = prepared[rep]
            start = time.perf_counter()
            with metered(meter):
                got = flow_wave(meter.wrap(factory), rt, keys)
            end = time.perf_counter()
            outside.append(end - start - meter.covered(start, end))
            if set(got.values()) != {"watching"}:
                raise AssertionError(f"the wave left {got}")

        def raw(rep: int) -> None:
            for group in raw_groups[rep]:
                raw_add(group)

        med = targets._interleave(reps, {"wk": wk, "raw": raw})
        for who, gs in (("wavekit", flow_groups[0]), ("raw", raw_groups[0])):
            held = len(pair.target.read_grants(gs))
            if held != groups * members:
                raise AssertionError(f"{who} left {held} grants, expected {groups * members}")
    client = "ldap3, one modify per group" if kind == "ldap" else "httpx, one PATCH per group"
    return FlowRow(med["wk"], med["raw"], statistics.median(outside), (
        f"release_wave on Prefect, {packages} packages, SQLite store: trigger, owners "
        f"pre-approved between two runs (unverified), deploy, first health check, every "
        f"package Watching; raw: {client} with all members; median of {reps} interleaved"))


# ------------------------------------------------------------------ P4


@dataclass(frozen=True)
class P4Row:
    flow_s: float
    plain_s: float
    outside_s: float  # wall time outside wavekit's functions during the flow run
    days: int
    grants: int


def p4_wave(url: str, packages: int, members: int, entitlements: int, work: Path,
            prefect: Callable[[], None], *, name: str, watch_days: int | None = None
            ) -> P4Row:
    """P4: a `packages`-package wave on the sandbox, trigger to every package Stable, on
    Prefect; then the same domain steps without Prefect on a fresh store (see module doc)."""
    from tests.support.flows import ScriptedMetrics
    from wavekit.adapters.targets.sandbox import SandboxTarget
    from wavekit.domain.clock import ManualClock, as_utc, utcnow
    from wavekit.workflow.runtime import build_runtime

    prefect()
    ids = [f"p4u{i:05d}" for i in range(packages * members)]
    catalog = {f"p4-pkg-{k:03d}": (ids[k * members:(k + 1) * members],
                                   [f"p4-e{k:03d}-{e}" for e in range(entitlements)])
               for k in range(packages)}
    keys = list(catalog)
    settings = settings_for(url, work)
    limit = 30  # days: well past any watch window in this catalog (14 days)

    def make_target() -> Any:
        return SandboxTarget(url)

    def deployed_at() -> datetime:
        from sqlmodel import col, func, select

        from wavekit.adapters.store.engine import session_scope
        from wavekit.adapters.store.models import Release

        with session_scope(url) as s:
            latest: datetime = s.exec(select(func.max(col(Release.deployed_at)))).one()
        return as_utc(latest)

    # Prefect: the flows, metered.
    write_wave(work / f"p4-{name}", url, ids, catalog, watch_days)
    clock = ManualClock(utcnow())
    meter = Meter()
    factory = meter.wrap(runtime_factory(settings, make_target, clock, ScriptedMetrics()))
    rt = build_runtime(settings, target=SandboxTarget(url), clock=clock,
                       metrics=ScriptedMetrics())
    start = time.perf_counter()
    with metered(meter):
        got = flow_wave(factory, rt, keys)
        if set(got.values()) != {"watching"}:
            raise AssertionError(f"the wave left {got}")
        days = flow_watch(factory, url, clock, deployed_at(), limit)
    flow_s = time.perf_counter() - start
    outside = flow_s - meter.covered(start, start + flow_s)

    # The same steps without Prefect, on a fresh store (not metered).
    write_wave(work / f"p4-{name}-plain", url, ids, catalog, watch_days)
    clock = ManualClock(utcnow())
    rt = build_runtime(settings, target=SandboxTarget(url), clock=clock,
                       metrics=ScriptedMetrics())
    rt.notifier = None
    start = time.perf_counter()
    got = plain_wave(rt, keys)
    if set(got.values()) != {"watching"}:
        raise AssertionError(f"the plain wave left {got}")
    plain_days = plain_watch(rt, url, clock, deployed_at(), limit)
    plain_s = time.perf_counter() - start
    if plain_days != days:
        raise AssertionError(f"Stable after {days} days on Prefect, {plain_days} without")
    return P4Row(flow_s, plain_s, outside, days, packages * members * entitlements)
