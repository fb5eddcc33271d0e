"""Faults on the sandbox: no target call inside a store transaction, every failure audited,
an unproven rollback never called done, a launch-window retirement a crash left undone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlmodel import select

from tests.support import figures
from tests.support.fault_targets import DownAtBatch, DropsWrites, SlowLockProbe
from tests.support.fault_world import (
    PackageDef,
    deploy,
    intended,
    load_world,
    roll_back,
    runtime,
    write_catalog_dir,
)
from wavekit.adapters.store import audit
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Release, RolePackage
from wavekit.adapters.targets.base import TargetUnavailable
from wavekit.adapters.targets.sandbox import SandboxTarget
from wavekit.domain.grants import Grant
from wavekit.workflow import rollback, rollout

USERS = [f"u{i:03d}" for i in range(60)]
ENTS = [f"ent-{c}" for c in "abcdefghijklmnopqrstuvwx"]


def packages(n: int, size: int = 20) -> list[PackageDef]:
    """n packages, each with its own four entitlements (grant two, remove one, retire one)."""
    out = []
    for k in range(n):
        a, b, c, d = ENTS[4 * k: 4 * k + 4]
        members = USERS[(k * 7) % 40: (k * 7) % 40 + size]
        out.append(PackageDef(f"pkg-{k}", members, [a, b], [c], [d]))
    return out


def world(tmp_path: Path, pkgs: list[PackageDef]) -> tuple[str, SandboxTarget, set[Grant]]:
    url = f"sqlite:///{tmp_path / 'wavekit.db'}"
    load_world(url, write_catalog_dir(tmp_path / "catalog", USERS, ENTS, pkgs))
    target = SandboxTarget(url)
    # Some members already hold a granted entitlement, the removed one, the retired one;
    # some outsiders hold them too (those grants are never touched).
    seed = {Grant(u, e) for p in pkgs for j, u in enumerate(p.members)
            for e, every in ((p.grants[0], 5), (p.removes[0], 2), (p.retires[0], 3))
            if j % every == 0}
    seed |= {Grant(u, p.removes[0]) for p in pkgs for u in USERS[50:53]}
    target.apply(seed, [])
    return url, target, seed


def test_the_target_is_never_called_inside_a_store_transaction(tmp_path: Path) -> None:
    [pkg] = packages(1)
    url, sandbox, seed = world(tmp_path, [pkg])
    probe = SlowLockProbe(sandbox, tmp_path / "wavekit.db", delay=0.2)
    rt = runtime(url, probe, batch_size=7)
    deploy(rt, pkg.key)
    roll_back(rt, pkg.key)
    assert probe.calls >= 6  # stage, gates, deploy, retire, restore, verify
    assert probe.held == [], f"target called while the store's write lock was held: {probe.held}"
    assert sandbox.read_grants(ENTS) == seed


def test_parallel_packages_on_a_slow_target_never_lock_sqlite(tmp_path: Path) -> None:
    pkgs = packages(6)
    url, sandbox, seed = world(tmp_path, pkgs)
    probe = SlowLockProbe(sandbox, tmp_path / "wavekit.db", delay=0.4)
    errors: list[BaseException] = []

    def run(pkg: PackageDef) -> None:
        try:
            deploy(runtime(url, probe, batch_size=10), pkg.key)
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(p,)) for p in pkgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    took = time.monotonic() - started
    figures.record(f"{len(pkgs)} packages in parallel on a {probe.delay}s target: {probe.calls} "
                   f"target calls, {took:.1f}s, lock held during {len(probe.held)} calls")
    assert errors == []
    assert probe.held == []
    live = sandbox.read_grants(ENTS)
    for p in pkgs:
        scope = set(p.grants) | set(p.removes) | set(p.retires)
        prior = {g for g in seed if g.entitlement in scope}
        assert {g for g in live if g.entitlement in scope} == intended(prior, p)
    with session_scope(url) as s:
        assert {p.state for p in s.exec(select(RolePackage))} == {"watching"}


def test_a_deploy_that_stops_leaves_an_audit_event_and_a_clear_error(tmp_path: Path) -> None:
    [pkg] = packages(1)
    url, sandbox, seed = world(tmp_path, [pkg])
    down = DownAtBatch(sandbox, index=2, label="SCIM target http://127.0.0.1:9/v2")
    with pytest.raises(TargetUnavailable) as stopped:
        deploy(runtime(url, down, batch_size=5), pkg.key)
    said = str(stopped.value)
    assert said.startswith("SCIM target http://127.0.0.1:9/v2: ") and "(batch 2)" in said
    assert "\n" not in said
    with session_scope(url) as s:
        [event] = audit.events(s, package_key=pkg.key, action="stage_failed")
        pkg_row = s.get(RolePackage, pkg.key)
        assert pkg_row.state == "deploying"
        assert pkg_row.state_reason.startswith("deploy stopped at batch 2: SCIM target")
    assert event.detail["stage"] == "deploy" and event.detail["batch"] == 2
    assert event.detail["error"] == "TargetUnavailable"
    assert "hunter2" not in event.detail["message"] and "abc" not in event.detail["message"]
    assert "password=***" in event.detail["message"]
    # The target comes back: a re-run resumes from the frozen plan and converges.
    deploy(runtime(url, sandbox, batch_size=5), pkg.key)
    scope = set(pkg.grants) | set(pkg.removes) | set(pkg.retires)
    prior = {g for g in seed if g.entitlement in scope}
    assert {g for g in sandbox.read_grants(ENTS) if g.entitlement in scope} == \
        intended(prior, pkg)


def test_a_stage_that_cannot_read_the_target_is_audited(tmp_path: Path) -> None:
    [pkg] = packages(1)
    url, _, _ = world(tmp_path, [pkg])

    class Down(SandboxTarget):
        def read_grants(self, entitlements):  # type: ignore[no-untyped-def]
            raise TargetUnavailable("connection refused", target="LDAP target ldap://x:1")

    with pytest.raises(TargetUnavailable, match=r"^LDAP target ldap://x:1: connection refused$"):
        rollout.stage_package(runtime(url, Down(url)), pkg.key, wave=1)
    with session_scope(url) as s:
        [event] = audit.events(s, package_key=pkg.key, action="stage_failed")
        assert s.exec(select(Release)).all() == []  # nothing half-staged
    assert event.detail["stage"] == "stage" and event.detail["batch"] is None


class Alerts:
    """A notifier that keeps what it was asked to post."""

    def __init__(self) -> None:
        self.rollbacks: list[dict] = []

    def post_rollback(self, **kw) -> None:  # type: ignore[no-untyped-def]
        self.rollbacks.append(kw)


def test_a_dropped_write_leaves_the_rollback_unproven_and_alerted(tmp_path: Path) -> None:
    [pkg] = packages(1)
    url, sandbox, seed = world(tmp_path, [pkg])
    deploy(runtime(url, sandbox), pkg.key)
    removed = sorted(g for g in seed if g.entitlement in pkg.removes and g.identity
                     in pkg.members)
    lost = removed[0]
    alerts = Alerts()
    rt = runtime(url, DropsWrites(sandbox, {lost}), notifier=alerts)
    with pytest.raises(rollback.RollbackUnproven, match="1 grant"):
        roll_back(rt, pkg.key)
    with session_scope(url) as s:
        row = s.get(RolePackage, pkg.key)
        unproven = audit.events(s, package_key=pkg.key, action="rollback_unproven")
        release = s.exec(select(Release)).one()
    assert row.state == "rolling_back"
    assert row.state_reason.startswith("rollback unproven (gave up): 1 grant(s) differ")
    assert len(unproven) == rollback.ROLLBACK_ROUNDS
    assert unproven[-1].detail["missing"] == [list(lost)] and unproven[-1].detail["final"]
    assert release.rolled_back_at is None and not release.closed
    [alert] = alerts.rollbacks
    assert alert["equal"] is False and alert["reason"].startswith("UNPROVEN")
    # The next run, with a target that keeps its writes, proves it.
    outcome = roll_back(runtime(url, sandbox), pkg.key)
    assert outcome.proof.equal
    assert sandbox.read_grants(ENTS) == seed


def test_a_write_dropped_once_is_restored_by_the_bounded_retry(tmp_path: Path) -> None:
    [pkg] = packages(1)
    url, sandbox, seed = world(tmp_path, [pkg])
    deploy(runtime(url, sandbox), pkg.key)
    lost = min(g for g in seed if g.entitlement in pkg.removes and g.identity in pkg.members)
    flaky = DropsWrites(sandbox, {lost}, times=1)
    outcome = roll_back(runtime(url, flaky), pkg.key)
    assert flaky.dropped == 1 and outcome.proof.equal
    with session_scope(url) as s:
        assert s.get(RolePackage, pkg.key).state == "rolled_back"
        assert len(audit.events(s, package_key=pkg.key, action="rollback_unproven")) == 1
    assert sandbox.read_grants(ENTS) == seed


def test_a_crash_between_deployed_and_launch_retirement_is_completed(tmp_path: Path) -> None:
    base = packages(1)[0]
    pkg = PackageDef(base.key, base.members, base.grants, base.removes, base.retires,
                     retire_in_launch_window=True)
    url, sandbox, seed = world(tmp_path, [pkg])
    rt = runtime(url, sandbox)
    deploy(rt, pkg.key, retire=False)  # the process died right after "deployed"
    retired = {g for g in seed if g.entitlement in pkg.retires and g.identity in pkg.members}
    assert retired and retired <= sandbox.read_grants(ENTS)
    # What roll-out-package does on a re-run: the package is skipped (Watching) and its
    # undone launch-window retirement is found and done.
    staged = rollout.stage_package(rt, pkg.key, wave=1)
    assert staged.skipped == "already Watching"
    due = rollout.launch_retirements_due(rt, pkg.key, rt.clock.now())
    assert len(due) == 1
    assert rollout.retire_legacy(rt, due[0]) == len(retired)
    assert not retired & sandbox.read_grants(ENTS)
    assert rollout.launch_retirements_due(rt, pkg.key, rt.clock.now()) == []
