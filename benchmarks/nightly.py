"""P3: the nightly maintenance plan over a synthetic catalog deployed at scale.

The store is written directly (catalog, one deployed release per package, the sandbox's
grants in bulk, a month of telemetry through ingest_frame): deploying through the flow would
take many minutes at full size and is P1's subject, not this one's. Only `plan_from_store`
is timed: the nightly run's own work (measure every live package, plan the backlog).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import insert, update

from wavekit.adapters.catalog import load_catalog, write_catalog
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store.engine import reset_store, session_scope
from wavekit.adapters.store.models import Release, RolePackage, SandboxGrant
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.adapters.telemetry import ingest_frame
from wavekit.examples.synth import generate_catalog
from wavekit.examples.synth_telemetry import generate_telemetry
from wavekit.workflow.runtime import build_runtime

LAUNCH = datetime(2026, 4, 8, tzinfo=UTC)
FULL_IDENTITIES, FULL_PACKAGES = 100_000, 500
MEMBERS = (20, 780)  # avg 400 members x avg 10 entitlements: 2M grants at full size


@dataclass(frozen=True)
class NightlyStore:
    url: str
    identities: int
    packages: int
    grants: int
    telemetry_rows: int
    setup_s: float

    @property
    def size(self) -> str:
        return (f"{self.identities:,} identities, {self.packages} packages, "
                f"{self.grants:,} grants, {self.telemetry_rows:,} telemetry rows")


def build_store(url: str, workdir: Path, fraction: float, *, days: int = 31) -> NightlyStore:
    """A store whose packages all went live at LAUNCH, `days` of telemetry from 28 days before."""
    started = time.perf_counter()
    identities = max(int(FULL_IDENTITIES * fraction), 500)
    packages = max(int(FULL_PACKAGES * fraction), 4)
    directory = workdir / f"nightly-catalog-{packages}"
    generate_catalog(directory, identities=identities, packages=packages,
                     members_per_package=MEMBERS)
    cat = load_catalog(directory)
    reset_store(url)
    with session_scope(url) as s:
        write_catalog(s, cat, source="benchmark")
    live = [p for p in cat.packages if p.members]
    with session_scope(url) as s:
        conn = s.connection()
        conn.execute(insert(Release), [dict(
            package_key=p.key, wave=p.wave, started_at=LAUNCH, approved_at=LAUNCH,
            deploy_started_at=LAUNCH, deployed_at=LAUNCH,
            watch_ends_at=LAUNCH + timedelta(days=p.watch_days),
            next_check_at=LAUNCH + timedelta(hours=1),
            adds=len(p.members) * len(p.entitlements)) for p in live])
        conn.execute(update(RolePackage).where(
            RolePackage.key.in_([p.key for p in live]))  # type: ignore[attr-defined]
            .values(state="watching"))
        members = [(m, e) for p in live for m in p.members for e in p.entitlements]
        frame = pd.DataFrame(members, columns=["identity", "entitlement"]).drop_duplicates()
        records = [{"sandbox": "default", "identity": i, "entitlement": e}
                   for i, e in frame.itertuples(index=False, name=None)]
        for i in range(0, len(records), 50_000):
            conn.execute(insert(SandboxGrant), records[i:i + 50_000])
    frames = generate_telemetry(url, start=LAUNCH - timedelta(days=28), deployed_at=LAUNCH,
                                days=days, seed=3)
    rows = 0
    for kind, df in frames.items():
        rows += ingest_frame(url, kind, df, source="benchmark")
    return NightlyStore(url, identities, len(live), len(records), rows,
                        time.perf_counter() - started)


def nightly_runtime(store: NightlyStore, workdir: Path):  # type: ignore[no-untyped-def]
    settings = load_settings(database_url=store.url, data_dir=workdir)
    return build_runtime(settings, target=SandboxTarget(store.url))


def as_of(days: int = 31) -> datetime:
    """The night the plan is made: two hours into the last telemetry day."""
    return LAUNCH + timedelta(days=days - 28 - 1, hours=2)


def exponent(sizes: list[float], seconds: list[float]) -> float:
    """The least-squares slope of log(time) over log(size): 1 = linear."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def time_plan(store: NightlyStore, workdir: Path, reps: int, *, per_package: bool = False
              ) -> dict[str, float]:
    """Median seconds of `reps` plan_from_store runs and this process's peak RSS in MiB.

    Run it in a child process (see main) so the RSS is the nightly run's, not the setup's.
    `per_package`: hide measure_live, so the metrics load telemetry package by package.
    """
    import statistics

    from wavekit.workflow.maintenance import plan_from_store

    rt = nightly_runtime(store, workdir)
    if per_package:
        rt.metrics.measure_live = None  # type: ignore[method-assign]
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        plan_from_store(rt, as_of())
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "rss_mib": _peak_rss_mib()}


