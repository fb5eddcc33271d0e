"""P1 and P2 at target level against the best raw client on the same loopback servers.

The raw clients know every DN / resource id up front and send one request per group with all
its members (ldap3 modify; httpx PATCH of every member; SCIM Bulk with one operation per
group when the server offers it): the fastest a script can write, reading nothing first.
wavekit goes through `Target.apply` (group and user lookups, diffing, batches of 500).
Repetitions are interleaved (wavekit, raw, wavekit, raw, ...) into fresh groups each time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from wavekit.domain.grants import Grant

Timings = dict[str, list[float]]


@dataclass(frozen=True)
class Row:
    """Medians of interleaved repetitions: wavekit's time and each raw client's."""

    wavekit_s: float
    raw_s: dict[str, float]
    note: str


def _interleave(reps: int, runs: dict[str, Callable[[int], None]]) -> dict[str, float]:
    times: Timings = {name: [] for name in runs}
    for rep in range(reps):
        for name, run in runs.items():
            start = time.perf_counter()
            run(rep)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _people(n: int) -> list[dict[str, Any]]:
    return [{"id": f"bench{i:05d}", "display_name": f"Bench User {i}",
             "email": f"bench{i:05d}@example.com"} for i in range(n)]


# ------------------------------------------------------------------ LDAP


@dataclass
class LdapPair:
    """A provisioned slapd with wavekit's target and a raw ldap3 connection, both bound."""

    config: Any  # LdapConfig
    people: list[dict[str, Any]]
    dns: list[str]  # the people's DNs, in order
    target: Any  # LdapTarget
    conn: Any  # ldap3.Connection


@contextmanager
def ldap_pair(members: int, groups: Iterable[str]) -> Iterator[LdapPair]:
    """slapd on loopback holding `members` people and the empty `groups`, with an LdapTarget
    and a raw ldap3 connection on it (closed, and slapd stopped, on the way out)."""
    from wavekit.adapters.targets.ldap import (
        LdapTarget,
        build_connection,
        provision_ldap_directory,
    )
    from wavekit.devservers.slapd import run_local_slapd

    with run_local_slapd() as config:
        people = _people(members)
        provision_ldap_directory(config, people, groups)
        target = LdapTarget(config)
        conn = build_connection(config)
        conn.open()
        conn.bind()
        try:
            yield LdapPair(config, people, [f"uid={p['id']},{config.user_base}" for p in people],
                           target, conn)
        finally:
            conn.unbind()
            target.close()


def ldap_raw_add(pair: LdapPair, group: str) -> None:
    """The raw client's write: one modify adding every member to `group`."""
    from ldap3 import MODIFY_ADD

    config = pair.config
    if not pair.conn.modify(f"cn={group},{config.group_base}",
                            {config.member_attribute: [(MODIFY_ADD, pair.dns)]}):
        raise AssertionError(f"raw modify failed: {pair.conn.result}")


def ldap_apply(groups: int, members: int, reps: int = 3) -> Row:
    """P1: `LdapTarget.apply` of groups x members vs ldap3, one modify per group."""
    names = {(who, rep, g): f"p1-{who}-{rep}-{g:02d}"
             for who in ("wk", "raw") for rep in range(reps) for g in range(groups)}
    with ldap_pair(members, names.values()) as pair:
        people, target = pair.people, pair.target

        def wk(rep: int) -> None:
            adds = [Grant(p["id"], names["wk", rep, g]) for g in range(groups) for p in people]
            if target.apply(adds, []).added != len(adds):
                raise AssertionError("LdapTarget.apply did not add every grant")

        def raw(rep: int) -> None:
            for g in range(groups):
                ldap_raw_add(pair, names["raw", rep, g])

        med = _interleave(reps, {"wk": wk, "raw": raw})
        held = target.read_grants([names["raw", 0, g] for g in range(groups)])
    if len(held) != groups * members:
        raise AssertionError(f"raw client left {len(held)} grants, expected {groups * members}")
    return Row(med["wk"], {"ldap3": med["raw"]},
               "raw: ldap3, DNs known, one modify per group with all members")


def ldap_rollback(members: int, entitlements: int = 2, reps: int = 3) -> Row:
    """P2: remove a package's grants and read them back, LdapTarget vs ldap3."""
    from ldap3 import BASE, MODIFY_DELETE

    names = {(who, rep, e): f"p2-{who}-{rep}-{e}"
             for who in ("wk", "raw") for rep in range(reps) for e in range(entitlements)}
    with ldap_pair(members, names.values()) as pair:
        config, target, conn = pair.config, pair.target, pair.conn
        attr = config.member_attribute
        for name in names.values():  # every package deployed (not timed)
            ldap_raw_add(pair, name)

        def wk(rep: int) -> None:
            scope = [names["wk", rep, e] for e in range(entitlements)]
            grants = target.read_grants(scope)
            target.apply([], grants)
            if target.read_grants(scope):
                raise AssertionError("LdapTarget rollback left grants behind")

        def raw(rep: int) -> None:
            for e in range(entitlements):
                dn = f"cn={names['raw', rep, e]},{config.group_base}"
                conn.search(dn, "(objectClass=*)", BASE, attributes=[attr])
                held = [v for v in conn.entries[0][attr].values
                        if v != config.empty_group_placeholder]
                conn.modify(dn, {attr: [(MODIFY_DELETE, held)]})
                conn.search(dn, "(objectClass=*)", BASE, attributes=[attr])
                left = [v for v in conn.entries[0][attr].values
                        if v != config.empty_group_placeholder]
                if left:
                    raise AssertionError("raw rollback left members behind")

        med = _interleave(reps, {"wk": wk, "raw": raw})
    return Row(med["wk"], {"ldap3": med["raw"]},
               "both read the groups, remove every member, read back empty; raw: ldap3, "
               "one modify per group")


