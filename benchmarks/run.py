"""wavekit against the best raw client, in one run: `python -m benchmarks.run [--quick]`.

Machines are noisy, so every row pairs wavekit's way with a baseline timed in the same process
on the same data, and the ratio (baseline time / wavekit time) is the number to read; the
absolute seconds only describe this machine. Results go to benchmarks/results.md as a
Markdown table and are printed. `--quick` shrinks every size (a CI smoke run, about two
minutes; P4 on SQLite only, P3 at two sizes).

P1-P3 (issue 16) pit wavekit against the best a script can do: ldap3 with one modify per
group holding every member, httpx PATCH with every member per request, SCIM Bulk where the
server serves it (benchmarks/targets.py), medians of interleaved repetitions, P1 apply at
three sizes with its scaling exponent; P1 whole flow runs `release_wave` on Prefect against
the same raw clients, and P4 a 50-package wave to Stable on the sandbox with Prefect's share
of the time (benchmarks/flows.py); P3 times the nightly plan at three sizes on SQLite and
PostgreSQL and prints the scaling exponent (benchmarks/nightly.py). Rows a-d are older
context: their `baseline_*` functions below are deliberately naive reference implementations
that exist only in this file.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import yaml
from sqlalchemy import insert

from benchmarks.flows import PrefectServer  # first: it keeps Prefect quiet and local
from wavekit.adapters import catalog as wk_catalog
from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.store.engine import reset_store, session_scope
from wavekit.adapters.store.models import Identity
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain import rules as wk_rules
from wavekit.domain.frames import TelemetryFrames
from wavekit.domain.grants import Grant, grant_set
from wavekit.domain.metrics import adoption, measure_package
from wavekit.domain.packages import PackageView
from wavekit.examples.synth import generate_catalog
from wavekit.examples.synth_telemetry import generate_telemetry, synthetic_packages

T = TypeVar("T")
MIB = 1024 * 1024
RESULTS = Path(__file__).with_name("results.md")
COLUMNS = ("Benchmark", "Size", "wavekit (s)", "Baseline (s)", "Baseline / wavekit",
           "wavekit peak MiB", "Baseline peak MiB", "Notes")
D0 = datetime(2026, 4, 8, tzinfo=UTC)


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark runs."""

    identities: int
    packages: int
    write_sample: int
    sandbox_grants: int
    sandbox_single: int
    ldap_members: int
    telemetry_packages: int
    p1_groups: int = 20
    p1_members: int = 2_000
    p1_fractions: tuple[float, ...] = (1 / 16, 1 / 4, 1.0)  # of p1_members, for the exponent
    p2_members: int = 5_000
    p3_fractions: tuple[float, ...] = (1 / 16, 1 / 4, 1.0)
    reps: int = 3
    # P1 whole flow: p1_groups x flow_members in flow_packages packages, flow_reps repetitions
    flow_members: int = 2_000
    flow_packages: int = 4
    flow_reps: int = 3
    # P4: p4_packages packages of p4_members members x p4_entitlements entitlements each
    p4_packages: int = 50
    p4_members: int = 20
    p4_entitlements: int = 2
    p4_watch_days: int | None = None  # None: the catalog's default watch (14 days)
    p4_stores: tuple[str, ...] = ("SQLite", "PostgreSQL")


FULL = Sizes(identities=100_000, packages=500, write_sample=10_000, sandbox_grants=20_000,
             sandbox_single=1_000, ldap_members=1_500, telemetry_packages=32)
QUICK = Sizes(identities=10_000, packages=50, write_sample=1_000, sandbox_grants=2_000,
              sandbox_single=100, ldap_members=150, telemetry_packages=4, p1_members=200,
              p2_members=500, p3_fractions=(1 / 128, 1 / 32), flow_members=20,
              flow_packages=1, flow_reps=1, p4_packages=2, p4_members=5, p4_entitlements=1,
              p4_watch_days=1, p4_stores=("SQLite",))  # P4 on PostgreSQL: ~15 s more
STEPS = ("p1-ldap", "p1-scim", "p1-flow", "p2-rollback", "p3-nightly", "p4-wave", "catalog",
         "sandbox", "ldap", "metrics")
