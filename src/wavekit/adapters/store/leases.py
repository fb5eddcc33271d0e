"""Leases in the store: insert to take, compare-and-swap on the token to take over, renew or
give back. Whether a held lease is stale is the caller's judgement (wavekit.workflow.leases).

Every function is one short transaction of its own: a lease is never taken inside a
transaction that also writes the work it protects, so a crash can leave no half-taken lease.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from wavekit.adapters.store.engine import session_scope
from wavekit.adapters.store.models import Lease
from wavekit.domain.clock import as_utc


@dataclass(frozen=True)
class Holder:
    """Who holds (or asks for) a lease; `token` is this acquisition's own."""

    token: str
    host: str
    pid: int
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    acquired_at: datetime | None = None
    expires_at: datetime | None = None


def _holder(row: Lease) -> Holder:
    return Holder(row.token, row.host, row.pid, row.flow_run_id, row.flow_run_name,
                  as_utc(row.acquired_at), as_utc(row.expires_at))


def read(url: str, resource: str) -> Holder | None:
    """The current holder of `resource`, if any (expired or not)."""
    with session_scope(url) as s:
        row = s.get(Lease, resource)
        return _holder(row) if row is not None else None


def try_acquire(url: str, resource: str, me: Holder, *, ttl: timedelta, now: datetime,
                stale: Callable[[Holder], bool]) -> Holder | None:
    """Take `resource` for `me`; None when taken, else the live holder that keeps it.

    A held lease is taken over only when `stale(holder)` says so, and only if it is still
    the same acquisition (its token) when we write: two takers of one stale lease cannot
    both win.
    """
    for _ in range(3):  # a lost insert race or a lost takeover: look again
        current = read(url, resource)
        if current is None:
            try:
                with session_scope(url) as s:
                    s.add(Lease(resource=resource, token=me.token, host=me.host, pid=me.pid,
                                flow_run_id=me.flow_run_id, flow_run_name=me.flow_run_name,
                                acquired_at=now, heartbeat_at=now, expires_at=now + ttl))
                return None
            except IntegrityError:
                continue
        if current.token == me.token:
            return None
        if not stale(current):  # outside any transaction: it may ask the Prefect API
            return current
        with session_scope(url) as s:
            taken = s.exec(  # sqlmodel's exec types an UPDATE's result with its rowcount
                update(Lease).where(col(Lease.resource) == resource,
                                    col(Lease.token) == current.token)
                .values(token=me.token, host=me.host, pid=me.pid, flow_run_id=me.flow_run_id,
                        flow_run_name=me.flow_run_name, acquired_at=now, heartbeat_at=now,
                        expires_at=now + ttl))
            if taken.rowcount == 1:
                return None
    held = read(url, resource)
    return held if held is not None and held.token != me.token else None


def renew(url: str, resource: str, token: str, *, ttl: timedelta, now: datetime) -> bool:
    """Push the expiry out; False when the lease is no longer ours (taken over)."""
    with session_scope(url) as s:
        done = s.exec(update(Lease).where(col(Lease.resource) == resource,
                                          col(Lease.token) == token)
                      .values(heartbeat_at=now, expires_at=now + ttl))
        return bool(done.rowcount)


def give_back(url: str, resource: str, token: str) -> None:
    """Release the lease if it is still ours."""
    with session_scope(url) as s:
        s.execute(delete(Lease).where(col(Lease.resource) == resource,
                                      col(Lease.token) == token))
