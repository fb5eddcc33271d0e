"""The LDAP target (OpenLDAP and friends, through ldap3): entitlements are groups, grants members.

An entitlement key is a group's cn under `group_base`; an identity is a user's uid under
`user_base` (an entry without one is named by its DN). Each batch reads the groups it
touches, diffs, and sends ONE modify per group with all its adds and deletes: a modify
with 1,499 members took 0.035 s where 1,500 one-member modifies took 2.57 s, and adding
a present member (20) or deleting an absent one (16) fails the whole modify.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import ssl
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from wavekit.adapters.targets.base import (
    BATCH_SIZE,
    ApplyResult,
    BatchResult,
    ClosesOnExit,
    ProgressCallback,
    Snapshot,
    TargetAuthError,
    TargetError,
    TargetRefused,
    TargetUnavailable,
    apply_in_batches,
)
from wavekit.adapters.targets.resilience import (
    RateLimiter,
    RetryableError,
    RetryPolicy,
    build_rate_limiter,
)
from wavekit.domain.grants import Grant, GrantSet, by_entitlement

T = TypeVar("T")

GROUP_MEMBER_ATTRIBUTE = {"groupofnames": "member", "groupofuniquenames": "uniqueMember"}
_GROUP_CLASS_NAMES = {"groupofnames": "groupOfNames", "groupofuniquenames": "groupOfUniqueNames"}
_PAGED_RESULTS = "1.2.840.113556.1.4.319"
_FILTER_CHUNK = 200  # values per OR filter: a few KB of filter, far below server limits
_CONFLICT_ROUNDS = 3  # re-read and re-diff a group someone else changed under us
_TRUE = {"1", "true", "yes", "on"}

# The server is busy or gone, or the wire broke: worth reconnecting and trying again.
_RETRYABLE_RESULTS = (lx.LDAPBusyResult, lx.LDAPUnavailableResult)
_CONNECTION_ERRORS = (lx.LDAPCommunicationError, lx.LDAPResponseTimeoutError, OSError)


class LdapConfigError(ValueError):
    """The LDAP target is configured wrongly or incompletely."""


@dataclass(frozen=True)
class LdapConfig:
    """How to reach the directory and where users and groups live; the password never prints."""

    url: str
    bind_dn: str
    password: str = field(repr=False)
    base_dn: str
    user_base: str = ""  # default "ou=people,<base_dn>"
    group_base: str = ""  # default "ou=groups,<base_dn>"
    group_object_class: str = "groupOfNames"
    group_name_attribute: str = "cn"
    identity_attribute: str = "uid"
    start_tls: bool = False
    ca_file: str | None = None
    page_size: int = 500
    timeout: float = 30.0
    empty_group_placeholder: str = ""  # default "cn=empty-membership-placeholder,<base_dn>"
    prefect_rate_limit: str | None = None

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme.lower()
        if scheme not in ("ldap", "ldaps"):
            raise LdapConfigError(f"LDAP url must start with ldap:// or ldaps://, got {self.url!r}")
        if scheme == "ldaps" and self.start_tls:
            raise LdapConfigError("start_tls applies to ldap:// urls; ldaps:// is TLS already")
        klass = _GROUP_CLASS_NAMES.get(self.group_object_class.lower())
        if not klass:
            raise LdapConfigError(f"group_object_class must be groupOfNames or groupOfUniqueNames, "
                                  f"got {self.group_object_class!r}")
        if self.page_size < 1:
            raise LdapConfigError("page_size must be at least 1")
        # Frozen, so derived defaults are filled in through object.__setattr__.
        object.__setattr__(self, "group_object_class", klass)
        if not self.user_base:
            object.__setattr__(self, "user_base", f"ou=people,{self.base_dn}")
        if not self.group_base:
            object.__setattr__(self, "group_base", f"ou=groups,{self.base_dn}")
        if not self.empty_group_placeholder:
            object.__setattr__(self, "empty_group_placeholder",
                               f"cn=empty-membership-placeholder,{self.base_dn}")

    @property
    def member_attribute(self) -> str:
        return GROUP_MEMBER_ATTRIBUTE[self.group_object_class.lower()]

    @property
    def use_ssl(self) -> bool:
        return urlsplit(self.url).scheme.lower() == "ldaps"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (636 if self.use_ssl else 389)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LdapConfig:
        """Read WAVEKIT_LDAP_* variables; a missing required one is named in the error."""
        env = os.environ if environ is None else environ
        if env.get("WAVEKIT_LDAP_RATE_PER_SECOND"):  # removed: say so rather than ignore it
            raise LdapConfigError("WAVEKIT_LDAP_RATE_PER_SECOND is no longer read: name a "
                                  "Prefect global rate limit with "
                                  "WAVEKIT_LDAP_PREFECT_RATE_LIMIT")
        required = {"url": "WAVEKIT_LDAP_URL", "bind_dn": "WAVEKIT_LDAP_BIND_DN",
                    "password": "WAVEKIT_LDAP_PASSWORD", "base_dn": "WAVEKIT_LDAP_BASE_DN"}
        missing = [var for var in required.values() if not env.get(var)]
        if missing:
            raise LdapConfigError(f"the LDAP target needs {', '.join(missing)} "
                                  "in the environment")
        values: dict[str, Any] = {key: env[var] for key, var in required.items()}
        optional: dict[str, tuple[str, Callable[[str], Any]]] = {
            "user_base": ("WAVEKIT_LDAP_USER_BASE", str),
            "group_base": ("WAVEKIT_LDAP_GROUP_BASE", str),
            "group_object_class": ("WAVEKIT_LDAP_GROUP_CLASS", str),
            "group_name_attribute": ("WAVEKIT_LDAP_GROUP_NAME_ATTRIBUTE", str),
            "identity_attribute": ("WAVEKIT_LDAP_IDENTITY_ATTRIBUTE", str),
            "start_tls": ("WAVEKIT_LDAP_START_TLS", lambda v: v.strip().lower() in _TRUE),
            "ca_file": ("WAVEKIT_LDAP_CA_FILE", str),
            "page_size": ("WAVEKIT_LDAP_PAGE_SIZE", int),
            "timeout": ("WAVEKIT_LDAP_TIMEOUT", float),
            "empty_group_placeholder": ("WAVEKIT_LDAP_EMPTY_GROUP_PLACEHOLDER", str),
            "prefect_rate_limit": ("WAVEKIT_LDAP_PREFECT_RATE_LIMIT", str),
        }
        for key, (var, convert) in optional.items():
            raw = env.get(var)
            if raw:
                try:
                    values[key] = convert(raw)
                except ValueError as exc:
                    raise LdapConfigError(f"{var}={raw!r} is not valid: {exc}") from exc
        return cls(**values)


def build_connection(config: LdapConfig) -> Connection:
    """An unopened ldap3 Connection for `config`: TLS verified against ca_file (or system CAs)."""
    tls = None
    if config.use_ssl or config.start_tls:
        if config.ca_file and not os.path.exists(config.ca_file):
            raise LdapConfigError(f"LDAP CA file {config.ca_file} does not exist")
        # ldap3 does not verify certificates unless told to: always ask for it.
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file)
    server = Server(config.host, port=config.port, use_ssl=config.use_ssl, tls=tls,
                    connect_timeout=config.timeout, get_info=NONE)
    return Connection(server, user=config.bind_dn, password=config.password,
                      # ldap3 packs the receive timeout into a C struct: whole seconds only.
                      receive_timeout=max(1, math.ceil(config.timeout)), raise_exceptions=True,
                      auto_referrals=False, read_only=False)


@functools.lru_cache(maxsize=1 << 18)
def normalize_dn(dn: str) -> str:
    """A comparable form of a DN: attribute types and values lower-cased, spacing dropped.

    Cached: ldap3's parse_dn is pure Python, and a batch compares every member DN of its
    group, so a 2,000-member group parsed the same DNs thousands of times.
    """
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except lx.LDAPInvalidDnError:
        return dn.strip().lower()
    return "".join(f"{a.strip().lower()}={v.strip().lower()}{sep}" for a, v, sep in parts)


def _looks_like_dn(identity: str) -> bool:
    if "=" not in identity:
        return False
    try:
        parse_dn(identity)
    except lx.LDAPInvalidDnError:
        return False
    return True


def _values(entry: Mapping[str, Any], attribute: str) -> list[str]:
    value = entry.get("attributes", {}).get(attribute, [])
    if isinstance(value, str | bytes):
        value = [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in value]


def _or_filter(attribute: str, values: Iterable[str]) -> str:
    return "(|" + "".join(f"({attribute}={escape_filter_chars(v)})" for v in values) + ")"


def _chunks(items: list[str], size: int = _FILTER_CHUNK) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _name_list(names: Collection[str], limit: int = 20) -> str:
    shown = sorted(names)[:limit]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more


@dataclass
class _Group:
    """A group as read: its DN and its member values exactly as stored."""

    key: str
    dn: str
    members: list[str]


class LdapTarget(ClosesOnExit):
    """A target whose entitlements are LDAP groups and whose grants are group memberships."""

    def __init__(self, config: LdapConfig, *, retry: RetryPolicy | None = None,
                 rate_limiter: RateLimiter | None = None) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self.rate_limiter = rate_limiter or build_rate_limiter(config.prefect_rate_limit)
        self.name = f"ldap:{config.host}:{config.port}/{config.base_dn}"
        self.label = f"LDAP target {config.url}"  # how errors name this directory
        self._conn: Connection | None = None
        self._lock = threading.RLock()  # one ldap3 sync connection: one request at a time
        self._dn_by_identity: dict[str, str] = {}  # casefolded identity -> user DN
        self._identity_by_dn: dict[str, str] = {}  # normalized DN -> identity
        self._placeholder = normalize_dn(config.empty_group_placeholder)

    def __repr__(self) -> str:
        return f"LdapTarget({self.name!r})"

    # -- the Target protocol -------------------------------------------------------------

    def read_grants(self, entitlements: Collection[str]) -> GrantSet:
        return self.read_snapshot(entitlements).grants

    def read_snapshot(self, entitlements: Collection[str]) -> Snapshot:
        """The grants, and each member value exactly as the directory stores it."""
        groups = self._find_groups(set(entitlements))
        stored: dict[Grant, str] = {}
        for group in groups.values():
            for dn in group.members:
                if normalize_dn(dn) != self._placeholder:
                    stored.setdefault(Grant(self._identity_of(dn), group.key), dn)
        return Snapshot(frozenset(stored), stored)

    def apply_verbatim(self, adds: Iterable[Grant], removes: Iterable[Grant],
                       stored: Mapping[Grant, str], *, batch_size: int = BATCH_SIZE,
                       on_batch: ProgressCallback | None = None) -> ApplyResult:
        """apply(), adding each grant whose stored value is known as exactly that DN."""
        def batch(index: int, add: list[Grant], remove: list[Grant]) -> BatchResult:
            return self._apply_batch(index, add, remove, stored)

        return apply_in_batches(batch, adds, removes, batch_size, on_batch)

    def apply(
        self,
        adds: Iterable[Grant],
        removes: Iterable[Grant],
        *,
        batch_size: int = BATCH_SIZE,
        on_batch: ProgressCallback | None = None,
    ) -> ApplyResult:
        return apply_in_batches(self._apply_batch, adds, removes, batch_size, on_batch)

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- batches ---------------------------------------------------------------------------

    def _apply_batch(self, index: int, adds: list[Grant], removes: list[Grant],
                     stored: Mapping[Grant, str] | None = None) -> BatchResult:
        want_add, want_remove = by_entitlement(adds), by_entitlement(removes)
        keys = set(want_add) | set(want_remove)
        groups = self._find_groups(keys)
        identities = {g.identity for g in adds} | {g.identity for g in removes}
        resolved = self._resolve(identities)
        # Everything is checked before the first write: a bad name fails the batch untouched.
        unknown_groups = keys - groups.keys()
        unknown_ids = {g.identity for g in adds
                       if g.identity not in resolved and not (stored and g in stored)}
        members = {key: _Members(self, group) for key, group in groups.items()}
        for key, ids in want_remove.items():
            if key in members:
                # A deleted user's DN can linger in a group: removing it is still meaningful.
                unknown_ids |= {i for i in ids if i not in resolved
                                and i.casefold() not in members[key].by_identity}
        if unknown_groups or unknown_ids:
            parts = []
            if unknown_groups:
                parts.append(f"unknown groups under {self.config.group_base}: "
                             f"{_name_list(unknown_groups)}")
            if unknown_ids:
                parts.append(f"unknown identities under {self.config.user_base}: "
                             f"{_name_list(unknown_ids)}")
            raise TargetRefused("not applied; " + "; ".join(parts), target=self.label,
                                batch=index)
        added = removed = 0
        for key in sorted(keys):
            # The DN each add is written as: its stored form when rollback knows it.
            values = {i: (stored or {}).get(Grant(i, key)) or resolved[i]
                      for i in want_add.get(key, set())}
            a, r = self._converge_group(groups[key], members[key], values,
                                        want_remove.get(key, set()), resolved)
            added, removed = added + a, removed + r
        total = sum(map(len, want_add.values())) + sum(map(len, want_remove.values()))
        return BatchResult(index, added, removed, total - added - removed)

    def _converge_group(self, group: _Group, members: _Members, add_values: Mapping[str, str],
                        remove_ids: set[str], resolved: Mapping[str, str]) -> tuple[int, int]:
        """Diff one group against the wanted change and send one modify; (added, removed).
        `add_values` maps each identity to add to the member value to write."""
        for _ in range(_CONFLICT_ROUNDS):
            to_add = sorted({dn for i, dn in add_values.items()
                             if normalize_dn(dn) not in members.by_dn
                             and i.casefold() not in members.by_identity})
            to_delete = sorted({stored for i in remove_ids
                                if (stored := members.stored(i, resolved.get(i)))})
            if not to_add and not to_delete:
                return 0, 0
            ops: list[tuple[str, list[str]]] = []
            if to_add:
                ops.append((MODIFY_ADD, to_add))
            if to_delete:
                ops.append((MODIFY_DELETE, to_delete))
            # groupOfNames/groupOfUniqueNames need one member: park a placeholder in a group
            # that would be empty, and take it out as soon as a real member arrives.
            remaining = len(members.by_dn) - len(to_delete) + len(to_add)
            if remaining == 0 and not members.placeholders:
                ops.append((MODIFY_ADD, [self.config.empty_group_placeholder]))
            elif remaining > 0 and members.placeholders:
                ops.append((MODIFY_DELETE, members.placeholders))
            if self._modify(group.dn, {self.config.member_attribute: ops}):
                return len(to_add), len(to_delete)
            # Someone changed the group between our read and our write (or a retried modify
            # had already landed): read it again and diff again.
            group = self._read_group(group)
            members = _Members(self, group)
        raise TargetUnavailable(f"group {group.dn} kept changing while wavekit wrote it; "
                                "try again", target=self.label)

    # -- directory reads -------------------------------------------------------------------

    def _find_groups(self, keys: Collection[str]) -> dict[str, _Group]:
        """Wanted group names -> groups found under group_base (cn matches ignore case)."""
        wanted = {k.casefold(): k for k in keys}
        attr, member = self.config.group_name_attribute, self.config.member_attribute
        found: dict[str, _Group] = {}
        for chunk in _chunks(sorted(keys)):
            query = f"(&(objectClass={self.config.group_object_class}){_or_filter(attr, chunk)})"
            for entry in self._search(self.config.group_base, query, [attr, member]):
                for name in _values(entry, attr):
                    key = wanted.get(name.casefold())
                    if key is None:
                        continue
                    if key in found and normalize_dn(found[key].dn) != normalize_dn(entry["dn"]):
                        raise TargetError(f"group name {key!r} is ambiguous: {found[key].dn} "
                                          f"and {entry['dn']}")
                    found[key] = _Group(key, entry["dn"], _values(entry, member))
        return found

    def _read_group(self, group: _Group) -> _Group:
        entries = self._search(group.dn, "(objectClass=*)", [self.config.member_attribute],
                               scope=BASE)
        if not entries:
            raise TargetRefused(f"group {group.dn} disappeared while wavekit wrote it",
                                target=self.label)
        return _Group(group.key, group.dn, _values(entries[0], self.config.member_attribute))

    def _resolve(self, identities: Collection[str]) -> dict[str, str]:
        """Identity -> user DN for the identities that exist; OR-filter searches, cached."""
        out: dict[str, str] = {}
        ids, dns = [], []
        identity: str | None  # below, None for a value no identity asked for
        for identity in identities:
            if (dn := self._dn_by_identity.get(identity.casefold())) is not None:
                out[identity] = dn
            elif _looks_like_dn(identity):
                dns.append(identity)
            else:
                ids.append(identity)
        attr = self.config.identity_attribute
        wanted = {i.casefold(): i for i in ids}
        for chunk in _chunks(sorted(ids)):
            for entry in self._search(self.config.user_base, _or_filter(attr, chunk), [attr]):
                for value in _values(entry, attr):
                    identity = wanted.get(value.casefold())
                    if identity is None:
                        continue
                    if identity in out and normalize_dn(out[identity]) != normalize_dn(
                            entry["dn"]):
                        raise TargetError(f"identity {identity!r} is ambiguous: {out[identity]} "
                                          f"and {entry['dn']}")
                    out[identity] = entry["dn"]
                    self._identity_by_dn[normalize_dn(entry["dn"])] = identity
        for dn in dns:
            if self._lookup(dn) is not None:
                out[dn] = dn
        self._dn_by_identity.update((i.casefold(), dn) for i, dn in out.items())
        return out

    def _identity_of(self, dn: str) -> str:
        """The identity a member DN stands for: its uid, else the DN itself."""
        key = normalize_dn(dn)
        if (known := self._identity_by_dn.get(key)) is not None:
            return known
        identity = dn
        try:
            attr, value, _ = parse_dn(dn, escape=False, strip=True)[0]
        except lx.LDAPInvalidDnError:
            attr, value = "", ""
        if attr.lower() == self.config.identity_attribute.lower() and "\\" not in value:
            identity = value  # the usual layout (uid=x,ou=people,...) needs no lookup
        else:
            entry = self._lookup(dn)
            values = _values(entry, self.config.identity_attribute) if entry else []
            identity = values[0] if values else dn
        self._identity_by_dn[key] = identity
        return identity

    def _lookup(self, dn: str) -> dict[str, Any] | None:
        """The entry at `dn` with its identity attribute, or None when it does not exist."""
        if not _looks_like_dn(dn):
            return None
        entries = self._search(dn, "(objectClass=*)", [self.config.identity_attribute],
                               scope=BASE, missing_ok=True)
        return entries[0] if entries else None

    # -- the wire: every request passes here -----------------------------------------------

    def _search(self, base: str, query: str, attributes: list[str], *, scope: str = SUBTREE,
                missing_ok: bool = False) -> list[dict[str, Any]]:
        """Every entry matching, following paged-results cookies; retried as one unit."""
        def run(conn: Connection) -> list[dict[str, Any]]:
            entries: list[dict[str, Any]] = []
            cookie: bytes | None = None
            while True:
                self.rate_limiter.acquire()
                try:
                    conn.search(base, query, scope, attributes=attributes,
                                paged_size=self.config.page_size, paged_cookie=cookie)
                except (lx.LDAPNoSuchObjectResult, lx.LDAPInvalidDNSyntaxResult):
                    if missing_ok:
                        return []
                    raise
                entries += [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
                controls = (conn.result or {}).get("controls") or {}
                cookie = controls.get(_PAGED_RESULTS, {}).get("value", {}).get("cookie")
                if not cookie:
                    return entries

        return self._request(f"search {base}", run)

    def _modify(self, dn: str, changes: dict[str, list[tuple[str, list[str]]]]) -> bool:
        """Send one modify; False when the group changed under us (20 or 16)."""
        def run(conn: Connection) -> bool:
            self.rate_limiter.acquire()
            try:
                conn.modify(dn, changes)
            except (lx.LDAPAttributeOrValueExistsResult, lx.LDAPNoSuchAttributeResult):
                return False
            return True

        return self._request(f"modify {dn}", run)

    def add_entry(self, dn: str, object_class: list[str], attributes: dict[str, Any]) -> bool:
        """Add one entry; False if it already exists (provisioning is idempotent)."""
        def run(conn: Connection) -> bool:
            self.rate_limiter.acquire()
            try:
                conn.add(dn, object_class, attributes)
            except lx.LDAPEntryAlreadyExistsResult:
                return False
            return True

        return self._request(f"add {dn}", run)

    def _request(self, what: str, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on a bound connection: retry busy/unavailable/broken wire, name the rest."""
        label = self.label

        def attempt() -> T:
            with self._lock:
                try:
                    return fn(self._connection())
                except _RETRYABLE_RESULTS as exc:
                    raise RetryableError(f"{what}: {_describe(exc)}") from exc
                except _CONNECTION_ERRORS as exc:
                    self._drop()  # a half-dead socket is never reused: reconnect next attempt
                    if _is_certificate_error(exc):
                        raise TargetError(f"{what}: TLS failed: {_short(exc)}",
                                          target=label) from exc
                    raise RetryableError(f"{what}: {type(exc).__name__}: {_short(exc)}") from exc
                except lx.LDAPInvalidCredentialsResult as exc:
                    raise TargetAuthError(f"invalid credentials for {self.config.bind_dn} "
                                          f"({_describe(exc)})", target=label) from exc
                except (lx.LDAPInsufficientAccessRightsResult,
                        lx.LDAPStrongerAuthRequiredResult) as exc:
                    raise TargetAuthError(f"{what}: {self.config.bind_dn} may not do this "
                                          f"({_describe(exc)})", target=label) from exc
                except lx.LDAPOperationResult as exc:
                    raise TargetRefused(f"{what} refused: {_describe(exc)}",
                                        target=label) from exc
                except lx.LDAPException as exc:
                    raise TargetError(f"{what}: {type(exc).__name__}: {_short(exc)}",
                                      target=label) from exc

        try:
            return self.retry.call(attempt, what=f"{label}: {what}")
        except RetryableError as exc:
            raise TargetUnavailable(f"{exc} (gave up after {self.retry.attempts} attempts)",
                                    target=label) from exc

    def _connection(self) -> Connection:
        if self._conn is not None and not self._conn.closed and self._conn.bound:
            return self._conn
        self._drop()
        self._conn = self._connect()
        return self._conn

    def _connect(self) -> Connection:
        """Open, StartTLS if configured, bind."""
        conn = build_connection(self.config)
        self.rate_limiter.acquire()
        try:
            conn.open()
            if self.config.start_tls:
                conn.start_tls()
            conn.bind()
        except BaseException:
            _quiet_unbind(conn)
            raise
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            _quiet_unbind(self._conn)
            self._conn = None


