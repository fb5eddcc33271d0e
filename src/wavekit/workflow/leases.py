"""One writer per package: a lease in the store, taken by every run that writes a package.

Resources are named `package:<key>` (staging, deploy, watch ticks, containment, rollback,
retirement: everything that writes a package's grants or its health results) and `wave:<n>`
(a release-wave run). A second run asking for a held resource is refused at once with
`LeaseHeld`, whose message names the holder: flow run name and id, host, pid, since when.

A holder renews its lease every TTL/3 from a heartbeat thread. A lease survives its
holder's death only until one of these shows the holder is gone, after which the next run
takes it over:

- it expired (no heartbeat for TTL: a killed process, a lost host);
- it belongs to a process on this host that no longer exists (taken over at once);
- its Prefect flow run is in a final state (Completed, Failed, Cancelled, Crashed).

A lease is re-entrant within one context: a rollback-package subflow started by a watch
tick that holds the package runs under that tick's lease. A package run gives its lease
back while it waits for its owner (`released`): waiting writes nothing, and a re-run of the
wave may take the handoff over (see flows/wave.py); it takes the lease again before it
writes, and is refused if someone else holds it by then.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from wavekit.adapters.store import leases as store
from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.leases import Holder
from wavekit.adapters.store.models import Release
from wavekit.domain.clock import utcnow
from wavekit.workflow.runtime import Runtime

__all__ = ["DEFAULT_TTL", "Holder", "LeaseHeld", "attempt", "check_free", "hold", "package",
           "release_package", "released", "wave"]

log = logging.getLogger(__name__)
# Long enough that a busy store or a slow batch never loses a live holder's lease (it is
# renewed every TTL/3); short enough that a dead holder on another host blocks briefly.
DEFAULT_TTL = timedelta(minutes=5)


class LeaseHeld(RuntimeError):
    """Another run holds the resource; the message (one line) names it."""

    def __init__(self, resource: str, holder: Holder) -> None:
        self.resource, self.holder = resource, holder
        super().__init__(describe_refusal(resource, holder))


def package(key: str) -> str:
    return f"package:{key}"


def wave(number: int) -> str:
    return f"wave:{number}"


def release_package(rt: Runtime, release_id: int) -> str:
    """The resource a watch tick of `release_id` holds: its package (so ticks of one release,
    and anything else writing that package, never run at the same time)."""
    with session_scope(rt.database_url) as s:
        release = s.get(Release, release_id)
        if release is None:
            raise LookupError(f"no release {release_id}")
        return package(release.package_key)


def describe_refusal(resource: str, holder: Holder) -> str:
    kind, _, name = resource.partition(":")
    what = f"wave {name}" if kind == "wave" else f"package {name}"
    run = (f"flow run {holder.flow_run_name!r} ({holder.flow_run_id})" if holder.flow_run_id
           else "a process outside any flow run")
    since = f"{holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC" if holder.acquired_at else "?"
    expires = f"{holder.expires_at:%H:%M:%S} UTC" if holder.expires_at else "?"
    return (f"{what} is held by {run} on host {holder.host}, pid {holder.pid}, since {since}; "
            f"refused (run it again once that run ends; a dead holder's lease lapses at "
            f"{expires} unless renewed)")


# ---------------------------------------------------------------- who we are, who is alive


def _me() -> Holder:
    run_id: str | None = None
    run_name: str | None = None
    try:
        from prefect.runtime import flow_run

        if flow_run.id:
            run_id, run_name = str(flow_run.id), str(flow_run.name)
    except Exception:  # outside Prefect: a plain process
        pass
    return Holder(uuid.uuid4().hex, socket.gethostname(), os.getpid(), run_id, run_name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _flow_run_final(flow_run_id: str) -> bool:
    """Whether Prefect says the holder's run is over; unknown (no API, another server) is no."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.runtime import flow_run

        if not flow_run.id:  # outside a flow run asking would start an embedded server
            return False
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(uuid.UUID(flow_run_id))
    except Exception:
        return False
    return run.state is not None and run.state.is_final()


def is_stale(holder: Holder, now: datetime) -> bool:
    """Whether a held lease may be taken over (see the module's docstring)."""
    if holder.expires_at is not None and holder.expires_at <= now:
        return True
    if holder.host == socket.gethostname() and not _pid_alive(holder.pid):
        return True
    return holder.flow_run_id is not None and _flow_run_final(holder.flow_run_id)


# ---------------------------------------------------------------- holding


@dataclass
class _Lease:
    url: str
    resource: str
    ttl: timedelta
    me: Holder
    active: bool = True
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None

    def take(self) -> None:
        now = utcnow()
        holder = store.try_acquire(self.url, self.resource, self.me, ttl=self.ttl, now=now,
                                   stale=lambda h: is_stale(h, now))
        if holder is not None:
            raise LeaseHeld(self.resource, holder)
        self.active, self.lost = True, False
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                      name=f"lease {self.resource}")
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl.total_seconds() / 3):
            try:
                ok = store.renew(self.url, self.resource, self.me.token, ttl=self.ttl,
                                 now=utcnow())
            except Exception:  # the store is busy or away: expiry is the backstop
                continue
            if not ok:
                self.lost = True
                log.warning("lease on %s was taken over by another run", self.resource)
                return

    def give_back(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        self.active = False
        store.give_back(self.url, self.resource, self.me.token)


_held: ContextVar[dict[str, _Lease] | None] = ContextVar("wavekit_leases", default=None)


@contextmanager
def hold(rt: Runtime, resource: str, *, ttl: timedelta = DEFAULT_TTL) -> Iterator[None]:
    """Hold `resource` for the block, or raise LeaseHeld naming who holds it.

    Re-entrant: a block nested in one that holds `resource` (in this context) runs under it.
    """
    held = _held.get() or {}
    mine = held.get(resource)
    if mine is not None and mine.active:
        yield
        return
    lease = _Lease(rt.database_url, resource, ttl, _me())
    lease.take()
    token = _held.set({**held, resource: lease})
    try:
        yield
    finally:
        _held.reset(token)
        if lease.active:
            lease.give_back()


@contextmanager
def attempt(rt: Runtime, resource: str, *, ttl: timedelta = DEFAULT_TTL
            ) -> Iterator[LeaseHeld | None]:
    """Like `hold`, for runs that skip what another run holds: yields the refusal (the
    block then does nothing) or None (the block holds the resource)."""
    with ExitStack() as stack:
        refused: LeaseHeld | None = None
        try:
            stack.enter_context(hold(rt, resource, ttl=ttl))
        except LeaseHeld as exc:
            refused = exc
        yield refused


@contextmanager
def released(resource: str) -> Iterator[None]:
    """Give a held lease back for the block (waiting for an owner writes nothing) and take it
    again after; LeaseHeld if another run took it meanwhile. A block that raises (a suspended
    run leaving its process) does not take it again."""
    lease = (_held.get() or {}).get(resource)
    if lease is None or not lease.active:
        yield
        return
    lease.give_back()
    yield
    lease.me = replace(lease.me, token=uuid.uuid4().hex)
    lease.take()


def check_free(rt: Runtime, resources: Iterable[str]) -> None:
    """Raise LeaseHeld for the first of `resources` a live other run holds (without taking
    any): a wave refuses at once rather than start package runs that would be refused."""
    mine = _held.get() or {}
    now = utcnow()
    for resource in resources:
        holder = store.read(rt.database_url, resource)
        if holder is None or (resource in mine and mine[resource].me.token == holder.token):
            continue
        if not is_stale(holder, now):
            raise LeaseHeld(resource, holder)
