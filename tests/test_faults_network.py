"""Faults on the wire: a fault-injecting proxy in front of the real SCIM server, slapd
restarted mid-deploy, and the LDAP rollback that must restore member DNs as stored.

Every check of the directory is an independent read (plain httpx / plain ldap3), not
wavekit's bookkeeping. Counts: WAVEKIT_FAULT_MEMBERS (members per package, default 120).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support import figures
from tests.support.fault_proxy import fault_proxy
from tests.support.fault_world import (
    PackageDef,
    as_grants,
    deploy,
    duplicates,
    intended,
    ldap_members,
    ldap_uid,
    load_world,
    roll_back,
    runtime,
    scim_members,
    write_catalog_dir,
)
from wavekit.adapters.targets.base import TargetError
from wavekit.adapters.targets.resilience import RetryPolicy
from wavekit.domain.grants import Grant, GrantSet

pytestmark = pytest.mark.faults
MEMBERS = int(os.environ.get("WAVEKIT_FAULT_MEMBERS", "120"))
GROUPS = ["g-grant-a", "g-grant-b", "g-remove", "g-retire", "g-other"]


def package(n: int = MEMBERS) -> tuple[list[str], PackageDef, GrantSet]:
    users = [f"m{i:04d}" for i in range(n)] + [f"x{i:02d}" for i in range(10)]
    pkg = PackageDef("pkg-net", users[:n], ["g-grant-a", "g-grant-b"], ["g-remove"],
                     ["g-retire"])
    seed = {Grant(u, "g-grant-a") for u in users[:n:5]}
    seed |= {Grant(u, "g-remove") for u in users[:n:3]} | {Grant(u, "g-retire")
                                                            for u in users[1:n:4]}
    seed |= {Grant(u, g) for u in users[n:] for g in ("g-remove", "g-retire", "g-other")}
    return users, pkg, frozenset(seed)


def scope(grants: GrantSet, pkg: PackageDef) -> GrantSet:
    wanted = set(pkg.grants) | set(pkg.removes) | set(pkg.retires)
    return frozenset(g for g in grants if g.entitlement in wanted)


# ------------------------------------------------------------------ SCIM behind the proxy


@pytest.fixture
def scim_world(scim_directory, tmp_path: Path):  # type: ignore[no-untyped-def]
    from tests.support.scim_server import people
    from wavekit.adapters.targets.scim import ScimTarget, provision_scim_directory

    users, pkg, seed = package()
    provision_scim_directory(scim_directory, people(users), GROUPS)
    with ScimTarget(scim_directory) as direct:
        direct.apply(seed, [])
    url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    load_world(url, write_catalog_dir(tmp_path / "catalog", users, GROUPS, [pkg]))
    return scim_directory, url, pkg, seed


def independent_scim(config) -> tuple[GrantSet, dict[str, int]]:  # type: ignore[no-untyped-def]
    members = scim_members(config.base_url, config.token.get_secret_value(), GROUPS)
    return as_grants(members), duplicates(members)


def proxied(config, proxy):  # type: ignore[no-untyped-def]
    from urllib.parse import urlsplit

    path = urlsplit(config.base_url).path
    return config.model_copy(update={"base_url": proxy.url(path)})


def retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The SCIM target's retry lines (`SCIM METHOD URL: REASON; retry N in Ss`)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "wavekit.adapters.targets.scim" and "; retry " in r.getMessage()]


def test_deploy_and_rollback_through_20_percent_faults(scim_world, caplog) -> None:  # type: ignore[no-untyped-def]
    from wavekit.adapters.targets.scim import ScimTarget

    caplog.set_level("WARNING", logger="wavekit.adapters.targets.scim")
    config, url, pkg, seed = scim_world
    root = config.base_url.split("/", 3)
    with fault_proxy(f"{root[0]}//{root[2]}", rate=0.2, seed=20) as proxy:
        retry = RetryPolicy(attempts=8, base_delay=0.05, max_delay=2.0)
        with ScimTarget(proxied(config, proxy), retry=retry) as target:
            started = time.monotonic()
            deploy(runtime(url, target, batch_size=25), pkg.key)
            live, dups = independent_scim(config)
            assert dups == {}
            assert scope(live, pkg) == intended(scope(seed, pkg), pkg)
            assert live - scope(live, pkg) == seed - scope(seed, pkg)  # untouched
            outcome = roll_back(runtime(url, target, batch_size=25), pkg.key)
            took = time.monotonic() - started
        figures.record(f"SCIM through 20% faults: {proxy.summary()}; deploy+rollback "
                       f"{took:.1f}s")
        assert sum(proxy.injected.values()) >= 10
        # Every failed answer was retried, visibly, with its reason.
        retried = retries_logged(caplog)
        failed = sum(proxy.injected[k] for k in ("429", "503", "reset", "reset_after"))
        assert len(retried) == failed, (len(retried), proxy.summary())
        for reason in ("HTTP 429", "HTTP 503", "connection failed"):
            assert any(f": {reason}" in line for line in retried), (reason, retried[:5])
    assert outcome.proof.equal
    live, dups = independent_scim(config)
    assert dups == {} and live == seed


def test_at_50_percent_a_run_completes_or_stops_clearly_and_a_rerun_converges(
        scim_world) -> None:  # type: ignore[no-untyped-def]
    from wavekit.adapters.targets.scim import ScimTarget

    config, url, pkg, seed = scim_world
    root = config.base_url.split("/", 3)
    stops: list[str] = []
    with fault_proxy(f"{root[0]}//{root[2]}", rate=0.5, seed=50) as proxy:
        for step, want in ((deploy, intended(scope(seed, pkg), pkg)), (roll_back, None)):
            for _run in range(25):
                retry = RetryPolicy(attempts=3, base_delay=0.02, max_delay=0.5)
                with ScimTarget(proxied(config, proxy), retry=retry) as target:
                    try:
                        step(runtime(url, target, batch_size=25), pkg.key)
                        break
                    except TargetError as exc:
                        said = str(exc)
                        assert "\n" not in said and said.startswith("SCIM target http://")
                        stops.append(said)
            else:
                pytest.fail(f"{step.__name__} did not converge in 25 runs: {stops[-1]}")
            live, dups = independent_scim(config)
            assert dups == {}
            assert scope(live, pkg) == (want if want is not None else scope(seed, pkg))
        figures.record(f"SCIM through 50% faults: {proxy.summary()}; {len(stops)} runs stopped "
                       f"with a clear error, then converged; e.g. {stops[:1]}")
    assert independent_scim(config)[0] == seed


# ------------------------------------------------------------------ slapd


@pytest.fixture
def own_slapd():  # type: ignore[no-untyped-def]
    from tests.support.slapd import start_slapd

    server = start_slapd()
    try:
        yield server
    finally:
        server.remove()


def ldap_world(server, tmp_path: Path, users, pkg, seed):  # type: ignore[no-untyped-def]
    from tests.support.slapd import people
    from wavekit.adapters.targets.ldap import LdapTarget, provision_ldap_directory

    target = LdapTarget(server.config)
    provision_ldap_directory(target, people(users), GROUPS)
    target.apply(seed, [])
    target.close()
    url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    load_world(url, write_catalog_dir(tmp_path / "catalog", users, GROUPS, [pkg]))
    return url


def independent_ldap(config) -> tuple[GrantSet, dict[str, int]]:  # type: ignore[no-untyped-def]
    members = ldap_members(config, GROUPS)
    return as_grants(members, ldap_uid), duplicates(members)


def test_slapd_vanished_mid_deploy_stops_clearly_then_a_rerun_converges(  # type: ignore[no-untyped-def]
        own_slapd, tmp_path: Path) -> None:
    """slapd dies after the first batch and stays down longer than the retries: the run
    stops with one line naming the target and the batch, the release records where it
    stopped (a stage_failed event, the package's reason); once slapd is back a re-run
    converges."""
    from tests.support.fault_targets import Wrapped
    from wavekit.adapters.store import audit
    from wavekit.adapters.store.engine import session_scope
    from wavekit.adapters.store.models import RolePackage
    from wavekit.adapters.targets.ldap import LdapTarget

    users, pkg, seed = package()
    url = ldap_world(own_slapd, tmp_path, users, pkg, seed)
    restarts: list[float] = []

    class RestartAfterBatch(Wrapped):
        def apply(self, adds, removes, *, batch_size=500, on_batch=None):  # type: ignore[no-untyped-def]
            def landed(batch):  # type: ignore[no-untyped-def]
                if on_batch:
                    on_batch(batch)
                if batch.index == 1 and not restarts:
                    own_slapd.stop()  # the next request finds nobody
                    restarts.append(time.monotonic())
            return super().apply(adds, removes, batch_size=batch_size, on_batch=landed)

    retry = RetryPolicy(attempts=3, base_delay=0.1, max_delay=0.3)
    target = RestartAfterBatch(LdapTarget(own_slapd.config, retry=retry))
    with pytest.raises(TargetError) as stopped:
        deploy(runtime(url, target, batch_size=20), pkg.key)
    said = str(stopped.value)
    assert "\n" not in said and said.startswith(f"LDAP target {own_slapd.config.url}")
    assert stopped.value.batch == 2 and said.endswith("(batch 2)"), said
    with session_scope(url) as s:
        [failed] = audit.events(s, package_key=pkg.key, action="stage_failed")
        reason = s.get(RolePackage, pkg.key).state_reason
    assert (failed.detail["stage"], failed.detail["batch"]) == ("deploy", 2), failed.detail
    assert failed.detail["error"] == type(stopped.value).__name__ and failed.release_id
    assert reason.startswith("deploy stopped at batch 2: LDAP target") and "re-run" in reason
    own_slapd.start()
    deadline = time.monotonic() + 30
    while not own_slapd.running and time.monotonic() < deadline:
        time.sleep(0.1)
    again = LdapTarget(own_slapd.config)
    deploy(runtime(url, again, batch_size=20), pkg.key)
    figures.record(f"slapd vanished mid-deploy: stopped with {said!r}; the re-run after it "
                   "returned converged")
    live, dups = independent_ldap(own_slapd.config)
    assert restarts and dups == {}
    assert scope(live, pkg) == intended(scope(seed, pkg), pkg)
    roll_back(runtime(url, again, batch_size=20), pkg.key)
    assert independent_ldap(own_slapd.config)[0] == seed
    again.close()


def test_ldap_rollback_writes_member_dns_back_as_they_were_stored(own_slapd,
                                                                  tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ldap3 import MODIFY_ADD, Connection, Server

    from wavekit.adapters.targets.ldap import LdapTarget

    users, pkg, seed = package(12)
    config = own_slapd.config
    url = ldap_world(own_slapd, tmp_path, users, pkg, frozenset(
        g for g in seed if g.entitlement != "g-remove"))
    # Members of g-remove as another tool wrote them: RDN and suffix in another case.
    odd = {u: f"uid={u},ou=People,{config.base_dn.upper().replace('DC=', 'dc=')}"
           for u in pkg.members[:6]}
    conn = Connection(Server(config.host, port=config.port), config.bind_dn, config.password,
                      auto_bind=True)
    conn.modify(f"cn=g-remove,{config.group_base}", {"member": [(MODIFY_ADD,
                                                               sorted(odd.values()))]})
    conn.unbind()
    before = {v for v in ldap_members(config, ["g-remove"])["g-remove"]}
    assert set(odd.values()) <= before
    target = LdapTarget(config)
    deploy(runtime(url, target), pkg.key)
    assert not {ldap_uid(v) for v in ldap_members(config, ["g-remove"])["g-remove"]} & set(odd)
    roll_back(runtime(url, target), pkg.key)
    target.close()
    after = set(ldap_members(config, ["g-remove"])["g-remove"])
    assert after == before  # verbatim: ou=People, DC=WAVEKIT as stored, not canonical


def test_wrong_ldap_password_is_one_line_naming_the_target(own_slapd) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from wavekit.adapters.targets.base import TargetAuthError
    from wavekit.adapters.targets.ldap import LdapTarget

    wrong = replace(own_slapd.config, password="not-the-password")
    with pytest.raises(TargetAuthError) as refused:
        LdapTarget(wrong).read_grants(["g-other"])
    said = str(refused.value)
    assert said.startswith(f"LDAP target {wrong.url}: invalid credentials for {wrong.bind_dn}")
    assert "not-the-password" not in said and "\n" not in said


def test_the_cli_says_a_target_error_in_one_line(own_slapd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from tests.support.fault_world import PYTHON, ROOT, subprocess_env

    users, pkg, _ = package(5)
    url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    load_world(url, write_catalog_dir(tmp_path / "catalog", users, GROUPS, [pkg]))
    c = own_slapd.config
    env = subprocess_env(WAVEKIT_LDAP_URL=c.url, WAVEKIT_LDAP_BIND_DN=c.bind_dn,
                         WAVEKIT_LDAP_PASSWORD="wrong-password", WAVEKIT_LDAP_BASE_DN=c.base_dn,
                         WAVEKIT_DATA_DIR=str(tmp_path / "data"), COLUMNS="60")
    env.pop("WAVEKIT_DEBUG", None)
    done = subprocess.run([PYTHON, "-m", "wavekit.present.cli", "plan", "--wave", "1",
                           "--target", "ldap", "--database-url", url], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == (f"error: LDAP target {c.url}: invalid credentials for {c.bind_dn} "
                        "(invalidCredentials [49])"), done.stderr
    assert len(lines) == 2 and lines[1].startswith("(traceback in ")
    assert "Traceback" not in done.stderr and "wrong-password" not in done.stderr


def _cli_plan_on_scim(tmp_path: Path, base_url: str, token: str) -> tuple[str, list[str]]:
    """`wavekit plan --target scim` in a process of its own: its one error line, and the
    retry lines (with their reasons) that came before it."""
    import subprocess

    from tests.support.fault_world import PYTHON, ROOT, subprocess_env

    users, pkg, _ = package(5)
    url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    load_world(url, write_catalog_dir(tmp_path / "catalog", users, GROUPS, [pkg]))
    env = subprocess_env(WAVEKIT_SCIM_URL=base_url, WAVEKIT_SCIM_TOKEN=token,
                         WAVEKIT_DATA_DIR=str(tmp_path / "data"), COLUMNS="60")
    env.pop("WAVEKIT_DEBUG", None)
    done = subprocess.run([PYTHON, "-m", "wavekit.present.cli", "plan", "--wave", "1",
                           "--target", "scim", "--database-url", url], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and token not in done.stdout + done.stderr
    *retries, error, where = done.stderr.strip().splitlines()
    assert where.startswith("(traceback in "), done.stderr
    assert all("; retry " in line for line in retries), done.stderr
    return error, retries


def test_the_cli_says_a_wrong_scim_token_in_one_line(scim_directory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    error, retries = _cli_plan_on_scim(tmp_path, scim_directory.base_url,
                                       "wrong-scim-token-canary")
    assert error.startswith(f"error: SCIM target {scim_directory.base_url}: "), error
    assert "HTTP 401" in error and retries == []  # a refusal is not retried


def test_the_cli_says_a_scim_server_that_is_down_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/scim/v2"
    error, retries = _cli_plan_on_scim(tmp_path, base_url, "some-scim-token-canary")
    assert error.startswith(f"error: SCIM target {base_url}: "), error
    assert "still failing after 5 attempts: connection failed (ConnectError)" in error, error
    assert len(retries) == 4 and all("connection failed" in r for r in retries), retries