P4_TARGET_S = 60.0


@dataclass(frozen=True)
class Result:
    """One row of the results table; a None time means not measured (see the note)."""

    benchmark: str
    size: str
    wavekit_s: float | None
    baseline_s: float | None = None
    wavekit_peak_mib: float | None = None
    baseline_peak_mib: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Baseline time over wavekit time: above 1 means wavekit is faster."""
        if self.wavekit_s is None or self.baseline_s is None or self.wavekit_s <= 0:
            return None
        return self.baseline_s / self.wavekit_s

    def cells(self) -> list[str]:
        """The row as table cells, in COLUMNS order."""
        ratio = self.ratio
        return [self.benchmark, self.size, _num(self.wavekit_s, 3), _num(self.baseline_s, 3),
                f"{ratio:.1f}x" if ratio is not None else "-",
                _num(self.wavekit_peak_mib, 1), _num(self.baseline_peak_mib, 1), self.note]


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall-clock seconds of one call, and what it returned."""
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak memory traced by tracemalloc during one call, in MiB (a separate, untimed run)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ a. catalog


@dataclass
class BaselineCatalog:
    """What the baseline validation produces: its problems and each package's members."""

    problems: list[wk_catalog.Problem]
    members: dict[str, list[str]]


def _baseline_rows(path: Path) -> Iterable[tuple[int, dict[str, str]]]:
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh, skipinitialspace=True), start=2):
            yield line, {k.strip(): (v or "").strip() for k, v in row.items()}


def baseline_validate_catalog(directory: Path) -> BaselineCatalog:
    """BASELINE: the catalog checks of load_catalog, one CSV row at a time in plain Python.

    packages.yaml goes through wavekit's own YAML loader and per-package parser (a handful of
    packages either way), so the comparison isolates the identity and membership tables.
    """
    problems: list[wk_catalog.Problem] = []

    def bad(file: str, line: int | None, fld: str, message: str) -> None:
        problems.append(wk_catalog.Problem(file, line, fld, message))

    f = "identities.csv"
    active: dict[str, bool] = {}
    for line, row in _baseline_rows(directory / f):
        ident = row.get("id", "")
        if not ident:
            bad(f, line, "id", "identity id is empty")
        if not row.get("display_name"):
            bad(f, line, "display_name", "display name is empty")
        if ident and ident in active:
            bad(f, line, "id", f"duplicate identity id {ident!r}")
        flag = row.get("active", "").lower()
        if flag not in wk_catalog.TRUE | wk_catalog.FALSE:
            bad(f, line, "active", f"{flag!r} is not true/false")
        if row.get("kind", "") not in ("", "person", "service"):
            bad(f, line, "kind", f"{row['kind']!r} is not person or service")
        email = row.get("email", "")
        if email and "@" not in email:
            bad(f, line, "email", f"{email!r} is not an email address")
        active.setdefault(ident, flag == "" or flag not in wk_catalog.FALSE)

    f = "entitlements.csv"
    entitlements: set[str] = set()
    for line, row in _baseline_rows(directory / f):
        key = row.get("key", "")
        if not key:
            bad(f, line, "key", "entitlement key is empty")
        elif key in entitlements:
            bad(f, line, "key", f"duplicate entitlement key {key!r}")
        if row.get("privileged", "").lower() not in wk_catalog.TRUE | wk_catalog.FALSE:
            bad(f, line, "privileged", f"{row['privileged']!r} is not true/false")
        entitlements.add(key)

    f = "packages.yaml"
    doc = yaml.load((directory / f).read_text(), Loader=wk_catalog._LineLoader) or {}
    specs = [s for raw in doc.get("packages") or []
             if (s := wk_catalog._parse_package(raw, problems, f)) is not None]
    empty = pd.DataFrame(columns=list(wk_catalog.IDENTITY_COLUMNS))
    for spec in specs:
        for ent in [*spec.entitlements, *spec.removes, *spec.retires]:
            if ent not in entitlements:
                bad(f, None, f"packages[{spec.key}]", f"unknown entitlement {ent!r}")
        if spec.population_rule:
            try:  # the same rule language as load_catalog; rules are never run as code
                wk_rules.matching(empty, spec.population_rule, wk_catalog.IDENTITY_COLUMNS)
            except wk_rules.RuleError as exc:
                bad(f, None, f"packages[{spec.key}].population_rule", str(exc))
    keys = {s.key for s in specs}
    for spec in specs:
        for dep in spec.depends_on:
            if dep not in keys or dep == spec.key:
                bad(f, None, f"packages[{spec.key}].depends_on", f"bad dependency {dep!r}")
    if cycle := wk_catalog._find_cycle({s.key: s.depends_on for s in specs}):
        bad(f, None, "depends_on", "dependency cycle: " + " -> ".join(cycle))

    f = "memberships.csv"
    members: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for line, row in _baseline_rows(directory / f):
        pkg, ident = row.get("package", ""), row.get("identity", "")
        if pkg not in keys:
            bad(f, line, "package", f"unknown package {pkg!r}")
        if ident not in active:
            bad(f, line, "identity", f"member {ident!r} is not an identity in identities.csv")
        elif not active[ident]:
            bad(f, line, "identity", f"member {ident!r} is an inactive identity")
        if (pkg, ident) in seen:
            bad(f, line, "identity", f"duplicate membership of {ident!r}")
        seen.add((pkg, ident))
        members.setdefault(pkg, []).append(ident)
    return BaselineCatalog(problems, members)