# ------------------------------------------------------------------ SCIM


@dataclass
class ScimPair:
    """A provisioned scim2-server with wavekit's target and a raw httpx client on it."""

    config: Any  # ScimConfig
    people: list[dict[str, Any]]
    target: Any  # ScimTarget
    user_ids: list[str]  # the people's SCIM ids, in order
    group_ids: dict[str, str]  # displayName -> SCIM id
    client: Any  # httpx.Client, authorised, base_url set

    def patch_body(self) -> dict[str, Any]:
        """One PATCH adding every member."""
        from wavekit.adapters.targets.scim import PATCH_OP

        return {"schemas": [PATCH_OP], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": u} for u in self.user_ids]}]}


@contextmanager
def scim_pair(members: int, groups: Iterable[str], server: Any = None) -> Iterator[ScimPair]:
    """scim2-server on loopback holding `members` people and the empty `groups`, with a
    ScimTarget and a raw httpx client on it (closed, and the server stopped, on the way out).
    server: the ScimConfig of a running server, whose fresh tenant (an empty directory) is
    used instead of starting one."""
    import httpx

    from wavekit.adapters.targets.scim import ScimTarget, provision_scim_directory
    from wavekit.devservers.scim import fresh_tenant, run_local_scim_server

    groups = list(groups)
    with ExitStack() as stack:
        config = (fresh_tenant(server) if server is not None
                  else stack.enter_context(run_local_scim_server()))
        people = _people(members)
        target = ScimTarget(config)
        try:
            provision_scim_directory(target, people, groups)
            by_id = target._identity_ids({p["id"] for p in people})
            user_ids = [by_id[p["id"]] for p in people]
            group_ids = target._group_ids_for(groups)
            token = config.token.get_secret_value() if config.token else ""
            with httpx.Client(base_url=config.base_url, timeout=120.0,
                              headers={"Authorization": f"Bearer {token}",
                                       "Content-Type": "application/scim+json"}) as client:
                yield ScimPair(config, people, target, user_ids, group_ids, client)
        finally:
            target.close()


def scim_raw_patch(pair: ScimPair, group: str) -> None:
    """The raw client's write: one PATCH adding every member to `group`."""
    pair.client.patch(f"/Groups/{pair.group_ids[group]}", json=pair.patch_body()
                      ).raise_for_status()


def scim_apply(groups: int, members: int, reps: int = 3, server: Any = None) -> Row:
    """P1: `ScimTarget.apply` vs httpx PATCH (all members per request) and SCIM Bulk; on a
    fresh tenant of `server` (a running server's ScimConfig) when given."""
    from wavekit.adapters.targets.scim import ScimSession

    names = {(who, rep, g): f"p1-{who}-{rep}-{g:02d}" for who in ("wk", "patch", "bulk")
             for rep in range(reps) for g in range(groups)}
    with scim_pair(members, names.values(), server) as pair:
        people, target, client = pair.people, pair.target, pair.client

        def wk(rep: int) -> None:
            adds = [Grant(p["id"], names["wk", rep, g]) for g in range(groups) for p in people]
            if target.apply(adds, []).added != len(adds):
                raise AssertionError("ScimTarget.apply did not add every grant")

        def patch(rep: int) -> None:
            for g in range(groups):
                scim_raw_patch(pair, names["patch", rep, g])

        limits = target.session.bulk_limits

        def bulk_run(rep: int) -> None:
            ops = [{"method": "PATCH", "bulkId": f"b{g}", "data": pair.patch_body(),
                    "path": f"/Groups/{pair.group_ids[names['bulk', rep, g]]}"}
                   for g in range(groups)]
            assert limits is not None
            # As few requests as the advertised maxOperations / maxPayloadSize allow.
            for chunk in ScimSession._pack(ops, *limits):
                client.post("/Bulk", json={"schemas": [
                    "urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": chunk}
                ).raise_for_status()

        runs: dict[str, Callable[[int], None]] = {"wk": wk, "patch": patch}
        if limits is not None:
            runs["bulk"] = bulk_run
        med = _interleave(reps, runs)
        held = target.read_grants([names["patch", 0, g] for g in range(groups)])
    if len(held) != groups * members:
        raise AssertionError(f"raw PATCH left {len(held)} grants, expected {groups * members}")
    raw = {"httpx PATCH": med["patch"]}
    if "bulk" in med:
        raw["SCIM Bulk"] = med["bulk"]
    return Row(med["wk"], raw, "raw: httpx, resource ids known, one PATCH per group with all "
               "members" + ("; SCIM Bulk: one operation per group, as few requests as the "
                            "server's limits allow" if "bulk" in med
                            else "; the server offers no Bulk"))
