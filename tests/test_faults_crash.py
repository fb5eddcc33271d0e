"""Crash anywhere: SIGKILL a wavekit process at seeded random moments of a deploy and of a
rollback on the real SCIM server and on slapd, KILLS times each; after every kill re-run the
same command to its end and check the directory with an independent read: exactly the
intended grants after the deploy, exactly the prior bundle after the rollback, nothing
outside the package's scope moved, no duplicate member, and the audit chain intact.

One cycle: deploy killed, deploy re-run, check; rollback killed, rollback re-run, check; the
package is scheduled again (Rolled back -> Scheduled) and the next cycle deploys a new
release over the same prior bundle, so one server serves every kill and nothing restarts.
The processes are forked from a driver that imported wavekit once (tests/support/
fault_driver.py `serve`): each run and re-run is a fresh process, without the ~10 s import.

The package has 1,500 members; most already hold what it grants, so a deploy writes about
800 changes in ~16 batches of 50 on slapd and ~9 of 100 on the SCIM server (a batch holds
one group's changes; a kill lands mid-batch, and a cycle costs seconds).

WAVEKIT_FAULT_KILLS         kills per action on slapd (deploy and rollback); default 20
WAVEKIT_FAULT_SCIM_KILLS    kills per action on scim2-server; default 20
WAVEKIT_FAULT_CRASH_MEMBERS members of the package; default 1500
WAVEKIT_FAULT_SEED          seed of the kill moments; default 7
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from tests.support import figures
from tests.support.fault_world import (
    PYTHON,
    ROOT,
    PackageDef,
    as_grants,
    duplicates,
    intended,
    ldap_members,
    ldap_uid,
    load_world,
    scim_members,
    subprocess_env,
    write_catalog_dir,
)
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.lifecycle import transition
from wavekit.adapters.store.models import RolePackage
from wavekit.adapters.targets.base import plan_batches
from wavekit.domain.grants import Grant, GrantSet
from wavekit.domain.states import PackageState

pytestmark = [pytest.mark.faults, pytest.mark.crash]
KILLS = int(os.environ.get("WAVEKIT_FAULT_KILLS", "20"))
SCIM_KILLS = int(os.environ.get("WAVEKIT_FAULT_SCIM_KILLS", "20"))
MEMBERS = int(os.environ.get("WAVEKIT_FAULT_CRASH_MEMBERS", "1500"))
SEED = int(os.environ.get("WAVEKIT_FAULT_SEED", "7"))
LINE_TIMEOUT = 300.0  # a run prints a line at least every batch; far longer means it hangs
GROUPS = ["c-grant-a", "c-grant-b", "c-remove", "c-retire", "c-other"]
Read = Callable[[], tuple[GrantSet, dict[str, int]]]


def world() -> tuple[list[str], PackageDef, GrantSet]:
    users = [f"k{i:05d}" for i in range(MEMBERS)] + [f"o{i:02d}" for i in range(20)]
    members = users[:MEMBERS]
    # Retired in the launch window: the flow's rule retires right after the deploy.
    pkg = PackageDef("pkg-crash", members, ["c-grant-a", "c-grant-b"], ["c-remove"],
                     ["c-retire"], retire_in_launch_window=True)
    seed = {Grant(u, "c-grant-a") for i, u in enumerate(members) if i % 10}
    seed |= {Grant(u, "c-grant-b") for i, u in enumerate(members) if i % 10 != 5}
    seed |= {Grant(u, "c-remove") for u in members[::5]}
    seed |= {Grant(u, "c-retire") for u in members[1::8]}
    seed |= {Grant(u, g) for u in users[MEMBERS:] for g in GROUPS}
    return users, pkg, frozenset(seed)


def batches(pkg: PackageDef, seed: GrantSet, action: str, batch: int) -> int:
    """How many batch marks a full run of `action` prints (kill points are drawn below it)."""
    prior = {g for g in seed if g.entitlement in set(pkg.grants) | set(pkg.removes)
             | set(pkg.retires)}
    want = intended(prior, pkg)
    adds, gone = want - prior, prior - want
    if action == "deploy":
        removes = {g for g in gone if g.entitlement in pkg.removes}
        return len(list(plan_batches(adds, removes, batch))) + len(list(
            plan_batches([], gone - removes, batch)))
    return len(list(plan_batches(adds, gone, batch)))


class Driver:
    """The forking driver: `run` starts one fresh wavekit process and, with kill_at=(k,
    delay), SIGKILLs it `delay` s after its k-th batch landed (k=0: once it is ready)."""

    def __init__(self, env: dict[str, str], log: Path, batch: int) -> None:
        self.batch = batch
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "tests.support.fault_driver", "serve"], cwd=ROOT, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self.log = log
        # Lines are read by a thread so a silent driver fails the test (with what it saw)
        # instead of hanging it.
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        assert self._line() == "ready"

    def _pump(self) -> None:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        for line in out:
            self.lines.put(line)
        self.lines.put("")  # end of output: the driver died

    def _line(self, timeout: float = LINE_TIMEOUT) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the fault driver said nothing for {timeout:.0f}s; last "
                                 f"lines {self.seen[-8:]}; log: {self.log.read_text()[-3000:]}"
                                 ) from None
        assert line, f"the fault driver died: {self.log.read_text()[-3000:]}"
        self.seen.append(line.strip())
        return line.strip()

    def run(self, action: str, url: str, kill_at: tuple[int, float] | None = None) -> str:
        """'killed' if the kill landed, 'finished' if the run ended first (exit 0)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{action} {url} pkg-crash {self.batch}\n")
        self.proc.stdin.flush()
        want = None if kill_at is None else ("ready" if kill_at[0] == 0 else f"batch {kill_at[0]}")
        pid, seen, killed = None, set(), False
        while True:
            line = self._line()
            if line.startswith("started "):
                pid = int(line.split()[1])
            elif line.startswith("exit "):
                code = int(line.split()[2])
                if killed and code == -signal.SIGKILL:
                    return "killed"
                assert code == 0, f"{action} exited {code}: {self.log.read_text()[-3000:]}"
                return "finished"
            else:
                seen.add(line)
            if want is not None and pid is not None and want in seen and not killed:
                if "done" not in seen:
                    time.sleep(kill_at[1])  # type: ignore[index]
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed = True
                    except ProcessLookupError:  # it ended in the meantime
                        pass
                want = None

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def check_audit(url: str) -> None:
    with session_scope(url) as s:
        report = audit.verify_chain(s)
    assert report.ok, report