def baseline_write_identities(url: str, rows: list[dict[str, Any]]) -> None:
    """BASELINE: one INSERT statement per row (what a row-by-row ORM loop sends)."""
    with session_scope(url) as s:
        for row in rows:
            s.execute(insert(Identity).values(**row))


def bench_catalog(identities: int, packages: int, workdir: Path, *,
                  write_sample: int = 10_000) -> list[Result]:
    """a. Load + validate a synthetic catalog, then write it to a SQLite store."""
    directory = workdir / "catalog"
    counts = generate_catalog(directory, identities=identities, packages=packages)
    size = (f"{counts['identities']:,} identities, {counts['packages']:,} packages, "
            f"{counts['memberships']:,} memberships")

    wk_s, cat = timed(lambda: load_catalog(directory))
    base_s, base = timed(lambda: baseline_validate_catalog(directory))
    if base.problems:
        raise AssertionError(f"baseline disagrees with load_catalog: {base.problems[:3]}")
    if {p.key: p.members for p in cat.packages if p.members} != base.members:
        raise AssertionError("baseline and load_catalog read different memberships")
    text = (directory / "packages.yaml").read_text()
    yaml_s, _ = timed(lambda: yaml.load(text, Loader=wk_catalog._LineLoader))
    load = Result("a. catalog load + validate", size, wk_s, base_s,
                  peak_mib(lambda: load_catalog(directory)),
                  peak_mib(lambda: baseline_validate_catalog(directory)),
                  "wavekit: pandas, vectorised checks; baseline: csv module, per-row loop; "
                  f"both parse packages.yaml with wavekit's line-numbering YAML loader "
                  f"({yaml_s:.2f} s of each) and run every population rule")

    url = f"sqlite:///{workdir / 'catalog.db'}"
    reset_store(url)

    def write() -> dict[str, int]:
        with session_scope(url) as s:
            return write_catalog(s, cat, source="benchmark")

    write_s, written = timed(write)
    reset_store(url)
    write_peak = peak_mib(write)
    rows = sum(written.values())
    sample = cat.identities.head(write_sample)
    records = wk_catalog._records(sample, wk_catalog.IDENTITY_COLUMNS)
    reset_store(url)
    sample_s, _ = timed(lambda: baseline_write_identities(url, records))
    scaled = sample_s / max(len(records), 1) * rows
    store = Result("a. catalog write to SQLite", f"{rows:,} rows", write_s, scaled, write_peak,
                   None, f"wavekit: write_catalog, executemany in one transaction; baseline: "
                   f"one INSERT per row, {len(records):,} identities timed and scaled "
                   f"to {rows:,} rows")
    return [load, store]


# ------------------------------------------------------------------ b. sandbox target