class _Members:
    """A group's members indexed by normalized DN and by identity; placeholders apart."""

    def __init__(self, target: LdapTarget, group: _Group) -> None:
        self.by_dn: dict[str, str] = {}
        self.placeholders: list[str] = []
        for stored in group.members:
            key = normalize_dn(stored)
            if key == target._placeholder:
                self.placeholders.append(stored)
            else:
                self.by_dn[key] = stored
        self.by_identity = {target._identity_of(s).casefold(): k for k, s in self.by_dn.items()}

    def stored(self, identity: str, dn: str | None) -> str | None:
        """The stored member value for an identity, or None if it is not a member."""
        if dn is not None and (key := normalize_dn(dn)) in self.by_dn:
            return self.by_dn[key]
        key = self.by_identity.get(identity.casefold()) or ""
        return self.by_dn.get(key)


def _describe(exc: lx.LDAPOperationResult) -> str:
    message = f" ({exc.message})" if getattr(exc, "message", None) else ""
    return f"{exc.description} [{exc.result}]{message}"


def _short(exc: BaseException, limit: int = 200) -> str:
    """An exception's text on one line, cut to `limit` characters (ldap3's can be long)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_certificate_error(exc: BaseException) -> bool:
    # A certificate the client rejects will be rejected again: retrying only delays the error.
    text = str(exc).lower()
    return isinstance(exc, ssl.SSLCertVerificationError) or "certificate" in text


def _quiet_unbind(conn: Connection) -> None:
    # Closing a broken socket may fail again; there is nothing left to release then.
    with contextlib.suppress(Exception):
        conn.unbind()


def ensure_base_entries(target: LdapTarget) -> list[str]:
    """Create the suffix entry, user and group OUs and the placeholder if missing; DNs created."""
    config = target.config
    created = []
    for dn in (config.base_dn, config.user_base, config.group_base,
               config.empty_group_placeholder):
        if target._lookup(dn) is not None:
            continue
        attr, value, _ = parse_dn(dn, escape=False, strip=True)[0]
        kinds: dict[str, tuple[list[str], dict[str, Any]]] = {
            "dc": (["dcObject", "organization"], {"dc": value, "o": value}),
            "o": (["organization"], {"o": value}),
            "ou": (["organizationalUnit"], {"ou": value}),
            "cn": (["organizationalRole"], {"cn": value}),
        }
        if attr.lower() not in kinds:
            raise TargetError(f"cannot create {dn}: create it in the directory first")
        object_class, attributes = kinds[attr.lower()]
        if target.add_entry(dn, object_class, attributes):
            created.append(dn)
    return created


def provision_ldap_directory(
    config_or_target: LdapConfig | LdapTarget,
    identities: Iterable[Mapping[str, Any]],
    groups: Iterable[str],
) -> dict[str, int]:
    """Create the OUs, missing inetOrgPerson users and missing groups; counts created.

    Identities are dicts with id, display_name and email. Idempotent: existing entries stay
    as they are. New groups hold only the empty-group placeholder.
    """
    if isinstance(config_or_target, LdapConfig):
        target, own = LdapTarget(config_or_target), True
    else:
        target, own = config_or_target, False
    config = target.config
    try:
        ensure_base_entries(target)
        people = {str(p["id"]): p for p in identities}
        existing = target._resolve(list(people))
        users = 0
        for identity in sorted(set(people) - set(existing)):
            person = people[identity]
            name = str(person.get("display_name") or identity)
            attributes: dict[str, Any] = {config.identity_attribute: identity, "cn": name,
                                          "sn": name.split()[-1], "displayName": name}
            if person.get("email"):
                attributes["mail"] = str(person["email"])
            dn = f"{config.identity_attribute}={escape_rdn(identity)},{config.user_base}"
            users += target.add_entry(dn, ["inetOrgPerson"], attributes)
        names = sorted(set(groups))
        present = target._find_groups(names)
        created = 0
        for name in names:
            if name in present:
                continue
            dn = f"{config.group_name_attribute}={escape_rdn(name)},{config.group_base}"
            created += target.add_entry(dn, [config.group_object_class], {
                config.group_name_attribute: name,
                config.member_attribute: [config.empty_group_placeholder]})
        return {"users": users, "groups": created}
    finally:
        if own:
            target.close()
