"""One writer per package: leases in the store (wavekit.workflow.leases).

The lease itself on SQLite and PostgreSQL, without Prefect: one holder among racing threads,
the refusal naming the holder, re-entry, giving back while waiting, the heartbeat, and the
takeover of a lease whose holder is gone (killed on this host, expired on another host).
The flows under the Prefect harness: two concurrent releases of one wave (one proceeds, one
is refused with the holder named, no duplicate rows), a package another run holds,
concurrent watch ticks of one release, and a holder whose Prefect flow run is over.
"""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import select

from wavekit.adapters.store import leases as store
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Approval, HealthCheckResult, Lease, Release
from wavekit.domain.clock import utcnow
from wavekit.workflow import leases
from wavekit.workflow.leases import LeaseHeld

FIN, HR = "finance-month-end-operator", "hr-case-intake-specialist"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rt(store_url: str) -> Any:
    """The lease's store: SQLite, and PostgreSQL when configured (marked postgres)."""
    return SimpleNamespace(database_url=store_url)


def _foreign_lease(url: str, resource: str, *, host: str, pid: int, expires_in: timedelta,
                   flow_run_id: str | None = None) -> None:
    now = utcnow()
    with session_scope(url) as s:
        s.add(Lease(resource=resource, token="theirs", host=host, pid=pid,
                    flow_run_id=flow_run_id, flow_run_name="wave 1" if flow_run_id else None,
                    acquired_at=now - timedelta(minutes=1), heartbeat_at=now,
                    expires_at=now + expires_in))