def _bench_grants(n: int, prefix: str) -> list[Grant]:
    per = 20  # entitlements; identities = n / 20
    return [Grant(f"{prefix}-u{i // per:06d}", f"{prefix}-e{i % per:02d}") for i in range(n)]


def bench_sandbox(grants: int, single: int, workdir: Path) -> list[Result]:
    """b. SandboxTarget.apply in batches of 500 vs one grant per batch (sampled, scaled)."""
    url = f"sqlite:///{workdir / 'sandbox.db'}"
    reset_store(url)
    target = SandboxTarget(url, sandbox="batched")
    adds = _bench_grants(grants, "b")
    wk_s, res = timed(lambda: target.apply(adds, [], batch_size=500))
    if res.added != grants:
        raise AssertionError(f"batched apply added {res.added} of {grants}")
    one = SandboxTarget(url, sandbox="single")
    sample = _bench_grants(single, "s")
    one_s, res1 = timed(lambda: one.apply(sample, [], batch_size=1))
    if res1.added != single:
        raise AssertionError(f"single apply added {res1.added} of {single}")
    scaled = one_s / single * grants
    return [Result("b. sandbox apply", f"{grants:,} grants", wk_s, scaled, note=(
        f"wavekit: batch_size=500 ({len(res.batches)} transactions); baseline: batch_size=1 "
        f"on {single:,} grants ({one_s:.2f} s), scaled x{grants / single:g}"))]


# ------------------------------------------------------------------ c. LDAP


def baseline_ldap_single_modifies(config: Any, group_dn: str, member_dns: Sequence[str]) -> None:
    """BASELINE: one modify per member (DNs known up front, no reads: the kindest case)."""
    from ldap3 import MODIFY_ADD

    from wavekit.adapters.targets.ldap import build_connection

    conn = build_connection(config)
    conn.open()
    conn.bind()
    try:
        for dn in member_dns:
            conn.modify(group_dn, {config.member_attribute: [(MODIFY_ADD, [dn])]})
    finally:
        conn.unbind()


def bench_ldap(members: int) -> list[Result]:
    """c. One modify per group vs one modify per member, against a local slapd."""
    from wavekit.adapters.targets.ldap import LdapTarget, provision_ldap_directory
    from wavekit.devservers.slapd import SlapdUnavailable, run_local_slapd

    name = "c. LDAP group membership"
    size = f"{members:,} members, 1 group"
    try:
        setup = time.perf_counter()
        with run_local_slapd() as config:
            people = [{"id": f"bench{i:05d}", "display_name": f"Bench User {i}"}
                      for i in range(members)]
            provision_ldap_directory(config, people, ["bench-batched", "bench-single"])
            setup_s = time.perf_counter() - setup
            target = LdapTarget(config)
            try:
                adds = [Grant(str(p["id"]), "bench-batched") for p in people]
                wk_s, res = timed(lambda: target.apply(adds, [], batch_size=members))
                dns = [f"uid={p['id']},{config.user_base}" for p in people]
                group_dn = f"cn=bench-single,{config.group_base}"
                base_s, _ = timed(lambda: baseline_ldap_single_modifies(config, group_dn, dns))
                held = target.read_grants(["bench-batched", "bench-single"])
            finally:
                target.close()
    except SlapdUnavailable as exc:
        return [Result(name, size, None, note=f"skipped: {exc}")]
    by_group = {g: sum(1 for x in held if x.entitlement == g)
                for g in ("bench-batched", "bench-single")}
    if res.added != members or set(by_group.values()) != {members}:
        raise AssertionError(f"LDAP groups hold {by_group}, expected {members} each")
    return [Result(name, size, wk_s, base_s, note=(
        f"wavekit: LdapTarget.apply (group + user lookups, 1 modify); baseline: {members:,} "
        f"one-member modifies on one connection; slapd start + provisioning {setup_s:.1f} s, "
        "not counted"))]


# ------------------------------------------------------------------ d. health metrics