def schedule_again(url: str, key: str) -> None:
    """Rolled back -> Scheduled (an allowed, audited transition): the next deploy is a new
    release over the same prior bundle."""
    with session_scope(url) as s:
        pkg = s.get(RolePackage, key)
        assert pkg is not None and pkg.state == PackageState.ROLLED_BACK, pkg
        transition(s, pkg, PackageState.SCHEDULED, "fault test: release again")


def crash_cycles(tmp_path: Path, spec: dict, reset: Callable[[GrantSet], None],  # type: ignore[type-arg]
                 read: Read, *, batch: int, max_delay: float, kills: int = KILLS
                 ) -> dict[str, int]:
    """KILLS cycles of: deploy killed at a seeded moment, the directory partial but never
    foreign; the same deploy re-run to its end, the directory exactly the intended grants;
    rollback killed, partial; re-run, exactly the prior bundle. Nothing outside the scope
    moves, no member appears twice, and the audit chain verifies after every step.

    batch: the batch size (a directory's cost is per batch: small on slapd, larger on the
    SCIM server, whose batches each rewrite a 1,500-member group); max_delay: the longest
    wait after a batch mark before the kill, about one batch's time."""
    users, pkg, seed = world()
    rng = random.Random(SEED)
    env = subprocess_env(WAVEKIT_FAULT_TARGET=json.dumps(spec), PREFECT_LOGGING_LEVEL="ERROR")
    scope = set(pkg.grants) | set(pkg.removes) | set(pkg.retires)
    prior = frozenset(g for g in seed if g.entitlement in scope)
    want = intended(prior, pkg)
    assert len(want ^ prior) > 3 * batch  # several batches: a kill lands mid-batch
    tally = {"deploy killed": 0, "rollback killed": 0, "finished before the kill": 0,
             "cycles": 0}
    reset(seed)
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    load_world(url, write_catalog_dir(tmp_path / "catalog", users, GROUPS, [pkg]))
    driver = Driver(env, tmp_path / "crash.log", batch)

    def check(step: str, expected: GrantSet | None) -> None:
        live, dups = read()
        assert dups == {}, f"duplicate members after {step}: {dups}"
        assert {g for g in live if g.entitlement not in scope} == seed - prior, step
        mine = {g for g in live if g.entitlement in scope}
        if expected is None:  # killed: a partial state, never a foreign one
            assert not mine - (prior | want), f"{step}: grants neither prior nor planned"
        else:
            assert mine == expected, f"{step}: {len(mine ^ expected)} grants differ"
        check_audit(url)

    try:
        cycle = 0
        # Until KILLS kills of each action landed (a run may end before its kill: rare).
        while min(tally["deploy killed"], tally["rollback killed"]) < kills:
            assert cycle < 3 * kills, f"kills keep missing: {tally}"
            if cycle:
                schedule_again(url, pkg.key)
            for action, expected in (("deploy", want), ("rollback", prior)):
                k = rng.randrange(0, batches(pkg, seed, action, batch))
                delay = rng.uniform(0.0, max_delay)
                outcome = (driver.run(action, url, (k, delay))
                           if tally[f"{action} killed"] < kills else "not killed")
                if outcome == "killed":
                    tally[f"{action} killed"] += 1
                    check(f"{action} kill {cycle}", None)
                elif outcome == "finished":
                    tally["finished before the kill"] += 1
                driver.run(action, url)  # the same command, to its end
                check(f"{action} re-run {cycle}", expected)
            tally["cycles"] += 1
            cycle += 1
    finally:
        driver.close()
    done = subprocess.run([PYTHON, "-m", "wavekit.present.cli", "audit", "verify",
                           "--database-url", url], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return tally


def report(server: str, tally: dict[str, int], started: float, kills: int = KILLS) -> None:
    line = (f"{server}: {tally['deploy killed']} deploy and {tally['rollback killed']} "
            f"rollback SIGKILLs survived ({tally['cycles']} cycles, {MEMBERS} members, each "
            f"re-run checked exactly), {time.monotonic() - started:.0f}s")
    figures.record(line)  # printed in the terminal summary (tests/conftest.py)
    # Every seeded kill must land: a run that ends before its kill proves nothing.
    assert tally["deploy killed"] == tally["rollback killed"] == kills, tally


def test_sigkill_anywhere_on_the_scim_server(scim_directory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.scim_server import people
    from wavekit.adapters.targets.scim import ScimTarget, provision_scim_directory

    users, _, _ = world()
    provision_scim_directory(scim_directory, people(users), GROUPS)
    token = scim_directory.token.get_secret_value()

    def reset(seed: GrantSet) -> None:
        with ScimTarget(scim_directory) as t:
            now = t.read_grants(GROUPS)
            t.apply(seed - now, now - seed, batch_size=1000)

    names: dict[str, str] = {}  # user id -> userName: the users never change here

    def read() -> tuple[GrantSet, dict[str, int]]:
        members = scim_members(scim_directory.base_url, token, GROUPS, names=names)
        return as_grants(members), duplicates(members)

    started = time.monotonic()
    tally = crash_cycles(tmp_path, {"kind": "scim", "base_url": scim_directory.base_url,
                                    "token": token}, reset, read, batch=100, max_delay=0.2,
                         kills=SCIM_KILLS)
    report("SCIM", tally, started, SCIM_KILLS)


def test_sigkill_anywhere_on_slapd(slapd_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import asdict

    from tests.support.slapd import clear_subtree, people
    from wavekit.adapters.targets.ldap import LdapTarget, provision_ldap_directory

    config = slapd_server.config
    for base in (config.group_base, config.user_base):
        clear_subtree(config, base)
    users, _, _ = world()
    provision_ldap_directory(config, people(users), GROUPS)

    def reset(seed: GrantSet) -> None:
        t = LdapTarget(config)
        try:
            now = t.read_grants(GROUPS)
            t.apply(seed - now, now - seed, batch_size=2000)
        finally:
            t.close()

    def read() -> tuple[GrantSet, dict[str, int]]:
        members = ldap_members(config, GROUPS)
        return as_grants(members, ldap_uid), duplicates(members)

    started = time.monotonic()
    tally = crash_cycles(tmp_path, {"kind": "ldap", **asdict(config)}, reset, read, batch=50,
                         max_delay=0.05)
    report("slapd", tally, started)
