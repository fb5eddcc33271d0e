"""What the target's credentials may do: the permissions wavekit needs, verified, and a warning
when they can do far more (`wavekit check-target`).

wavekit needs, and should get, only this:

- LDAP: read the users under the user base (their identity attribute); write `member` of the
  groups under the group base. Not the directory's root DN, not userPassword.
- SCIM: read Users; read and PATCH Groups. Not creating or deleting Users.

Every check is safe on production: reads, a write that puts back exactly what it read (LDAP
`member` replaced by its own values, a SCIM group's displayName replaced by itself), and
probes that cannot change anything (an empty user creation the service must refuse, a
delete of a user id that does not exist).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import ldap3.core.exceptions as lx
from ldap3 import BASE, MODIFY_REPLACE, SUBTREE, Connection

from wavekit.adapters.targets.ldap import LdapTarget, build_connection
from wavekit.adapters.targets.scim import ScimSession, ScimTarget

Status = Literal["ok", "warn", "fail"]
# Bind DNs that name a directory's administrator rather than a service account.
_ADMIN_DN = re.compile(r"^\s*cn\s*=\s*(admin|administrator|manager|root|directory manager)\s*,",
                       re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str


def check_target(target: Any) -> list[Finding]:
    """The findings for `target` (sandbox: nothing to check)."""
    if isinstance(target, LdapTarget):
        return check_ldap(target)
    if isinstance(target, ScimTarget):
        return check_scim(target)
    return [Finding("permissions", "ok", f"{target.name}: a sandbox in the store needs none")]


# ---------------------------------------------------------------- LDAP


def _search(conn: Connection, base: str, query: str, attributes: list[str]
            ) -> list[dict[str, Any]]:
    try:
        conn.search(base, query, SUBTREE, attributes=attributes, size_limit=1)
    except lx.LDAPSizeLimitExceededResult:
        pass
    except lx.LDAPNoSuchObjectResult:
        return []
    return [e for e in conn.response or [] if e.get("type") == "searchResEntry"]


def check_ldap(target: LdapTarget) -> list[Finding]:
    cfg = target.config
    out: list[Finding] = []
    conn = build_connection(cfg)
    try:
        conn.open()
        if cfg.start_tls:
            conn.start_tls()
        conn.bind()
    except lx.LDAPException as exc:
        return [Finding("bind", "fail", f"cannot bind as {cfg.bind_dn}: {type(exc).__name__}")]
    try:
        who = conn.extend.standard.who_am_i() or cfg.bind_dn
        out.append(Finding("bind", "ok", f"bound as {who}"))
        users = _search(conn, cfg.user_base, f"({cfg.identity_attribute}=*)",
                        [cfg.identity_attribute])
        out.append(Finding("read users", "ok", f"read users under {cfg.user_base}") if users
                   else Finding("read users", "fail", f"no user with {cfg.identity_attribute} "
                                f"is readable under {cfg.user_base}"))
        out.append(_member_write(conn, target))
        if _ADMIN_DN.match(cfg.bind_dn):
            out.append(Finding("least privilege", "warn",
                               f"binds as {cfg.bind_dn}, a directory administrator (root DN?); "
                               f"bind a service account that may only write member under "
                               f"{cfg.group_base} and read users"))
        if any(e.get("attributes", {}).get("userPassword")
               for e in _search(conn, cfg.user_base, "(userPassword=*)", ["userPassword"])):
            out.append(Finding("least privilege", "warn",
                               "can read users' password hashes (userPassword): far more "
                               "than wavekit needs"))
    finally:
        conn.unbind()
    return out


def _member_write(conn: Connection, target: LdapTarget) -> Finding:
    """Replace one group's member with the values it has: a write that changes nothing."""
    cfg = target.config
    attr = cfg.member_attribute
    groups = _search(conn, cfg.group_base, f"(objectClass={cfg.group_object_class})", [attr])
    if not groups:
        return Finding("write member", "warn", f"no {cfg.group_object_class} under "
                       f"{cfg.group_base} to test a write on")
    dn = groups[0]["dn"]
    conn.search(dn, "(objectClass=*)", BASE, attributes=[attr])  # its values, all of them
    values = [v for e in conn.response or [] for v in e.get("attributes", {}).get(attr, [])]
    if not values:
        return Finding("write member", "warn", f"{dn} has no {attr} to write back")
    try:
        conn.modify(dn, {attr: [(MODIFY_REPLACE, values)]})
    except lx.LDAPInsufficientAccessRightsResult:
        return Finding("write member", "fail", f"may not write {attr} of {dn} "
                       "(insufficient access)")
    except lx.LDAPOperationResult as exc:
        return Finding("write member", "fail", f"writing {attr} of {dn} failed: "
                       f"{exc.description}")
    return Finding("write member", "ok", f"wrote {attr} of {dn} back unchanged")


# ---------------------------------------------------------------- SCIM


def _status(client: httpx.Client, method: str, url: str, **kw: Any) -> httpx.Response | str:
    try:
        return client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"


def check_scim(target: ScimTarget) -> list[Finding]:
    out: list[Finding] = []
    with ScimSession._build_client(target.config, None) as client:
        users = _status(client, "GET", "Users", params={"count": 1})
        out.append(_verdict("read users", users, "GET /Users"))
        groups = _status(client, "GET", "Groups", params={"count": 1})
        out.append(_verdict("read groups", groups, "GET /Groups"))
        found = groups.json().get("Resources", []) if isinstance(groups, httpx.Response) \
            and groups.status_code == 200 else []
        if found:
            group = found[0]
            patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                     "Operations": [{"op": "replace", "path": "displayName",
                                     "value": group.get("displayName", "")}]}
            done = _status(client, "PATCH", f"Groups/{group['id']}", json=patch)
            out.append(_verdict("patch groups", done, f"PATCH /Groups/{group['id']} "
                                "(displayName replaced by itself)"))
        else:
            out.append(Finding("patch groups", "warn", "no group to test a PATCH on"))
        # Probes that change nothing: a user creation without a body, a delete of no one.
        create = _status(client, "POST", "Users", json={})
        if isinstance(create, httpx.Response) and create.status_code not in (401, 403):
            out.append(Finding("least privilege", "warn",
                               f"may create users (POST /Users answered {create.status_code}, "
                               "not 403): far more than wavekit needs"))
        delete = _status(client, "DELETE", f"Users/{uuid.uuid4()}")
        if isinstance(delete, httpx.Response) and delete.status_code not in (401, 403):
            out.append(Finding("least privilege", "warn",
                               f"may delete users (DELETE /Users/<no one> answered "
                               f"{delete.status_code}, not 403)"))
    return out


def _verdict(check: str, response: httpx.Response | str, what: str) -> Finding:
    if isinstance(response, str):
        return Finding(check, "fail", f"{what}: {response}")
    if response.status_code in (200, 204):
        return Finding(check, "ok", f"{what}: {response.status_code}")
    return Finding(check, "fail", f"{what}: refused with {response.status_code}")
