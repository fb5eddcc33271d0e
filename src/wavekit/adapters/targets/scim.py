"""The SCIM 2.0 target (RFC 7643/7644): identities are Users, entitlements are Groups.

Discovery, searches, reads, creates and deletes go through scim2-client, which validates the
payloads against the models the server publishes. Group writes go through httpx directly:
scim2-client drops the ETag of a 204 PATCH answer, which the next chunk's If-Match needs, and
refuses a bulk request over the advertised limits where wavekit must split it. Every request,
either way, passes `ScimSession.request`: rate limit, retries, error mapping.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, SecretStr, ValidationError
from scim2_client import BaseSyncSCIMClient, SCIMClientException
from scim2_models import (
    Context,
    ListResponse,
    Resource,
    SCIMException,
    SearchRequest,
    ServiceProviderConfig,
)

from wavekit.adapters.targets.base import (
    BATCH_SIZE,
    ApplyResult,
    BatchResult,
    ClosesOnExit,
    ProgressCallback,
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
    parse_retry_after,
)
from wavekit.domain.grants import Grant, GrantSet, by_entitlement

log = logging.getLogger(__name__)

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
_FILTER_TERMS = 50  # names per `or` filter: keeps filters short enough for any server to parse
_BULK_ENVELOPE = 200  # bytes a bulk request needs around its operations

T = TypeVar("T")


class ScimConfig(BaseModel):
    """How to reach a SCIM service; the token is a SecretStr so no repr or log shows it."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    token: SecretStr | None = None
    identity_match: Literal["userName", "externalId"] = "userName"
    page_size: PositiveInt = 200
    max_members_per_patch: PositiveInt = 200
    use_bulk: Literal["auto", "never"] = "auto"
    timeout: PositiveFloat = 30.0
    verify_tls: bool = True
    prefect_rate_limit: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ScimConfig:
        """Read WAVEKIT_SCIM_URL (required), _TOKEN, _MATCH, _PAGE_SIZE, _RATE_LIMIT_NAME."""
        env = os.environ if environ is None else environ
        if env.get("WAVEKIT_SCIM_RATE"):  # removed: say so rather than ignore it silently
            raise ValueError("WAVEKIT_SCIM_RATE is no longer read: name a Prefect global rate "
                             "limit with WAVEKIT_SCIM_RATE_LIMIT_NAME (429s are retried)")
        url = env.get("WAVEKIT_SCIM_URL")
        if not url:
            raise ValueError("WAVEKIT_SCIM_URL is not set: the SCIM target needs the service's "
                             "base URL, e.g. https://idp.example.com/scim/v2")
        optional = {
            "token": env.get("WAVEKIT_SCIM_TOKEN"),
            "identity_match": env.get("WAVEKIT_SCIM_MATCH"),
            "page_size": env.get("WAVEKIT_SCIM_PAGE_SIZE"),
            "prefect_rate_limit": env.get("WAVEKIT_SCIM_RATE_LIMIT_NAME"),
        }
        return cls(base_url=url, **{k: v for k, v in optional.items() if v})


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _quote(value: str) -> str:
    """A SCIM filter string literal (JSON string syntax, RFC 7644 §3.4.2.2)."""
    return json.dumps(value)