def baseline_adoption(usage: pd.DataFrame, package: PackageView, start: pd.Timestamp,
                      end: pd.Timestamp) -> float | None:
    """BASELINE: adoption with a per-row Python loop over the usage rows."""
    if not package.members:
        return None
    used: set[str] = set()
    for identity, entitlement, at in usage[["identity", "entitlement", "at"]].itertuples(
            index=False, name=None):
        if start <= at < end and identity in package.members \
                and entitlement in package.entitlements:
            used.add(identity)
    return len(used) / len(package.members)


def bench_metrics(n_packages: int, *, measured: int = 4) -> list[Result]:
    """d. Health metrics over synthetic telemetry: pandas vs a per-row loop (per package)."""
    packages = synthetic_packages(n_packages, members=1_000, entitlements=8)
    frames = generate_telemetry(packages, start=D0 - timedelta(days=28), deployed_at=D0,
                                days=35, seed=0)
    rows = sum(len(df) for df in frames.values())
    tf = TelemetryFrames.build(**frames)
    as_of = D0 + timedelta(days=7)
    start, end = pd.Timestamp(D0), pd.Timestamp(as_of)
    sample = packages[:measured]
    grants = {p.key: grant_set((m, e) for m in p.members for e in p.entitlements)
              for p in sample}

    def wk_adoption() -> list[float | None]:
        return [adoption(tf, p, start, end) for p in sample]

    def wk_all() -> list[dict[str, float | None]]:
        return [measure_package(tf, p, deployed_at=D0, since=D0, as_of=as_of,
                                target_grants=grants[p.key]) for p in sample]

    def base() -> list[float | None]:
        return [baseline_adoption(tf.usage, p, start, end) for p in sample]

    ad_s, ad = timed(wk_adoption)
    all_s, everything = timed(wk_all)
    base_s, expected = timed(base)
    if ad != expected or [m["adoption"] for m in everything] != expected:
        raise AssertionError(f"adoption differs: wavekit {ad}, baseline {expected}")
    per = len(sample)
    size = f"{rows:,} telemetry rows ({len(tf.usage):,} usage), {n_packages} packages"
    return [
        Result("d. adoption, per package", size, ad_s / per, base_s / per,
               note=f"wavekit: metrics.adoption; baseline: per-row loop over usage; "
                    f"mean of {per} packages"),
        Result("d. all six metrics, per package", size, all_s / per, base_s / per,
               note="wavekit: measure_package (all six metrics); baseline computes adoption "
                    "only, so this ratio understates wavekit"),
    ]


# ------------------------------------------------------------------ report


