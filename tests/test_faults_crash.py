"""Crash anywhere: SIGKILL a wavekit process at seeded random moments of a deploy and of a
rollback on the real SCIM server and on slapd, re-run, and check the directory with an
independent read: exactly the intended grants after deploy, exactly the prior bundle after
rollback, no duplicate members, and the audit chain intact (`wavekit audit verify`).

WAVEKIT_FAULT_KILLS        kills per directory (half in the deploy, half in rollback); default 20
WAVEKIT_FAULT_CRASH_MEMBERS members of the package; default 1500 (the kill lands mid-batch)
WAVEKIT_FAULT_SEED         seed of the kill moments; default 7
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

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
from wavekit.domain.grants import Grant, GrantSet

pytestmark = pytest.mark.faults
KILLS = int(os.environ.get("WAVEKIT_FAULT_KILLS", "20"))
MEMBERS = int(os.environ.get("WAVEKIT_FAULT_CRASH_MEMBERS", "1500"))
SEED = int(os.environ.get("WAVEKIT_FAULT_SEED", "7"))
BATCH = 250
GROUPS = ["c-grant-a", "c-grant-b", "c-remove", "c-retire", "c-other"]


def world() -> tuple[list[str], PackageDef, GrantSet]:
    users = [f"k{i:05d}" for i in range(MEMBERS)] + [f"o{i:02d}" for i in range(20)]
    members = users[:MEMBERS]
    pkg = PackageDef("pkg-crash", members, ["c-grant-a", "c-grant-b"], ["c-remove"],
                     ["c-retire"])
    seed = {Grant(u, "c-grant-a") for u in members[::7]}
    seed |= {Grant(u, "c-remove") for u in members[::3]}
    seed |= {Grant(u, "c-retire") for u in members[1::4]}
    seed |= {Grant(u, g) for u in users[MEMBERS:] for g in GROUPS}
    return users, pkg, frozenset(seed)


def batches(pkg: PackageDef, seed: GrantSet, action: str) -> int:
    prior = {g for g in seed if g.entitlement in set(pkg.grants) | set(pkg.removes)
             | set(pkg.retires)}
    want = intended(prior, pkg)
    adds, gone = want - prior, prior - want
    if action == "deploy":
        removes = {g for g in gone if g.entitlement in pkg.removes}
        retires = gone - removes
        return sum(math.ceil(len(x) / BATCH) for x in (adds, removes, retires))
    return math.ceil(len(adds) / BATCH) + math.ceil(len(gone) / BATCH)


def run(action: str, url: str, env: dict[str, str], log: Path,
        kill_at: tuple[int, float] | None = None) -> str:
    """Run the driver; with kill_at=(k, delay) SIGKILL it `delay` s after its k-th batch
    landed (k=0: after it is ready). 'killed' if it was still running, else 'finished'."""
    with log.open("ab") as err:
        proc = subprocess.Popen([PYTHON, "-m", "tests.support.fault_driver", action, url,
                                 "pkg-crash", str(BATCH)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    want = None if kill_at is None else ("ready" if kill_at[0] == 0 else f"batch {kill_at[0]}")
    try:
        for line in proc.stdout:
            if want is not None and line.strip() in (want, "done"):
                if line.strip() == want:
                    time.sleep(kill_at[1])  # type: ignore[index]
                if proc.poll() is None and line.strip() != "done":
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=30)
                    return "killed"
                break
        code = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, f"{action} exited {code}: {log.read_text()[-3000:]}"
    return "finished"


def check_audit(url: str) -> None:
    with session_scope(url) as s:
        report = audit.verify_chain(s)
    assert report.ok, report


def crash_cycles(tmp_path: Path, spec: dict, reset, read) -> dict[str, int]:  # type: ignore[no-untyped-def, type-arg]
    """KILLS/2 kills in the deploy, then KILLS/2 in the rollback, each run resuming what the
    killed one left. After every kill an independent read: no duplicate member, nothing
    outside the package's scope moved, and every grant in scope is one the prior bundle or
    the plan holds (a partial state, never a foreign one). After the last kill the command
    runs to its end and the directory is exactly the intended grants / the prior bundle."""
    users, pkg, seed = world()
    rng = random.Random(SEED)
    env = subprocess_env(WAVEKIT_FAULT_TARGET=json.dumps(spec), PREFECT_LOGGING_LEVEL="ERROR")
    scope = set(pkg.grants) | set(pkg.removes) | set(pkg.retires)
    prior = frozenset(g for g in seed if g.entitlement in scope)
    tally = {"killed": 0, "finished": 0, "cycles": 0}
    reset(seed)
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    load_world(url, write_catalog_dir(tmp_path / "catalog", users, GROUPS, [pkg]))
    log = tmp_path / "crash.log"
    want = intended(prior, pkg)
    for action, expected in (("deploy", want), ("rollback", prior)):
        for kill in range((KILLS + 1) // 2):
            # Kill after a seeded batch (0: as soon as the process is ready) plus a short
            # seeded delay: before, during or between writes, never after the run's end.
            k = rng.randrange(0, max(batches(pkg, seed, action) // (kill + 1), 1))
            delay = rng.uniform(0.0, 0.2)
            tally[run(action, url, env, log, (k, delay))] += 1
            live, dups = read()
            assert dups == {}, f"duplicate members after kill {kill} of the {action}: {dups}"
            assert {g for g in live if g.entitlement not in scope} == seed - prior
            foreign = {g for g in live if g.entitlement in scope} - (prior | want)
            assert not foreign, f"{action} kill {kill}: grants neither prior nor planned"
            check_audit(url)
        run(action, url, env, log)  # the re-run, to the end
        live, dups = read()
        assert dups == {}, f"duplicate members after {action}: {dups}"
        assert {g for g in live if g.entitlement in scope} == expected, \
            f"{action} killed {KILLS // 2} times did not converge"
        assert {g for g in live if g.entitlement not in scope} == seed - prior
        check_audit(url)
        tally["cycles"] += 1
    done = subprocess.run([PYTHON, "-m", "wavekit.present.cli", "audit", "verify",
                           "--database-url", url], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return tally


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

    def read() -> tuple[GrantSet, dict[str, int]]:
        members = scim_members(scim_directory.base_url, token, GROUPS)
        return as_grants(members), duplicates(members)

    started = time.monotonic()
    tally = crash_cycles(tmp_path, {"kind": "scim", "base_url": scim_directory.base_url,
                                    "token": token}, reset, read)
    print(f"\nSCIM: {tally['killed']} kills landed mid-run, {tally['finished']} runs finished "
          f"before their kill, deploy and rollback of {MEMBERS} members, "
          f"{time.monotonic() - started:.0f}s")
    assert tally["killed"] >= KILLS * 3 // 4


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
    tally = crash_cycles(tmp_path, {"kind": "ldap", **asdict(config)}, reset, read)
    print(f"\nslapd: {tally['killed']} kills landed mid-run, {tally['finished']} runs finished "
          f"before their kill, deploy and rollback of {MEMBERS} members, "
          f"{time.monotonic() - started:.0f}s")
    assert tally["killed"] >= KILLS * 3 // 4