def _peak_rss_mib() -> float:
    """This process's peak RSS since exec (VmHWM): getrusage's ru_maxrss would carry the
    parent's peak over fork and exec, and the parent built the store."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_in_child(store: NightlyStore, workdir: Path, reps: int, *, per_package: bool = False
                   ) -> dict[str, float]:
    """time_plan in a fresh interpreter: its peak RSS is the nightly run's alone."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.nightly", store.url, str(workdir), str(reps),
         "per-package" if per_package else "shared"],
        check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> None:
    import json

    url, workdir, reps, how = argv
    store = NightlyStore(url, 0, 0, 0, 0, 0.0)
    print(json.dumps(time_plan(store, Path(workdir), int(reps),
                               per_package=how == "per-package")))


class PostgresCluster:
    """A throwaway PostgreSQL cluster on loopback, as the tests start one
    (tests/support/postgres.py); None from start() when PostgreSQL is not installed."""

    def __init__(self) -> None:
        self.tmp: str | None = None
        self.bindir: str | None = None

    def start(self) -> str | None:
        import os
        import pwd
        import subprocess
        import tempfile

        from tests.support.postgres import _as_postgres, _pg_bin
        from tests.support.servers import free_port

        self.bindir = _pg_bin()
        if not self.bindir:
            return None
        self.tmp = tempfile.mkdtemp(prefix="wavekit-bench-pg-")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        data, port = os.path.join(self.tmp, "data"), free_port()
        subprocess.run(_as_postgres([f"{self.bindir}/initdb", "-D", data, "-A", "trust",
                                     "-U", "wavekit", "--no-sync"]), check=True,
                       capture_output=True)
        subprocess.run(_as_postgres([f"{self.bindir}/pg_ctl", "-D", data, "-w", "-l",
                                     os.path.join(self.tmp, "log"), "-o",
                                     f"-p {port} -k {self.tmp} -c listen_addresses=127.0.0.1 "
                                     "-F", "start"]), check=True, capture_output=True)
        subprocess.run(_as_postgres([f"{self.bindir}/createdb", "-h", "127.0.0.1", "-p",
                                     str(port), "-U", "wavekit", "wavekit"]), check=True,
                       capture_output=True)
        return f"postgresql+psycopg2://wavekit@127.0.0.1:{port}/wavekit"

    def version(self) -> str:
        import subprocess

        if not self.bindir:
            return "-"
        return subprocess.run([f"{self.bindir}/postgres", "--version"], capture_output=True,
                              text=True).stdout.strip()

    def stop(self) -> None:
        import os
        import shutil
        import subprocess

        from tests.support.postgres import _as_postgres

        if self.tmp and self.bindir:
            subprocess.run(_as_postgres([f"{self.bindir}/pg_ctl", "-D",
                                         os.path.join(self.tmp, "data"), "-m", "immediate",
                                         "stop"]), capture_output=True)
            shutil.rmtree(self.tmp, ignore_errors=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