def render_table(results: Sequence[Result]) -> str:
    """The results as a Markdown table with COLUMNS as its header."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |"
              for r in results]
    return "\n".join(lines) + "\n"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"Python {platform.python_version()}"]
    for dist in ("wavekit", "prefect", "pandas", "sqlalchemy", "ldap3", "httpx", "scim2-server",
                 "psycopg2-binary"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            continue
    return ", ".join(out)


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(Fraction(part)) for part in text.split(","))


def render_report(results: Sequence[Result], *, quick: bool, elapsed: float,
                  extra: Sequence[str] = (), command: str | None = None) -> str:
    """The whole results.md: what ran, where, and the table."""
    mode = "quick (--quick, smaller sizes)" if quick else "full"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        "# wavekit benchmarks\n\n"
        f"Generated by `{command or 'python -m benchmarks.run' + (' --quick' if quick else '')}`"
        " "
        f"on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; mode: {mode}; total {elapsed:.0f} s.\n\n"
        f"Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPU(s); "
        f"load average at the end {load} (1, 5, 15 min). {_versions()}.\n\n"
        "Each row times wavekit and a baseline in the same run on the same data; P1 and P2 "
        "rows are medians of interleaved repetitions against the best raw client. Read the "
        "ratio (baseline / wavekit: above 1 = wavekit faster, 0.5x = wavekit takes twice "
        "as long), not the seconds. Peak memory: tracemalloc in a separate, untimed run "
        "(rows a-d) or the nightly child process's peak RSS (P3).\n\n"
        + render_table(results)
        + ("\n" + "\n".join(extra) + "\n" if extra else "")
    )


def _scale(fraction: float) -> str:
    return "" if fraction == 1 else f", 1/{1 / fraction:g} scale"


def bench_targets(sizes: Sizes, which: str, extra: list[str] | None = None) -> list[Result]:
    """P1 (at every size of sizes.p1_fractions, with the scaling exponents) and P2 at target
    level against the raw clients (benchmarks/targets.py)."""
    from benchmarks import targets
    from benchmarks.nightly import exponent
    from wavekit.devservers.scim import ScimServerUnavailable
    from wavekit.devservers.slapd import SlapdUnavailable

    results: list[Result] = []
    try:
        if which == "p2-rollback":
            row = targets.ldap_rollback(sizes.p2_members, reps=sizes.reps)
            return [Result(f"P2 LDAP rollback + read-back vs {client}",
                           f"{sizes.p2_members:,} members x 2 entitlements", row.wavekit_s, raw,
                           note=f"{row.note}; median of {sizes.reps}")
                    for client, raw in row.raw_s.items()]
        kind = "LDAP" if which == "p1-ldap" else "SCIM"
        g = sizes.p1_groups
        grants: list[float] = []
        seconds: dict[str, list[float]] = {}
        with ExitStack() as stack:
            server = None
            if kind == "SCIM":  # one server, a fresh tenant (an empty directory) per size
                from wavekit.devservers.scim import run_local_scim_server

                server = stack.enter_context(run_local_scim_server())
            for fraction in sizes.p1_fractions:
                m = max(1, round(sizes.p1_members * fraction))
                print(f"  P1 {kind} at {fraction:g} ...", file=sys.stderr, flush=True)
                # LDAP: a slapd per size (starting one takes about a second)
                row = (targets.ldap_apply(g, m, sizes.reps) if kind == "LDAP"
                       else targets.scim_apply(g, m, sizes.reps, server))
                results += [Result(
                    f"P1 {kind} apply (Target.apply){_scale(fraction)} vs {client}",
                    f"{g} groups x {m:,} members ({g * m:,} grants)", row.wavekit_s, raw,
                    note=f"{row.note}; median of {sizes.reps}")
                    for client, raw in row.raw_s.items()]
                grants.append(g * m)
                for who, t in [("wavekit", row.wavekit_s), *row.raw_s.items()]:
                    seconds.setdefault(who, []).append(t)
        if len(grants) > 1 and extra is not None:
            extra.append(f"P1 {kind} scaling exponent (time ~ grants^k over "
                         f"{', '.join(f'{n:,.0f}' for n in grants)} grants; 1 = linear): "
                         + ", ".join(f"{who} {exponent(grants, t):.2f}"
                                     for who, t in seconds.items()))
    except (SlapdUnavailable, ScimServerUnavailable) as exc:
        results.append(Result(which, "-", None, note=f"skipped: {exc}"))
    return results


def bench_nightly(sizes: Sizes, work: Path, extra: list[str]) -> list[Result]:
    """P3: plan_from_store at three sizes on SQLite and PostgreSQL, with the exponent."""
    from benchmarks import nightly

    results: list[Result] = []
    cluster = nightly.PostgresCluster()
    backends: list[tuple[str, str | None]] = [("SQLite", None)]
    try:
        pg_url = cluster.start()
    except Exception as exc:  # no cluster: say so in the table, keep SQLite
        pg_url, extra = None, [*extra, f"PostgreSQL did not start: {exc}"]
    backends.append(("PostgreSQL", pg_url))
    for backend, url in backends:
        if backend == "PostgreSQL" and url is None:
            results.append(Result("P3 nightly plan, PostgreSQL", "-", None,
                                  note="skipped: PostgreSQL is not installed "
                                       "(scripts/system-deps.sh)"))
            continue
        fractions: list[float] = []
        seconds: list[float] = []
        for fraction in sizes.p3_fractions:
            db = url or f"sqlite:///{work / f'nightly-{fraction:.4f}.db'}"
            print(f"  P3 {backend} at {fraction:g} ...", file=sys.stderr, flush=True)
            store = nightly.build_store(db, work, fraction)
            got = nightly.timed_in_child(store, work, sizes.reps)
            note = (f"plan_from_store, median of {sizes.reps}; store setup "
                    f"{store.setup_s:.0f} s, not counted")
            base: float | None = None
            if fraction == sizes.p3_fractions[0]:
                old = nightly.timed_in_child(store, work, 1, per_package=True)
                base = old["seconds"]
                note += ("; baseline: the same plan loading telemetry package by package "
                         "(the per-package path, timestamps already vectorised)")
            results.append(Result(f"P3 nightly plan, {backend}, 1/{1 / fraction:g} scale",
                                  store.size, got["seconds"], base,
                                  wavekit_peak_mib=got["rss_mib"], note=note))
            fractions.append(store.grants)
            seconds.append(got["seconds"])
        if len(fractions) > 1:
            k = nightly.exponent(fractions, seconds)
            extra.append(f"P3 scaling exponent on {backend}: {k:.2f} (time ~ grants^k over "
                         f"{', '.join(f'{n:,}' for n in fractions)} grants; 1 = linear"
                         + ("; at quick sizes the fixed cost of a run dominates)"
                            if sizes.p3_fractions == QUICK.p3_fractions else ")"))
    cluster.stop()
    if pg_url:
        extra.append(cluster.version())
    return results


def bench_flow(sizes: Sizes, work: Path, prefect: Callable[[], None]) -> list[Result]:
    """P1 whole flow: release_wave on slapd and scim2-server vs the raw client
    (benchmarks/flows.py)."""
    from benchmarks import flows
    from wavekit.devservers.scim import ScimServerUnavailable
    from wavekit.devservers.slapd import SlapdUnavailable

    g, m, n = sizes.p1_groups, sizes.flow_members, sizes.flow_packages
    size = f"{g} groups x {m:,} members ({g * m:,} grants), {n} package{'s' * (n > 1)}"
    results = []
    for kind, name, client in (("ldap", "LDAP", "ldap3"), ("scim", "SCIM", "httpx PATCH")):
        print(f"  P1 whole flow on {name} ...", file=sys.stderr, flush=True)
        try:
            row = flows.p1_flow(kind, g, m, n, sizes.flow_reps, work, prefect)
        except (SlapdUnavailable, ScimServerUnavailable) as exc:
            results.append(Result(f"P1 whole flow, {name}", "-", None, note=f"skipped: {exc}"))
            continue
        results.append(Result(
            f"P1 whole flow (release_wave), {name} vs {client}", size, row.wavekit_s,
            row.raw_s, note=f"{row.note}; target >= 0.5x raw; wall time outside wavekit's "
            f"functions (Prefect): {row.outside_s:.1f} s of {row.wavekit_s:.1f} s"))
    return results


def bench_p4(sizes: Sizes, work: Path, prefect: Callable[[], None], extra: list[str]
             ) -> list[Result]:
    """P4: a wave of sizes.p4_packages packages on the sandbox to Stable, Prefect included,
    on SQLite and PostgreSQL, with Prefect's share of the time (benchmarks/flows.py)."""
    from benchmarks import flows, nightly

    results: list[Result] = []
    cluster = nightly.PostgresCluster()
    pg_url = None
    if "PostgreSQL" in sizes.p4_stores:
        try:
            pg_url = cluster.start()
        except Exception as exc:  # no cluster: say so, keep SQLite
            extra.append(f"P4: PostgreSQL did not start: {exc}")
    stores = {"SQLite": f"sqlite:///{work / 'p4.db'}", "PostgreSQL": pg_url}
    try:
        for backend in sizes.p4_stores:
            url = stores[backend]
            name = f"P4 wave to Stable, {backend}"
            if url is None:
                results.append(Result(name, "-", None, note="skipped: PostgreSQL is not "
                                      "installed (scripts/system-deps.sh)"))
                continue
            print(f"  P4 on {backend} ...", file=sys.stderr, flush=True)
            try:
                row = flows.p4_wave(url, sizes.p4_packages, sizes.p4_members,
                                    sizes.p4_entitlements, work, prefect,
                                    name=backend.lower(), watch_days=sizes.p4_watch_days)
            except Exception as exc:  # e.g. the test server answering 503 under 50 packages
                reason = str(exc).splitlines()[0][:200]
                results.append(Result(name, f"{sizes.p4_packages} packages", None, note=(
                    f"failed: {type(exc).__name__}: {reason}")))
                continue
            by_subtraction = 1 - row.plain_s / row.flow_s
            met = ("met" if row.flow_s <= P4_TARGET_S else "missed") \
                if sizes.p4_packages >= 50 else "applies at 50 packages"
            results.append(Result(
                name, f"{sizes.p4_packages} packages, {row.grants:,} grants, Stable on "
                f"simulated day {row.days}", row.flow_s, row.plain_s, note=(
                    f"trigger to every package Stable: release_wave twice (owners pre-approved "
                    f"between, unverified) then watch_packages once per simulated day "
                    f"(ManualClock, no sleeping), healthy scripted metrics; target <= "
                    f"{P4_TARGET_S:.0f} s: {met}; baseline: the same domain calls without "
                    f"Prefect, one thread, fresh store (benchmarks/flows.py plain_wave, "
                    f"plain_watch); Prefect share {by_subtraction:.0%} by subtraction "
                    f"(1 - baseline / wavekit), {row.outside_s / row.flow_s:.0%} by wrapping "
                    f"(wall time when no thread was inside a wavekit domain/store function; "
                    f"a lower bound)")))
    finally:
        cluster.stop()
    return results