def _refusal(response: httpx.Response) -> str:
    """The server's own words for a refused request: status, scimType and detail."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("detail") or body.get("scimType")):
        kind = f" ({body['scimType']})" if body.get("scimType") else ""
        return f"HTTP {response.status_code}{kind}: {body.get('detail', '')}".rstrip(": ")
    return f"HTTP {response.status_code}: {response.text[:200]}".rstrip(": ")


def _refused_error(status: int | None) -> type[TargetError]:
    """The error class for a refusal: credentials (401/403) or the request itself."""
    return TargetAuthError if status in (401, 403) else TargetRefused


class _HttpxEngine(BaseSyncSCIMClient):
    """scim2-client bound to httpx.

    scim2-client 0.13 ships its network engine for httpx2 only; wavekit speaks httpx everywhere
    (one transport seam for tests and the other targets), so the engine is these few methods.
    """

    def __init__(self, client: httpx.Client, send: Callable[..., httpx.Response]) -> None:
        super().__init__()
        self.client = client
        self._send_http = send

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._send_http(method, url, **kwargs)

    def _parse_json(self, response: Any) -> Any:
        return response.json()

    def _stays_under_base_url(self, endpoint: str) -> bool:
        base = self.client.base_url
        url = self.client.build_request("GET", endpoint).url
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port) and (
            url.raw_path.startswith(base.raw_path))


class ScimSession:
    """One authenticated connection to a SCIM service: the seam every request passes.

    An injected `http_client` is used as it is (its base URL and auth are the caller's) and left
    open; otherwise the session builds one from the config, over `transport` when given.
    """

    def __init__(self, config: ScimConfig, *, retry: RetryPolicy | None = None,
                 rate_limiter: RateLimiter | None = None, http_client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.label = f"SCIM target {config.base_url}"  # how errors name this service
        self.retry = retry or RetryPolicy()
        self.limiter = rate_limiter or build_rate_limiter(config.prefect_rate_limit)
        self._owns_client = http_client is None
        self.http = http_client or self._build_client(config, transport)
        self.scim = _HttpxEngine(self.http, self.request)
        self._discovered = False

    @staticmethod
    def _build_client(config: ScimConfig, transport: httpx.BaseTransport | None) -> httpx.Client:
        headers = {"Accept": "application/scim+json, application/json"}
        if config.token:
            # httpx masks Authorization in the repr of headers and requests.
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        return httpx.Client(base_url=config.base_url, headers=headers, timeout=config.timeout,
                            verify=config.verify_tls, transport=transport)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request under the rate limit, retrying 429, 5xx, timeouts and lost
        connections; any other answer is returned for the caller to judge."""
        if "json" in kwargs:  # RFC 7644 §3.1: SCIM bodies are application/scim+json
            kwargs["content"] = json.dumps(kwargs.pop("json")).encode()
            kwargs["headers"] = {**(kwargs.get("headers") or {}),
                                 "Content-Type": "application/scim+json"}

        def attempt() -> httpx.Response:
            self.limiter.acquire()
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TimeoutException as exc:
                raise RetryableError(f"timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise RetryableError(f"connection failed ({type(exc).__name__})") from exc
            if response.status_code == 429 or response.status_code >= 500:
                raise RetryableError(_refusal(response),
                                     parse_retry_after(response.headers.get("Retry-After")))
            return response

        def on_retry(n: int, exc: Exception, wait: float) -> None:
            log.warning("SCIM %s %s: %s; retry %d in %.1fs", method, url, exc, n, wait)

        try:
            return self.retry.call(attempt, on_retry=on_retry)
        except RetryableError as exc:
            raise TargetUnavailable(f"SCIM {method} {url} still failing after "
                                    f"{self.retry.attempts} attempts: {exc}",
                                    target=self.label) from exc

    @contextmanager
    def refused(self, action: str) -> Iterator[None]:
        """Turn scim2-client's and the server's refusals into TargetError naming `action`."""
        try:
            yield
        except SCIMException as exc:
            kind = f" ({exc.scim_type})" if exc.scim_type else ""
            raise _refused_error(exc.status)(f"SCIM {action} refused: HTTP {exc.status}{kind}: "
                                             f"{exc.detail}", target=self.label) from exc
        except SCIMClientException as exc:
            response = getattr(exc, "source", None)
            status = getattr(response, "status_code", None)
            raise _refused_error(status)(f"SCIM {action} failed: {exc}",
                                         target=self.label) from exc

    def check(self, response: httpx.Response, action: str) -> httpx.Response:
        """Raise TargetError with the server's detail unless `response` is a success."""
        if not response.is_success:
            raise _refused_error(response.status_code)(f"SCIM {action} refused: "
                                                       f"{_refusal(response)}", target=self.label)
        return response

    def _discover(self) -> None:
        # Once per session: the models the server publishes (so extensions validate) and the
        # ServiceProviderConfig that says whether bulk, filters and ETags are on offer.
        if not self._discovered:
            with self.refused("discovery"):
                self.scim.discover()
            self._discovered = True

    @property
    def service_config(self) -> ServiceProviderConfig:
        self._discover()
        return self.scim.provider.config or ServiceProviderConfig()

    def model(self, name: str) -> type[Resource[Any]]:
        """The server's model for a resource type ("User", "Group")."""
        self._discover()
        found = self.scim.get_resource_model(name)
        if found is None:
            raise TargetError(f"SCIM service at {self.config.base_url} serves no {name} resources")
        return found

    @property
    def filter_supported(self) -> bool:
        spc = self.service_config
        return bool(spc.filter and spc.filter.supported)

    @property
    def etags_enforced(self) -> bool:
        """Whether the server advertises ETags, so If-Match guards a write against a change
        made since the read."""
        etag = self.service_config.etag
        return bool(etag and etag.supported)

    @property
    def bulk_limits(self) -> tuple[int, int] | None:
        """(maxOperations, maxPayloadSize) when bulk is advertised and allowed, else None."""
        bulk = self.service_config.bulk
        if self.config.use_bulk == "never" or not (bulk and bulk.supported):
            return None
        return bulk.max_operations or 1000, bulk.max_payload_size or 1_048_576

    def search(self, kind: str, *, filter: str | None = None,
               attributes: Sequence[str] | None = None) -> Iterator[Resource[Any]]:
        """Every resource of `kind` matching `filter`, page by page (startIndex/count)."""
        model = self.model(kind)
        start = 1
        while True:
            params: dict[str, Any] = {"start_index": start, "count": self.config.page_size}
            if filter:
                params["filter"] = filter
            if attributes:
                params["attributes"] = list(attributes)
            with self.refused(f"search of {kind}"):
                page = self.scim.query(model, SearchRequest(**params))
            if not isinstance(page, ListResponse):
                raise TargetError(f"SCIM search of {kind} answered {type(page).__name__}")
            found = page.resources or []
            yield from found
            start += len(found)
            # Servers may cap `count` below what was asked: follow totalResults, not page size.
            if not found or start > (page.total_results or 0):
                return

    def bulk(self, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send operations as few /Bulk requests as the advertised limits allow; return each
        operation's result in order (plain httpx: callers need every operation's status)."""
        limits = self.bulk_limits
        if limits is None:
            raise TargetError("SCIM bulk requested but the service does not offer it")
        max_ops, max_bytes = limits
        results: list[dict[str, Any]] = []
        for chunk in self._pack(operations, max_ops, max_bytes):
            body = {"schemas": [BULK_REQUEST], "Operations": chunk}
            response = self.check(self.request("POST", "/Bulk", json=body), "bulk request")
            answered = response.json().get("Operations") or []
            by_id = {op.get("bulkId"): op for op in answered if op.get("bulkId")}
            for sent, got in zip(chunk, answered, strict=False):
                results.append(by_id.get(sent.get("bulkId"), got))
            if len(answered) < len(chunk):
                raise TargetError(f"SCIM bulk request answered {len(answered)} of {len(chunk)} "
                                  "operations")
        return results

    @staticmethod
    def _pack(operations: list[dict[str, Any]], max_ops: int, max_bytes: int
              ) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        size = _BULK_ENVELOPE
        for op in operations:
            op_size = len(json.dumps(op)) + 2
            if _BULK_ENVELOPE + op_size > max_bytes:
                raise TargetError(f"one SCIM bulk operation ({op_size} bytes) exceeds the "
                                  f"service's maxPayloadSize of {max_bytes}")
            if chunk and (len(chunk) >= max_ops or size + op_size > max_bytes):
                yield chunk
                chunk, size = [], _BULK_ENVELOPE
            chunk.append(op)
            size += op_size
        if chunk:
            yield chunk

    def fits_bulk(self, operation: dict[str, Any]) -> bool:
        limits = self.bulk_limits
        return limits is not None and _BULK_ENVELOPE + len(json.dumps(operation)) + 2 <= limits[1]

    def delete_all(self, endpoint: str, ids: Collection[str]) -> None:
        """Delete resources by id, through /Bulk when offered."""
        if not ids:
            return
        if self.bulk_limits:
            ops = [{"method": "DELETE", "path": f"/{endpoint}/{i}", "bulkId": f"d{n}"}
                   for n, i in enumerate(ids)]
            failed = [r for r in self.bulk(ops) if _status(r) not in (204, 200, 404)]
            if failed:
                raise TargetError(f"SCIM delete of {len(failed)} {endpoint} failed: "
                                  f"{_op_detail(failed[0])}")
            return
        for i in ids:
            response = self.request("DELETE", f"/{endpoint}/{i}")
            if response.status_code != 404:
                self.check(response, f"delete of {endpoint} {i}")

    def close(self) -> None:
        if self._owns_client:
            self.http.close()


def _status(result: Mapping[str, Any]) -> int:
    try:
        return int(str(result.get("status", "0")).split()[0])
    except ValueError:
        return 0


def _version_of(response: httpx.Response) -> str | None:
    """The ETag a write answered with: the header, else meta.version of a 200 body."""
    if etag := response.headers.get("ETag"):
        return str(etag)
    try:
        body = response.json() if response.content else None
    except ValueError:
        return None
    meta = body.get("meta") if isinstance(body, dict) else None
    return meta.get("version") if isinstance(meta, dict) else None


def _op_detail(result: Mapping[str, Any]) -> str:
    response = result.get("response") or {}
    detail = response.get("detail", "") if isinstance(response, dict) else ""
    return f"HTTP {_status(result)} {detail}".strip()


# Removals by filter (members[value eq "a" or ...]) cost some servers a scan of the group per
# clause (scim2-server: 3.4 s for 150 of 1,500 members); one ETag-guarded replace of the
# member list costs one pass (0.2 s). Above this many members the list is too big for one
# request and removals go by filter.
_REPLACE_MAX_MEMBERS = 10_000


@dataclass
class _GroupWrite:
    """The member changes one group still needs, diffed against what was just read.

    `keep` (set when the server enforces ETags and the write removes members) is every
    member value the group keeps, as read: the write is then one replace of the member list,
    conditional on `version`, so a change made since the read fails it (412) rather than
    being overwritten."""

    name: str
    group_id: str
    version: str | None
    add: list[str]
    remove: list[str]
    keep: list[dict[str, str]] | None = None

    def operations(self, per_op: int) -> list[tuple[dict[str, Any], int, int]]:
        """PATCH operations of at most `per_op` members each, with their (added, removed)."""
        if self.keep is not None:
            value = self.keep + [{"value": m, "type": "User"} for m in self.add]
            return [({"op": "replace", "path": "members", "value": value},
                     len(self.add), len(self.remove))]
        ops: list[tuple[dict[str, Any], int, int]] = []
        for chunk in _chunks(self.add, per_op):
            ops.append(({"op": "add", "path": "members",
                         "value": [{"value": m} for m in chunk]}, len(chunk), 0))
        for chunk in _chunks(self.remove, per_op):
            selector = " or ".join(f"value eq {_quote(m)}" for m in chunk)
            ops.append(({"op": "remove", "path": f"members[{selector}]"}, 0, len(chunk)))
        return ops


@dataclass
class _Landed:
    added: int = 0
    removed: int = 0
    stale: set[str] = field(default_factory=set)


class ScimTarget(ClosesOnExit):
    """A SCIM service as a wavekit target: grant (identity, entitlement) = User in Group."""

    def __init__(self, config: ScimConfig, *, retry: RetryPolicy | None = None,
                 rate_limiter: RateLimiter | None = None, http_client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.session = ScimSession(config, retry=retry, rate_limiter=rate_limiter,
                                   http_client=http_client, transport=transport)
        parts = urlsplit(config.base_url)
        self.name = f"scim:{parts.netloc}{parts.path.rstrip('/')}"
        # Per-instance caches: ids never change meaning within one run.
        self._user_ids: dict[str, str] = {}
        self._user_names: dict[str, str | None] = {}
        self._group_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"ScimTarget({self.name!r})"

    # -- Target protocol ---------------------------------------------------------------

    def read_grants(self, entitlements: Collection[str]) -> GrantSet:
        members: dict[str, set[str]] = {}
        for name in sorted(set(entitlements)):
            group_id = self._group_ids_for([name]).get(name)
            if group_id is None:
                log.warning("SCIM group %r does not exist on %s; it holds no grants", name,
                            self.name)
                continue
            members[name] = self._read_group(group_id)[0]
        names = self._identity_names(set().union(*members.values()) if members else set())
        return frozenset(Grant(who, group) for group, ids in members.items()
                         for m in ids if (who := names.get(m)))

    def apply(self, adds: Iterable[Grant], removes: Iterable[Grant], *,
              batch_size: int = BATCH_SIZE,
              on_batch: ProgressCallback | None = None) -> ApplyResult:
        return apply_in_batches(self._apply_batch, adds, removes, batch_size, on_batch)

    def close(self) -> None:
        self.session.close()

    # -- one batch ---------------------------------------------------------------------

    def _apply_batch(self, index: int, adds: list[Grant], removes: list[Grant]) -> BatchResult:
        add_by, remove_by = by_entitlement(adds), by_entitlement(removes)
        groups = self._require_groups(set(add_by) | set(remove_by))
        add_names = set().union(*add_by.values()) if add_by else set()
        ids = self._require_identities(add_names)
        remove_names = set().union(*remove_by.values()) if remove_by else set()
        # A user missing from the directory holds no group: its removal is already true.
        ids.update(self._identity_ids(remove_names))
        wanted = {
            name: ({ids[i] for i in add_by.get(name, ())},
                   {ids[i] for i in remove_by.get(name, ()) if i in ids})
            for name in groups
        }
        landed = self._converge(groups, wanted)
        touched = len(set(adds)) + len(set(removes))
        return BatchResult(index, landed.added, landed.removed,
                           touched - landed.added - landed.removed)

    def _converge(self, groups: dict[str, str], wanted: dict[str, tuple[set[str], set[str]]]
                  ) -> _Landed:
        """Read, diff, write; groups whose ETag moved under us (412) are read again."""
        total = _Landed()
        pending = sorted(wanted)
        for _ in range(self.session.retry.attempts):
            writes = []
            for name in pending:
                members, version, values = self._read_group(groups[name])
                to_add, to_remove = wanted[name]
                write = _GroupWrite(name, groups[name], version, sorted(to_add - members),
                                    sorted(to_remove & members))
                if (write.remove and version and self.session.etags_enforced
                        and len(values) + len(write.add) <= _REPLACE_MAX_MEMBERS):
                    gone = set(write.remove)
                    write.keep = [v for v in values if v["value"] not in gone]
                if write.add or write.remove:
                    writes.append(write)
            landed = self._write(writes)
            total.added += landed.added
            total.removed += landed.removed
            pending = sorted(landed.stale)
            if not pending:
                return total
        raise TargetUnavailable(f"SCIM groups {', '.join(pending)} kept changing while wavekit "
                                f"wrote them (HTTP 412 {self.session.retry.attempts} times); "
                                "re-run the batch", target=self.session.label)

    def _write(self, writes: list[_GroupWrite]) -> _Landed:
        if not writes:
            return _Landed()
        if self.session.bulk_limits:
            return self._write_bulk(writes)
        landed = _Landed()
        for write in writes:
            self._patch(write, landed)
        return landed

    def _patch(self, write: _GroupWrite, landed: _Landed) -> None:
        version = write.version
        for op, added, removed in write.operations(self.config.max_members_per_patch):
            headers = {"If-Match": version} if version else {}
            response = self.session.request("PATCH", f"/Groups/{write.group_id}",
                                            json={"schemas": [PATCH_OP], "Operations": [op]},
                                            headers=headers)
            if response.status_code == 412:
                landed.stale.add(write.name)
                return
            self.session.check(response, f"PATCH of group {write.name!r}")
            landed.added += added
            landed.removed += removed
            # The next chunk is conditional on this one's result, not on the first read.
            version = _version_of(response)

    def _write_bulk(self, writes: list[_GroupWrite]) -> _Landed:
        """One bulk operation per group, holding all its PATCH operations, so the group's
        ETag guards the whole change; a group too big for one bulk request goes by PATCH."""
        landed = _Landed()
        ops: list[dict[str, Any]] = []
        counted: dict[str, tuple[_GroupWrite, int, int]] = {}
        for n, write in enumerate(writes):
            parts = write.operations(self.config.max_members_per_patch)
            op: dict[str, Any] = {
                "method": "PATCH", "path": f"/Groups/{write.group_id}", "bulkId": f"g{n}",
                "data": {"schemas": [PATCH_OP], "Operations": [p for p, _, _ in parts]},
            }
            if write.version:
                op["version"] = write.version
            if not self.session.fits_bulk(op):
                self._patch(write, landed)
                continue
            ops.append(op)
            counted[op["bulkId"]] = (write, sum(a for _, a, _ in parts),
                                     sum(r for _, _, r in parts))
        failures = []
        for op, result in zip(ops, self.session.bulk(ops) if ops else [], strict=True):
            write, added, removed = counted[op["bulkId"]]
            status = _status(result)
            if status == 412:
                landed.stale.add(write.name)
            elif 200 <= status < 300:
                landed.added += added
                landed.removed += removed
            else:
                failures.append(f"{write.name}: {_op_detail(result)}")
        if failures:
            raise TargetRefused(f"SCIM bulk PATCH refused for groups {'; '.join(failures)}",
                                target=self.session.label)
        return landed

    # -- directory lookups -------------------------------------------------------------

    def _read_group(self, group_id: str) -> tuple[set[str], str | None, list[dict[str, str]]]:
        """Member user ids, the ETag, and every member value as read (users and nested
        groups: a replace of the member list must keep what wavekit does not manage)."""
        # Plain JSON, not scim2-client's models: a group of thousands of members parses in a
        # fraction of the time, and only `members` and the version are needed.
        response = self.session.check(self.session.request("GET", f"/Groups/{group_id}"),
                                      f"read of group {group_id}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("members") or [], list):
            raise self._not_a_group(group_id)
        listed: list[tuple[str, str | None]] = []
        for m in body.get("members") or []:
            value = m.get("value") if isinstance(m, dict) else None
            kind = m.get("type") if isinstance(m, dict) else None
            if not isinstance(value, str) or not isinstance(kind, str | None):
                raise self._not_a_group(group_id)
            if value:
                listed.append((value, kind))
        members = {v for v, kind in listed if (kind or "User") == "User"}
        values = [{"value": v, **({"type": kind} if kind else {})} for v, kind in listed]
        meta = body.get("meta")
        version = meta.get("version") if isinstance(meta, dict) else None
        return members, str(version) if version else _version_of(response), values

    def _not_a_group(self, group_id: str) -> TargetRefused:
        return TargetRefused(f"SCIM read of group {group_id} answered something that is not a "
                             "SCIM Group", target=self.session.label)

    def _group_ids_for(self, names: Iterable[str]) -> dict[str, str]:
        for name in sorted(set(names) - self._group_ids.keys()):
            found = list(self.session.search("Group", filter=f"displayName eq {_quote(name)}",
                                             attributes=["displayName"]))
            exact = [g for g in found if getattr(g, "display_name", None) == name] or found
            if len(exact) > 1:
                raise TargetError(f"SCIM has {len(exact)} groups named {name!r}")
            if exact and exact[0].id:
                self._group_ids[name] = exact[0].id
        return {n: self._group_ids[n] for n in names if n in self._group_ids}

    def _require_groups(self, names: set[str]) -> dict[str, str]:
        found = self._group_ids_for(names)
        if missing := sorted(names - found.keys()):
            raise TargetRefused(f"no group named {', '.join(missing)}; nothing in this batch "
                                "was written", target=self.session.label)
        return found

    def _require_identities(self, names: set[str]) -> dict[str, str]:
        found = self._identity_ids(names)
        if missing := sorted(names - found.keys()):
            raise TargetRefused(f"no user with {self.config.identity_match} "
                                f"{', '.join(missing)}; nothing in this batch was written",
                                target=self.session.label)
        return found

    def _identity_ids(self, names: set[str]) -> dict[str, str]:
        """identity -> User id, looking up only what the cache lacks."""
        attr = self.config.identity_match
        self._lookup(names - self._user_ids.keys(), attr)
        return {n: self._user_ids[n] for n in names if n in self._user_ids}

    def _identity_names(self, ids: set[str]) -> dict[str, str | None]:
        """User id -> identity; None for ids that name no user (dangling or another kind)."""
        missing = ids - self._user_names.keys()
        self._lookup(missing, "id")
        for i in missing - self._user_names.keys():
            log.warning("SCIM group member %s is not a user on %s; ignored", i, self.name)
            self._user_names[i] = None
        return {i: self._user_names[i] for i in ids}

    def _lookup(self, values: set[str], attr: str) -> None:
        """Resolve users by `attr`: filtered lookups for a few, one paged listing for many."""
        if not values:
            return
        wanted = ["userName", "externalId"]  # userName too: the User model requires it
        if len(values) > self.config.page_size or not self.session.filter_supported:
            users: Iterable[Resource[Any]] = self.session.search("User", attributes=wanted)
        else:
            users = (u for chunk in _chunks(sorted(values), _FILTER_TERMS)
                     for u in self.session.search(
                         "User", filter=" or ".join(f"{attr} eq {_quote(v)}" for v in chunk),
                         attributes=wanted))
        for user in users:
            self._remember(user)

    def _remember(self, user: Resource[Any]) -> None:
        key = getattr(user, "user_name" if self.config.identity_match == "userName"
                      else "external_id", None)
        if user.id:
            self._user_names[user.id] = key
            if key:
                self._user_ids[key] = user.id


@dataclass(frozen=True)
class Provisioned:
    """What provision_scim_directory created."""

    users: int
    groups: int


def provision_scim_directory(config_or_target: ScimConfig | ScimTarget,
                             identities: Iterable[Mapping[str, Any]],
                             groups: Iterable[str]) -> Provisioned:
    """Create the Users (id, display_name, email) and Groups that are missing; idempotent."""
    owned = isinstance(config_or_target, ScimConfig)
    target = (ScimTarget(config_or_target) if isinstance(config_or_target, ScimConfig)
              else config_or_target)
    try:
        people = {str(p["id"]): p for p in identities}
        known = target._identity_ids(set(people))
        user_model = target.session.model("User")
        new_users = [_user_payload(user_model, people[i]) for i in sorted(people.keys() - known)]
        group_model = target.session.model("Group")
        group_names = set(groups)
        new_groups = [group_model(display_name=g).model_dump(  # type: ignore[call-arg]  # model built from the server's schema: its fields are unknown statically
            scim_ctx=Context.RESOURCE_CREATION_REQUEST)
            for g in sorted(group_names - target._group_ids_for(group_names).keys())]
        _create(target.session, "Users", new_users)
        _create(target.session, "Groups", new_groups)
        return Provisioned(users=len(new_users), groups=len(new_groups))
    finally:
        if owned:
            target.close()


def _user_payload(model: type[Resource[Any]], person: Mapping[str, Any]) -> dict[str, Any]:
    ident = str(person["id"])
    try:
        # userName and externalId both carry the wavekit identity: either match mode finds it.
        user = model(user_name=ident, external_id=ident,  # type: ignore[call-arg]  # built from the server's schema: fields unknown statically
                     display_name=person.get("display_name") or None,
                     emails=[{"value": person["email"], "primary": True}]
                     if person.get("email") else None)
    except ValidationError as exc:
        raise TargetError(f"identity {ident!r} is not a valid SCIM user: {exc}") from exc
    return user.model_dump(scim_ctx=Context.RESOURCE_CREATION_REQUEST)


def _create(session: ScimSession, endpoint: str, payloads: list[dict[str, Any]]) -> None:
    if not payloads:
        return
    if session.bulk_limits:
        ops = [{"method": "POST", "path": f"/{endpoint}", "bulkId": f"c{n}", "data": p}
               for n, p in enumerate(payloads)]
        # 409: someone created it since we looked, which is what we wanted.
        failed = [r for r in session.bulk(ops) if _status(r) not in (200, 201, 409)]
        if failed:
            raise TargetError(f"SCIM create of {len(failed)} {endpoint} failed: "
                              f"{_op_detail(failed[0])}")
        return
    for payload in payloads:
        response = session.request("POST", f"/{endpoint}", json=payload)
        if response.status_code != 409:
            session.check(response, f"create in {endpoint}")
