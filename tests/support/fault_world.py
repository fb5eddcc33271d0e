"""A small world for fault tests: a catalog written on the fly, the rollout driven through the
domain (the same functions the wave flow's tasks call, without Prefect), and independent
reads of the SCIM server and slapd that share nothing with wavekit's targets."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tests.support.flows import owner_of
from wavekit.adapters.settings import load_settings
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.packages import load_package_view
from wavekit.adapters.targets.base import Target
from wavekit.domain.grants import Grant, GrantSet
from wavekit.workflow import rollback, rollout
from wavekit.workflow.runtime import Runtime, build_runtime

ROOT = Path(__file__).resolve().parents[2]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child python: this checkout first on PYTHONPATH (src and the
    root, for tests/ and flows/), whatever the parent was started with."""
    paths = [str(ROOT / "src"), str(ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


PYTHON = sys.executable


@dataclass(frozen=True)
class PackageDef:
    key: str
    members: list[str]
    grants: list[str]
    removes: list[str]
    retires: list[str]
    # True: the flow's rule retires legacy grants right after the deploy (Watching); False:
    # only after a clean watch, which these tests never reach.
    retire_in_launch_window: bool = True


def write_catalog_dir(path: Path, identities: Iterable[str], entitlements: Iterable[str],
                      packages: Iterable[PackageDef]) -> Path:
    """A catalog directory in the documented format; every gate wavekit checks can pass."""
    path.mkdir(parents=True, exist_ok=True)
    packages = list(packages)
    doc = {
        "waves": [{"number": 1, "name": "Wave 1", "window_start": dt.date(2026, 4, 8),
                   "window_end": dt.date(2026, 4, 22)}],
        "packages": [{
            "key": p.key, "name": p.key.title(), "wave": 1, "risk": "low",
            "owner": {"name": f"Owner of {p.key}", "slack_id": "UOWNER", "email":
                      "owner@example.com"},
            "delegates": [{"name": "Delegate", "slack_id": "UDELEG"}],
            "fallback": {"plan": "restore the prior bundle", "drill": "signed"},
            "entitlements": p.grants, "removes": p.removes, "retires": p.retires,
            "retire_in_launch_window": p.retire_in_launch_window,
        } for p in packages],
    }
    (path / "packages.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (path / "identities.csv").write_text(
        "id,display_name,email,department,business_unit,title,location,kind,active,slack_id,"
        "manager\n" + "".join(f"{i},User {i},{i}@example.com,Test,Test,Tester,London,person,"
                              "true,,\n" for i in identities))
    (path / "entitlements.csv").write_text(
        "key,name,system,description,privileged\n"
        + "".join(f"{e},{e},Test,,false\n" for e in entitlements))
    (path / "memberships.csv").write_text(
        "package,identity\n" + "".join(f"{p.key},{m}\n" for p in packages for m in p.members))
    return path


def load_world(url: str, catalog_dir: Path) -> None:
    from wavekit.adapters.catalog import load_catalog, write_catalog  # pandas: not in drivers

    with session_scope(url) as s:
        write_catalog(s, load_catalog(catalog_dir))


def runtime(url: str, target: Target, batch_size: int = 200, notifier: object = None
            ) -> Runtime:
    settings = load_settings(database_url=url, batch_size=batch_size)
    rt = build_runtime(settings, target=target, notifier=notifier, metrics=NoMetrics())
    rt.notifier = notifier  # None: no Slack, whatever the environment says
    return rt


class NoMetrics:
    """The rollout takes no health measurements here (and a driver skips pandas)."""

    def measure(self, *_: object) -> dict[str, float | None]:
        return {}


def retire_when_due(rt: Runtime, key: str) -> None:
    """The flow's rule (domain/retirement.py via launch_retirements_due), as roll_out_package
    applies it after its deploy and on a skipped re-run: legacy grants retire now only in
    the launch window of a package that asks for it."""
    for release_id in rollout.launch_retirements_due(rt, key, rt.clock.now()):
        rollout.retire_legacy(rt, release_id)


def deploy(rt: Runtime, key: str, *, retire: bool = True) -> rollout.StageOutcome:
    """Stage, approve, check, deploy and retire when due, as the flow would (re-entrant: a
    re-run after a crash resumes from the frozen plan). retire=False: the process died right
    after "deployed"."""
    staged = rollout.stage_package(rt, key, wave=1, triggered_by="fault-test")
    assert not staged.held, staged.held
    if staged.skipped:
        if retire:  # a crash after deploy may have left the retirement undone
            retire_when_due(rt, key)
        return staged
    assert staged.release_id is not None
    if not staged.resuming_deploy:
        request = rollout.request_handoff(rt, staged.release_id)
        assert rollout.record_decision(rt, request.approval_id, "approve",
                                       owner_of(rt.database_url, key),
                                       proof="unverified") == "approved"
        assert all(g.passed for g in rollout.enforce_gates(rt, staged.release_id))
    rollout.deploy_package(rt, staged.release_id)
    if retire:
        retire_when_due(rt, key)
    return staged


def roll_back(rt: Runtime, key: str) -> rollback.RollbackOutcome:
    rid = rollback.find_release(rt, key)
    rollback.begin_rollback(rt, rid, "fault test")
    return rollback.verify_and_record(rt, rid, *rollback.restore_prior_bundle(rt, rid))


def intended(prior: GrantSet, pkg: PackageDef, *, retired: bool | None = None) -> GrantSet:
    """What the target must hold in the package's scope after a full deploy (retired: the
    legacy grants are gone; by default when the package retires in its launch window)."""
    retired = pkg.retire_in_launch_window if retired is None else retired
    members = set(pkg.members)
    gone = set(pkg.removes) | (set(pkg.retires) if retired else set())
    kept = {g for g in prior if not (g.identity in members and g.entitlement in gone)}
    return frozenset(kept | {Grant(m, e) for m in members for e in pkg.grants})


def scope_of(pkg: PackageDef) -> set[str]:
    return set(pkg.grants) | set(pkg.removes) | set(pkg.retires)


def package_scope(url: str, key: str) -> frozenset[str]:
    with session_scope(url) as s:
        return load_package_view(s, key).scope


# ------------------------------------------------------------------ independent reads


def scim_members(base_url: str, token: str, groups: Iterable[str],
                 names: dict[str, str] | None = None) -> dict[str, list[str]]:
    """group displayName -> member userNames, duplicates kept, read with plain httpx.

    names: a cache of user id -> userName the caller keeps while its users do not change
    (read once, filled here when empty)."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/scim+json"}
    out: dict[str, list[str]] = {}
    names = {} if names is None else names
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        start, reading = 1, not names
        while reading:
            page = http.get("/Users", params={"startIndex": start, "count": 500}).json()
            found = page.get("Resources") or []
            names.update({u["id"]: u["userName"] for u in found})
            start += len(found)
            reading = bool(found) and start <= page.get("totalResults", 0)
        for group in groups:
            page = http.get("/Groups", params={"filter": f'displayName eq "{group}"'}).json()
            resources = page.get("Resources") or []
            assert len(resources) <= 1, f"{len(resources)} groups named {group}"
            if not resources:
                out[group] = []
                continue
            full = http.get(f"/Groups/{resources[0]['id']}").json()
            out[group] = [names.get(m["value"], m["value"]) for m in full.get("members") or []]
    return out


def ldap_members(config: object, groups: Iterable[str]) -> dict[str, list[str]]:
    """group cn -> member values exactly as stored (placeholder dropped), plain ldap3."""
    from ldap3 import SUBTREE, Connection, Server

    c = config  # an LdapConfig; only its fields are used
    server = Server(c.host, port=c.port, connect_timeout=10)  # type: ignore[attr-defined]
    conn = Connection(server, c.bind_dn, c.password, auto_bind=True,  # type: ignore[attr-defined]
                      receive_timeout=30)
    out: dict[str, list[str]] = {}
    try:
        for group in groups:
            conn.search(c.group_base, f"(cn={group})", SUBTREE,  # type: ignore[attr-defined]
                        attributes=["member"])
            entries = [e for e in conn.response if e.get("type") == "searchResEntry"]
            assert len(entries) <= 1
            values = entries[0]["attributes"].get("member", []) if entries else []
            out[group] = [v for v in values if "empty-membership-placeholder" not in v]
    finally:
        conn.unbind()
    return out


def as_grants(members: Mapping[str, list[str]], identity_of=lambda v: v) -> GrantSet:  # type: ignore[no-untyped-def]
    return frozenset(Grant(identity_of(m), g) for g, ms in members.items() for m in ms)


def ldap_uid(dn: str) -> str:
    first = dn.split(",", 1)[0]
    return first.split("=", 1)[1] if first.lower().startswith("uid=") else dn


def duplicates(members: Mapping[str, list[str]], key=lambda v: v.lower()) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Groups whose member list repeats a member, with how many extra."""
    return {g: len(ms) - len({key(m) for m in ms}) for g, ms in members.items()
            if len(ms) != len({key(m) for m in ms})}