def run(sizes: Sizes, only: set[str] | None = None, extra: list[str] | None = None
        ) -> list[Result]:
    """Run the selected benchmarks (STEPS) at `sizes`; notes for under the table go to extra."""
    chosen = only or set(STEPS)
    notes = extra if extra is not None else []
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="wavekit-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        prefect = PrefectServer(stack)  # started by the first step that runs a flow
        steps: list[tuple[str, Callable[[], list[Result]]]] = [
            ("p1-ldap", lambda: bench_targets(sizes, "p1-ldap", notes)),
            ("p1-scim", lambda: bench_targets(sizes, "p1-scim", notes)),
            ("p1-flow", lambda: bench_flow(sizes, work, prefect)),
            ("p2-rollback", lambda: bench_targets(sizes, "p2-rollback")),
            ("p3-nightly", lambda: bench_nightly(sizes, work, notes)),
            ("p4-wave", lambda: bench_p4(sizes, work, prefect, notes)),
            ("catalog", lambda: bench_catalog(sizes.identities, sizes.packages, work,
                                              write_sample=sizes.write_sample)),
            ("sandbox", lambda: bench_sandbox(sizes.sandbox_grants, sizes.sandbox_single, work)),
            ("ldap", lambda: bench_ldap(sizes.ldap_members)),
            ("metrics", lambda: bench_metrics(sizes.telemetry_packages)),
        ]
        for name, step in steps:
            if name in chosen:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                began = time.perf_counter()
                results += step()
                print(f"  {name}: {time.perf_counter() - began:.0f} s", file=sys.stderr,
                      flush=True)
        if prefect.started_s is not None:
            notes.append(f"Prefect: a temporary server (prefect_test_harness), started in "
                         f"{prefect.started_s:.0f} s, not counted.")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (CI smoke, < 2 min)")
    parser.add_argument("--only", action="append", choices=list(STEPS),
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--p1-sizes", type=_fractions, default=None, metavar="1/16,1/4,1",
                        help="P1 apply sizes as fractions of 2,000 members per group")
    parser.add_argument("--p3-sizes", type=_fractions, default=None, metavar="1/16,1/4,1",
                        help="P3 sizes as fractions of 100k identities / 500 packages")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help=f"Markdown file to write (default {RESULTS})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    extra: list[str] = []
    sizes = QUICK if args.quick else FULL
    if args.p1_sizes:
        sizes = replace(sizes, p1_fractions=args.p1_sizes)
    if args.p3_sizes:
        sizes = replace(sizes, p3_fractions=args.p3_sizes)
    results = run(sizes, set(args.only) if args.only else None, extra)
    report = render_report(results, quick=args.quick, elapsed=time.perf_counter() - started,
                           extra=extra, command=" ".join(["python -m benchmarks.run",
                                                          *(argv or sys.argv[1:])]))
    args.output.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
