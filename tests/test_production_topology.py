"""The production topology, end to end on real parts: the release manager's real path.

One PostgreSQL (two databases: Prefect's and the wavekit store), `prefect server start` on
it, a process work pool `wavekit` with a worker in its own process, and prefect.yaml's
deployments registered by `prefect deploy --all`. The server's scheduler must create runs of
a deployment by itself and the worker must complete one (what Prefect 3.8.8 never did). Then
a release manager starts release-wave for wave 1 through the API: every package becomes its
own roll-out-package run that suspends at the owner handoff (no process waits for owners);
the owners' decisions resume them: the approved package is deployed to the sandbox and
watched, the rejected one is held and nothing is written for it.

The server requires basic auth (PREFECT_SERVER_API_AUTH_STRING), as the README tells
production to run it: every client (worker and its flow runs, `prefect deploy`, the CLI, the
test's own API calls) passes PREFECT_API_AUTH_STRING, and a call without it is refused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import select

from tests.support.prefect_server import AUTH_STRING
from tests.support.servers import free_port, missing_server
from wavekit.adapters.catalog import load_catalog
from wavekit.adapters.store.bundles import load_bundle
from wavekit.adapters.store.engine import get_engine, session_scope
from wavekit.adapters.store.models import Approval, Release, RolePackage
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.examples import EXAMPLE_CATALOG, record_example_drills, seed_target

pytestmark = pytest.mark.slow

# Computed from this file so CI (an installed checkout) and a worktree both run their own code.
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYCACHE = Path(tempfile.gettempdir()) / "wavekit-test-pycache"
RELEASE_MANAGER = "U0RELMGR1"  # triggers the wave; owns no package, approves nothing
REJECTED = "hr-case-intake-specialist"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# ------------------------------------------------------------------ processes and logs


class Broken(Exception):
    """Waiting is pointless: a process of the topology exited or a run ended too early."""


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (the worker's flow-run processes), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _flow_run_of(pid: int) -> str | None:
    """The flow run a process executes (the worker passes PREFECT__FLOW_RUN_ID), if any."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"PREFECT__FLOW_RUN_ID="):
            return item.split(b"=", 1)[1].decode()
    return None


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class Topology:
    """The processes of the test, each logging to its own file, stopped in reverse order."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.home = tmp / "prefect-home"
        self.home.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api"
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment (no ambient PREFECT_* or WAVEKIT_*) that runs this checkout,
        with the secret of the server's basic auth (every process here is a client of it)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_", "WAVEKIT_"))}
        path = [str(ROOT / "src"), str(ROOT)]
        if os.environ.get("PYTHONPATH"):
            path.append(os.environ["PYTHONPATH"])
        # Each flow run is a fresh process. Where the venv holds no bytecode and
        # PYTHONDONTWRITEBYTECODE forbids writing it, every one would compile Prefect from
        # source (~8 s of CPU each): keep the bytecode in a cache outside the checkout.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
        env.update(PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1",
                   PREFECT_HOME=str(self.home), PREFECT_API_URL=self.api,
                   PREFECT_SERVER_UI_API_URL=self.api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PREFECT_CLI_PROMPT="false", PREFECT_LOGGING_LEVEL="INFO",
                   PREFECT_API_AUTH_STRING=AUTH_STRING, **extra)
        return env

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=ROOT)
        self.procs.append((name, proc))
        return proc

    def finish(self, proc: subprocess.Popen, timeout: float = 120) -> None:
        """Wait for a command to end; fail if it does not succeed."""
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            raise AssertionError(f"{' '.join(map(str, proc.args))} ended with {code}")

    def tails(self, chars: int = 4000) -> str:
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            body = log.read_text(errors="replace")
            parts.append(f"----- {log.name} (last {chars} chars) -----\n{body[-chars:]}")
        return "\n".join(parts)

    def stop_all(self, grace: float = 10.0) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            spawned = _descendants(proc.pid) if Path("/proc").is_dir() else []
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            alive = [p for p in spawned if Path(f"/proc/{p}").exists()]
            _signal(alive, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while alive and time.monotonic() < deadline:
                time.sleep(0.2)
                alive = [p for p in alive if Path(f"/proc/{p}").exists()]
            _signal(alive, signal.SIGKILL)


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    if not (BIN / "prefect").exists():
        missing_server(f"the prefect console script is not installed in {BIN}")
    top = Topology(tmp_path)
    try:
        yield top
    finally:
        top.stop_all()


@pytest.fixture
def databases(postgres_url: str) -> Iterator[tuple[str, str]]:
    """Two fresh databases on the test PostgreSQL: (Prefect's asyncpg URL, the store's URL)."""
    base = make_url(postgres_url)
    suffix = uuid.uuid4().hex[:8]
    names = (f"prefect_{suffix}", f"wavekit_{suffix}")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        for name in names:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield (base.set(drivername="postgresql+asyncpg", database=names[0])
               .render_as_string(hide_password=False),
               base.set(database=names[1]).render_as_string(hide_password=False))
    finally:
        get_engine(base.set(database=names[1]).render_as_string(hide_password=False)
                   ).dispose()
        with admin.connect() as c:
            for name in names:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ------------------------------------------------------------------ Prefect API helpers


def _runs_of(client: Any, deployment_id: uuid.UUID) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    return client.read_flow_runs(flow_run_filter=FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])))


def _state(run: Any) -> tuple[str | None, str | None]:
    return (run.state.type.value, run.state.name) if run.state else (None, None)


# ------------------------------------------------------------------ the test


def test_wave_1_on_the_production_topology(databases: tuple[str, str],
                                           topology: Topology) -> None:
    # databases first: they are dropped after every process of the topology has stopped.
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    try:
        _production_path(topology, *databases, timings, t0)
    except Exception as exc:  # with the logs of every process of the topology
        raise AssertionError(f"{exc}\n\ntimings: {timings}\n\n{topology.tails()}") from exc
    timings["total"] = round(time.monotonic() - t0, 1)
    print("timings (s):", timings)


def _production_path(top: Topology, prefect_db: str, store: str,
                     timings: dict[str, float], t0: float) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    def mark(what: str) -> None:
        timings[what] = round(time.monotonic() - t0, 1)

    prefect = str(BIN / "prefect")
    flows_env = {"WAVEKIT_DATABASE_URL": store, "WAVEKIT_TARGET": "sandbox",
                 "WAVEKIT_DATA_DIR": str(top.tmp / "wavekit-data"),
                 "WAVEKIT_PREFECT_UI_URL": top.url,
                 # Local mode: the test types no one-time code (tests/test_ui_approvals.py
                 # proves the codes); decisions are recorded as unverified.
                 "WAVEKIT_APPROVALS_UNVERIFIED": "true"}

    # 1-2. The Prefect server on its PostgreSQL database, behind basic auth; meanwhile the
    # store, where the release manager loads the catalog (the sandbox holds the access people
    # have today).
    server = top.start("prefect-server", [prefect, "server", "start", "--host", "127.0.0.1",
                                          "--port", str(top.port)],
                       top.env(PREFECT_SERVER_DATABASE_CONNECTION_URL=prefect_db,
                               PREFECT_SERVER_API_AUTH_STRING=AUTH_STRING))
    top.finish(top.start("wavekit-load", [sys.executable, "-m", "wavekit.present.cli", "load",
                                          str(EXAMPLE_CATALOG)], top.env(**flows_env)))
    seed_target(SandboxTarget(store))
    # The example world's signed manual rollback drills (`wavekit drill ... --signed-by`): a
    # medium-risk package without a recorded drill is held at its rollback_drill gate.
    record_example_drills(store, datetime.now(UTC) - timedelta(hours=1))
    catalog = load_catalog(EXAMPLE_CATALOG)
    owners = {p.key: p.owner_slack_id for p in catalog.packages if p.wave == 1}
    assert len(owners) >= 2 and REJECTED in owners, owners
    assert RELEASE_MANAGER not in {
        sid for p in catalog.packages
        for sid in [p.owner_slack_id, *(d.get("slack_id") for d in p.delegates)]}
    with session_scope(store) as s:
        scope = load_package_view(s, REJECTED).scope
    before_rejected = SandboxTarget(store).read_grants(scope)
    mark("store loaded")

    def healthy() -> bool:
        if server.poll() is not None:
            raise Broken(f"prefect server exited with {server.returncode}")
        return httpx.get(f"{top.api}/health", timeout=2).status_code == 200
    _wait(healthy, 120, "prefect server healthy on PostgreSQL", every=0.5)
    mark("server healthy")
    # Without the secret (or with a wrong one) the API refuses; /health alone stays open.
    user, _ = AUTH_STRING.split(":", 1)
    for auth in (None, (user, "not-the-secret")):
        refused = httpx.post(f"{top.api}/flow_runs/filter", json={}, auth=auth, timeout=10)
        assert refused.status_code == 401, (auth, refused.status_code, refused.text[:200])
    top.finish(top.start("work-pool", [prefect, "work-pool", "create", "wavekit",
                                       "--type", "process"], top.env()))

    # 3-4. The worker (its own process) and prefect.yaml's deployments.
    worker = top.start("worker", [prefect, "worker", "start", "--pool", "wavekit",
                                  "--name", "topology-worker"],
                       top.env(PREFECT_WORKER_QUERY_SECONDS="2", **flows_env))
    top.finish(top.start("deploy", [prefect, "--no-prompt", "deploy", "--all"], top.env()),
               timeout=240)
    mark("deployed")

    with temporary_settings(updates={PREFECT_API_URL: top.api,
                                     PREFECT_API_AUTH_STRING: AUTH_STRING}), \
            get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
        assert set(deployments) >= {"release-wave", "roll-out-package", "rollback-package",
                                    "watch-packages", "approval-deadlines",
                                    "nightly-maintenance"}, sorted(deployments)
        for d in deployments.values():
            assert d.work_pool_name == "wavekit", (d.name, d.work_pool_name)
            assert d.pull_steps == [{"wavekit.project.set_project_directory": {}}], d.pull_steps
        # prefect.yaml's production schedules are registered unchanged.
        production = {name: [s.schedule for s in deployments[name].schedules]
                      for name in ("watch-packages", "approval-deadlines",
                                   "nightly-maintenance")}
        assert [s.interval for s in production["watch-packages"]] == [timedelta(hours=1)]
        assert [s.interval for s in production["approval-deadlines"]] == [
            timedelta(minutes=15)]
        assert [(s.cron, s.timezone) for s in production["nightly-maintenance"]] == [
            ("0 2 * * *", "UTC")]

        # The scheduler must create runs by itself: a fast extra schedule, test-only, first
        # due in a few seconds (prefect.yaml keeps its production schedules).
        sweep = deployments["approval-deadlines"]
        (fast,) = client.create_deployment_schedules(sweep.id, [(IntervalSchedule(
            interval=timedelta(seconds=30),
            anchor_date=datetime.now(UTC) + timedelta(seconds=10)), True)])

        # 5. The release manager starts wave 1 through the API.
        wave_run = run_deployment("release-wave/release-wave", timeout=0,
                                  parameters={"wave": 1, "requested_by": RELEASE_MANAGER})
        mark("wave triggered")

        # 4 (cont.) and 6, watched together: the scheduler's runs of the fast schedule (once
        # the worker has taken one, the schedule is deleted: one such run is enough, and its
        # not-yet-started runs go with it) must complete, and every package of wave 1 must be
        # its own run, suspended at the owner handoff.
        scheduled: list[Any] = []
        package_runs: dict[str, Any] = {}

        def progress() -> bool:
            if worker.poll() is not None:
                raise Broken(f"the worker exited with {worker.returncode}")
            if "scheduled run completed" not in timings:
                scheduled[:] = [r for r in _runs_of(client, sweep.id)
                                if str(fast.id) in (r.idempotency_key or "")]
                taken = [r for r in scheduled if _state(r)[0] not in (None, "SCHEDULED")]
                if taken and "scheduled run taken" not in timings:
                    client.delete_deployment_schedule(sweep.id, fast.id)
                    mark("scheduled run taken")
                if any(_state(r)[0] in TERMINAL - {"COMPLETED"} for r in taken):
                    raise Broken(f"a scheduled run did not complete: {taken}")
                if any(_state(r)[0] == "COMPLETED" for r in taken):
                    mark("scheduled run completed")
            package_runs.update({r.parameters["package_key"]: r for r in
                                 _runs_of(client, deployments["roll-out-package"].id)})
            for key, r in package_runs.items():
                if _state(r)[0] in TERMINAL:
                    raise Broken(f"{key} ended before its handoff was decided: {_state(r)} "
                                 f"{r.state.message}")
            suspended = set(package_runs) == set(owners) and all(
                _state(r) == ("PAUSED", "Suspended") for r in package_runs.values())
            if suspended and "all suspended" not in timings:
                mark("all suspended")
            return suspended and "scheduled run completed" in timings
        _wait(progress, 240, "a scheduled run completed and every wave 1 package run "
              "suspended at the handoff",
              lambda: {"scheduled": [(r.name, r.auto_scheduled, _state(r)) for r in scheduled],
                       "packages": {k: _state(r) for k, r in package_runs.items()}})
        assert scheduled and all(r.auto_scheduled for r in scheduled), scheduled
        assert all(r.work_pool_name == "wavekit" for r in scheduled)

        # The scheduler also lined up runs for prefect.yaml's own interval and cron schedules.
        def upcoming() -> dict[str, bool]:
            return {name: all(any(str(sch.id) in (r.idempotency_key or "") and r.auto_scheduled
                                  for r in _runs_of(client, deployments[name].id))
                              for sch in deployments[name].schedules)
                    for name in ("watch-packages", "nightly-maintenance")}
        _wait(lambda: all(upcoming().values()), 90, "upcoming runs of prefect.yaml's schedules",
              upcoming)

        wave_done = client.read_flow_run(wave_run.id)
        assert _state(wave_done)[0] == "COMPLETED", _state(wave_done)
        assert wave_done.parameters["requested_by"] == RELEASE_MANAGER
        for key, run in package_runs.items():
            assert run.name == f"{key} · wave 1", run.name
            assert run.parameters == {"package_key": key, "wave": 1,
                                      "requested_by": RELEASE_MANAGER}
            # A top-level run: Prefect suspends no subflow.
            assert run.parent_task_run_id is None, key
        with session_scope(store) as s:
            approvals = {a.package_key: a for a in s.exec(select(Approval))}
            releases = {r.package_key: r for r in s.exec(select(Release))}
            states = {k: s.get(RolePackage, k).state for k in owners}
        assert set(approvals) == set(owners), "one owner handoff per package"
        assert all(a.decided_at is None for a in approvals.values())
        assert {k: a.flow_run_id for k, a in approvals.items()} == {
            k: str(r.id) for k, r in package_runs.items()}
        assert {r.triggered_by for r in releases.values()} == {RELEASE_MANAGER}
        assert set(states.values()) == {"awaiting_handoff"}, states

        # No process waits for owners: none of the worker's processes runs a suspended run.
        if Path("/proc").is_dir():
            suspended_ids = {str(r.id) for r in package_runs.values()}

            def released() -> bool:
                return not {_flow_run_of(p) for p in _descendants(worker.pid)} & suspended_ids
            _wait(released, 60, "suspended runs' processes exited",
                  lambda: [_flow_run_of(p) for p in _descendants(worker.pid)])

        # 7. The owners decide through the approval path: the run input resumes each run.
        for key, run in package_runs.items():
            decision = "reject" if key == REJECTED else "approve"
            comment = "needs another review of the intake queue" if key == REJECTED else "ok"
            resume_flow_run(run.id, run_input={"decision": decision, "code": "",
                                               "approver": owners[key], "comment": comment})
        mark("decided")

        final: dict[str, Any] = {}

        def all_finished() -> bool:
            final.update({k: client.read_flow_run(r.id) for k, r in package_runs.items()})
            return all(_state(r)[0] in TERMINAL for r in final.values())
        _wait(all_finished, 180, "every package run finished after its owner's decision",
              lambda: {k: _state(r) for k, r in final.items()})
        mark("finished")

    # 8. Approved packages are deployed and watched; the rejected one is held, untouched.
    with session_scope(store) as s:
        packages = {k: s.get(RolePackage, k) for k in owners}
        approvals = {a.package_key: a for a in s.exec(select(Approval))}
        releases = {r.package_key: r for r in s.exec(select(Release))}
        plans = {k: load_bundle(s, releases[k].id, k) for k in owners}
    sandbox = SandboxTarget(store)
    for key, pkg in packages.items():
        approval, release, run = approvals[key], releases[key], final[key]
        assert approval.approver == owners[key], (key, approval.approver)
        assert approval.flow_run_id == str(run.id)
        if key == REJECTED:
            assert pkg.state == "held", (key, pkg.state, pkg.state_reason)
            assert approval.decision == "rejected"
            assert "needs another review" in (pkg.state_reason or ""), pkg.state_reason
            assert _state(run) == ("FAILED", "Held"), _state(run)
            assert release.deploy_started_at is None and release.applied_batches == 0
            assert sandbox.read_grants(scope) == before_rejected, "nothing written"
            continue
        assert pkg.state == "watching", (key, pkg.state, pkg.state_reason)
        assert (approval.decision, approval.comment) == ("approved", "ok")
        assert release.approved_by == owners[key] and release.deployed_at is not None
        assert _state(run)[0] == "COMPLETED", (key, _state(run), run.state.message)
        plan = plans[key]
        assert plan is not None and plan.adds, key
        on_target = sandbox.read_grants(plan.scope)
        assert plan.adds <= on_target, f"{key}: planned grants missing on the sandbox"
        assert not plan.removes & on_target, f"{key}: removed grants still on the sandbox"


def _wait(check: Callable[[], bool], timeout: float, what: str,
          show: Callable[[], Any] = lambda: None, every: float = 1.0) -> None:
    """Poll `check` every `every` s; fail with what was last seen after `timeout` s.

    Broken (a process exited, a run ended too early) fails at once.
    """
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Broken:
            raise
        except Exception as exc:
            last = exc
        time.sleep(every)
    try:
        seen = show()
    except Exception as exc:
        seen = exc
    raise AssertionError(f"{what}: not within {timeout:.0f} s; last seen: {seen}; "
                         f"last error: {last!r}")