def test_one_of_many_racing_threads_holds_the_lease(rt: Any) -> None:
    start, done = threading.Barrier(6), threading.Event()
    won: list[int] = []
    refused: list[LeaseHeld] = []

    def take(n: int) -> None:
        start.wait()
        try:
            with leases.hold(rt, leases.package(FIN)):
                won.append(n)
                done.wait(10)
        except LeaseHeld as exc:
            refused.append(exc)
            if len(refused) == 5:
                done.set()

    threads = [threading.Thread(target=take, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(won) == 1 and len(refused) == 5
    with session_scope(rt.database_url) as s:
        assert s.get(Lease, leases.package(FIN)) is None  # given back at the end


def test_the_refusal_names_the_holder_in_one_line(rt: Any) -> None:
    _foreign_lease(rt.database_url, leases.package(FIN), host="wk-worker-2", pid=4242,
                   expires_in=timedelta(minutes=5), flow_run_id="0c1d-run")
    with pytest.raises(LeaseHeld) as refused, leases.hold(rt, leases.package(FIN)):
        pytest.fail("took a live lease")
    text = str(refused.value)
    assert "\n" not in text
    for part in (f"package {FIN}", "flow run 'wave 1' (0c1d-run)", "host wk-worker-2",
                 "pid 4242", "since "):
        assert part in text


def test_a_lease_is_reentrant_in_its_context_and_not_in_another_thread(rt: Any) -> None:
    other: list[BaseException] = []
    with leases.hold(rt, leases.package(FIN)):
        with leases.hold(rt, leases.package(FIN)):  # a rollback subflow under a watch tick
            pass
        with session_scope(rt.database_url) as s:
            assert s.get(Lease, leases.package(FIN)) is not None  # the inner exit kept it

        def elsewhere() -> None:
            try:
                with leases.hold(rt, leases.package(FIN)):
                    pass
            except LeaseHeld as exc:
                other.append(exc)

        t = threading.Thread(target=elsewhere)  # a fresh context: another run
        t.start()
        t.join(10)
    assert len(other) == 1


def test_released_gives_the_lease_back_while_waiting_and_takes_it_again(rt: Any) -> None:
    with leases.hold(rt, leases.package(FIN)):
        # Someone else may work meanwhile.
        with leases.released(leases.package(FIN)), leases.hold(rt, leases.package(FIN)):
            pass
        with session_scope(rt.database_url) as s:
            assert s.get(Lease, leases.package(FIN)) is not None
    with session_scope(rt.database_url) as s:
        assert s.get(Lease, leases.package(FIN)) is None


def test_released_is_refused_when_another_run_took_the_lease_meanwhile(rt: Any) -> None:
    with (pytest.raises(LeaseHeld, match="wk-worker-2"), leases.hold(rt, leases.package(FIN)),
          leases.released(leases.package(FIN))):
        _foreign_lease(rt.database_url, leases.package(FIN), host="wk-worker-2",
                       pid=1, expires_in=timedelta(minutes=5))


def test_the_heartbeat_keeps_a_working_holder_s_lease(rt: Any) -> None:
    with leases.hold(rt, leases.package(FIN), ttl=timedelta(seconds=0.6)):
        first = store.read(rt.database_url, leases.package(FIN))
        time.sleep(1.0)  # longer than the TTL: only the heartbeat keeps it
        later = store.read(rt.database_url, leases.package(FIN))
        assert first and later and later.expires_at > first.expires_at
        assert later.expires_at > utcnow()


def test_an_expired_lease_of_another_host_is_taken_over(rt: Any) -> None:
    _foreign_lease(rt.database_url, leases.package(FIN), host="wk-worker-2", pid=4242,
                   expires_in=timedelta(seconds=-1))
    with leases.hold(rt, leases.package(FIN)):
        holder = store.read(rt.database_url, leases.package(FIN))
        assert holder is not None and holder.pid == os.getpid()


_HOLD_AND_WAIT = """
import sys, time
from types import SimpleNamespace
from wavekit.workflow import leases
rt = SimpleNamespace(database_url=sys.argv[1])
with leases.hold(rt, leases.package(sys.argv[2])):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder_process(url: str, key: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_AND_WAIT, url, key], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_killed_process_s_lease_is_taken_over_at_once(rt: Any) -> None:
    proc = _holder_process(rt.database_url, FIN)
    try:
        # Alive: refused.
        with (pytest.raises(LeaseHeld, match=f"pid {proc.pid}"),
              leases.hold(rt, leases.package(FIN))):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    holder = store.read(rt.database_url, leases.package(FIN))
    assert holder is not None and holder.pid == proc.pid  # the dead process left it behind
    with leases.hold(rt, leases.package(FIN)):  # long before it expires
        assert store.read(rt.database_url, leases.package(FIN)).pid == os.getpid()


def test_check_free_refuses_a_live_holder_and_ignores_a_dead_one(rt: Any) -> None:
    _foreign_lease(rt.database_url, leases.package(HR), host="wk-worker-2", pid=7,
                   expires_in=timedelta(minutes=5))
    with pytest.raises(LeaseHeld, match=f"package {HR}"):
        leases.check_free(rt, [leases.package(FIN), leases.package(HR)])
    with session_scope(rt.database_url) as s:
        s.get(Lease, leases.package(HR)).expires_at = utcnow() - timedelta(seconds=1)
    leases.check_free(rt, [leases.package(FIN), leases.package(HR)])


# ---------------------------------------------------------------- the flows


@pytest.fixture
def wave_env(loaded_store: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from tests.support.flows import ScriptedMetrics
    from wavekit.adapters.settings import load_settings
    from wavekit.adapters.targets.sandbox import SandboxTarget
    from wavekit.examples import seed_target
    from wavekit.workflow.runtime import build_runtime, runtime_override

    monkeypatch.setenv("WAVEKIT_APPROVAL_POLL_SECONDS", "1")
    settings = load_settings(database_url=loaded_store, batch_size=50,
                             approvals_unverified=True)
    target = SandboxTarget(loaded_store)
    seed_target(target)
    metrics = ScriptedMetrics()
    with runtime_override(lambda: build_runtime(settings, target=target, metrics=metrics)):
        yield SimpleNamespace(url=loaded_store, metrics=metrics,
                              rt=SimpleNamespace(database_url=loaded_store))


def _in_this_context(target: Any, *args: Any) -> threading.Thread:
    """A thread that sees this test's runtime override (a plain thread starts from an empty
    context); each gets its own copy, so it holds leases as another run would."""
    return threading.Thread(target=contextvars.copy_context().run, args=(target, *args),
                            daemon=True)


def _counts(url: str) -> dict[str, Any]:
    with session_scope(url) as s:
        releases = s.exec(select(Release.package_key, func.count()).group_by(
            Release.package_key)).all()
        approvals = s.exec(select(Approval.package_key, func.count()).group_by(
            Approval.package_key)).all()
        results = s.exec(select(HealthCheckResult.release_id, HealthCheckResult.check_name,
                                HealthCheckResult.due_at)).all()
    return {"releases": dict(releases), "approvals": dict(approvals), "results": results}


@pytest.mark.usefixtures("prefect_harness")
def test_two_concurrent_releases_of_one_wave_one_proceeds_one_is_refused(wave_env: Any
                                                                         ) -> None:
    from flows.wave import release_wave
    from tests.support.flows import approver

    refused = threading.Event()
    outcomes: dict[str, Any] = {}
    give_up = time.monotonic() + 60

    def decide(_: Approval) -> tuple[str, str | None, str] | None:
        # The first run waits at its owners until the second has been refused: the two runs
        # overlap for certain. (Without a lease both would wait: approve after a minute, so
        # that case fails on the assertions below instead of hanging.)
        done = refused.is_set() or time.monotonic() > give_up
        return ("approve", None, "ok") if done else None

    def run(name: str) -> None:
        try:
            outcomes[name] = release_wave(wave=1, requested_by=name)
        except LeaseHeld as exc:
            outcomes[name] = exc
            refused.set()

    with approver(wave_env.url, decide):
        threads = [_in_this_context(run, n) for n in ("rm-a", "rm-b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
    [lost] = [v for v in outcomes.values() if isinstance(v, LeaseHeld)]
    [won] = [v for v in outcomes.values() if not isinstance(v, LeaseHeld)]
    assert won == {FIN: "watching", HR: "watching"}
    assert "wave 1 is held by flow run 'wave 1'" in str(lost)
    assert f"pid {os.getpid()}" in str(lost)
    counts = _counts(wave_env.url)
    assert counts["releases"] == {FIN: 1, HR: 1} and counts["approvals"] == {FIN: 1, HR: 1}
    assert len(counts["results"]) == len(set(counts["results"]))
    with session_scope(wave_env.url) as s:
        assert not s.exec(select(Lease)).all()  # every lease given back


@pytest.mark.usefixtures("prefect_harness")
def test_a_package_another_run_holds_is_refused_at_once_and_nothing_is_staged(
        wave_env: Any) -> None:
    from flows.wave import release_wave, roll_out_package

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:  # a live process on this host holds FIN
        _foreign_lease(wave_env.url, leases.package(FIN), host=os.uname().nodename,
                       pid=sleeper.pid, expires_in=timedelta(minutes=5),
                       flow_run_id="6f1e-other-run")
        with pytest.raises(LeaseHeld, match=f"package {FIN} is held by flow run 'wave 1' "
                                            r"\(6f1e-other-run\)"):
            release_wave(wave=1, requested_by="rm-alex")
        state = roll_out_package(FIN, "rm-alex", 1, return_state=True)
        assert state.name == "Refused" and f"pid {sleeper.pid}" in state.message
        assert _counts(wave_env.url)["releases"] == {}  # neither run wrote anything
    finally:
        sleeper.kill()
        sleeper.wait(10)
    # The holder is gone: the next run takes the package over at once.
    state = roll_out_package(FIN, "rm-alex", 1, wait_for_owner=False, return_state=True)
    assert state.name != "Refused"


@pytest.mark.usefixtures("prefect_harness")
def test_concurrent_watch_ticks_of_one_release_never_run_at_once(wave_env: Any) -> None:
    from flows.watch import watch_packages
    from flows.wave import release_wave
    from tests.support.flows import approver

    with approver(wave_env.url):
        assert release_wave(wave=1, packages=[FIN], requested_by="rm-alex") == {FIN: "watching"}
    with session_scope(wave_env.url) as s:
        deployed = s.exec(select(Release).where(Release.package_key == FIN)).one().deployed_at
    measuring = threading.Event()

    def slow(day: float) -> dict[str, float]:
        measuring.set()
        time.sleep(1.5)  # the tick holds the package while the other run arrives
        return {}

    wave_env.metrics.script[FIN] = slow
    as_of = deployed + timedelta(days=3, minutes=1)
    got: dict[str, Any] = {}

    def tick(name: str, wait: bool) -> None:
        if wait:
            measuring.wait(60)
        try:
            got[name] = watch_packages(as_of=as_of)
        except Exception as exc:  # an IntegrityError here is the bug this test is about
            got[name] = exc

    threads = [_in_this_context(tick, "hourly", False), _in_this_context(tick, "nightly", True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not [v for v in got.values() if isinstance(v, Exception)], got
    [skipped] = got["nightly"]
    assert skipped["action"] == "skipped" and skipped["package"] == FIN
    assert "held by flow run" in skipped["reason"]
    assert got["hourly"][0]["measured"] > 0
    results = _counts(wave_env.url)["results"]
    assert len(results) == len(set(results))
    # The run that went ahead measured everything owed: nothing is left for a re-run.
    wave_env.metrics.script.pop(FIN)
    assert not any(r["measured"] for r in watch_packages(as_of=as_of))


@pytest.mark.usefixtures("prefect_harness")
def test_a_lease_whose_prefect_flow_run_is_over_is_taken_over(wave_env: Any) -> None:
    from prefect import flow

    @flow(name="earlier-run")
    def earlier() -> str:
        from prefect.runtime import flow_run

        return str(flow_run.id)

    finished = earlier()

    @flow(name="later-run")
    def later() -> int:
        with leases.hold(wave_env.rt, leases.package(FIN)):
            return store.read(wave_env.url, leases.package(FIN)).pid

    # Another host, not expired: only Prefect can say the holder is gone.
    _foreign_lease(wave_env.url, leases.package(FIN), host="wk-worker-2", pid=1,
                   expires_in=timedelta(minutes=5), flow_run_id=finished)
    assert later() == os.getpid()


def test_prefect_yaml_limits_concurrent_runs_of_each_deployment_as_it_is_served() -> None:
    from wavekit.present.serving import build_deployments, load_deployment_specs

    served = {d.name: d for d in build_deployments(load_deployment_specs(), schedules=False)}
    for name, limit, strategy in [("release-wave", 1, "ENQUEUE"),
                                  ("watch-packages", 1, "CANCEL_NEW"),
                                  ("nightly-maintenance", 1, "CANCEL_NEW"),
                                  ("approval-deadlines", 1, "CANCEL_NEW")]:
        deployment = served[name]
        assert deployment.concurrency_limit == limit, name
        assert deployment.concurrency_options.collision_strategy.value == strategy, name
    # Its runs suspend at the owner handoff: the package lease guards it, not a slot count.
    assert served["roll-out-package"].concurrency_limit is None


@pytest.mark.usefixtures("prefect_harness")
def test_wavekit_release_while_another_run_holds_the_wave_is_one_line(loaded_store: str
                                                                       ) -> None:
    from typer.testing import CliRunner

    from wavekit.present.cli import app

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _foreign_lease(loaded_store, leases.wave(1), host=os.uname().nodename, pid=sleeper.pid,
                       expires_in=timedelta(minutes=5), flow_run_id="77aa-wave-run")
        result = CliRunner().invoke(app, ["release", "--wave", "1", "--database-url",
                                          loaded_store], env={"COLUMNS": "300"})
    finally:
        sleeper.kill()
        sleeper.wait(10)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "error: wave 1 is held by flow run 'wave 1' (77aa-wave-run)" in result.output
    assert _counts(loaded_store)["releases"] == {}


@pytest.mark.usefixtures("prefect_harness")
def test_a_rollback_of_a_package_another_run_holds_is_refused(wave_env: Any) -> None:
    from flows.wave import rollback_package

    _foreign_lease(wave_env.url, leases.package(FIN), host="wk-worker-2", pid=4242,
                   expires_in=timedelta(minutes=5), flow_run_id="91bc-watch-run")
    with pytest.raises(LeaseHeld, match=r"package finance-month-end-operator is held by flow "
                                        r"run 'wave 1' \(91bc-watch-run\)"):
        rollback_package(FIN, "test")
