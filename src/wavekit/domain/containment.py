"""Containment as pure functions: which grants an anomaly suspends, and a release's grants
at any time from wavekit's own record (for measurements owed in the past).

Scope (the package's `health: {containment: ...}`):

    identities  (default) the package's grants of the members the anomaly names (who
                exported, who was escalated); every member when the telemetry names nobody
    package     the package's grants of every member

Only the package's own grants (members x granted entitlements) that are held are suspended;
anything else an identity holds, including an out-of-band privileged grant, is not wavekit's
to take away (access drift and the owner's review deal with it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wavekit.domain.clock import as_utc
from wavekit.domain.grants import Grant, GrantSet
from wavekit.domain.packages import PackageView
from wavekit.domain.planning import Plan

SCOPES = ("identities", "package")
DEFAULT_SCOPE = "identities"


def containment_scope(health: Mapping[str, Any] | None) -> str:
    """The package's containment scope; anything but `package` means `identities`."""
    value = (health or {}).get("containment", DEFAULT_SCOPE)
    return value if value in SCOPES else DEFAULT_SCOPE


def who_to_suspend(package: PackageView, implicated: Collection[str], scope: str
                   ) -> frozenset[str]:
    """The members whose grants containment suspends."""
    named = frozenset(implicated) & package.members
    if scope == "package" or not named:
        return package.members
    return named


def plan_suspension(package: PackageView, live: GrantSet, identities: Collection[str],
                    already: GrantSet = frozenset()) -> GrantSet:
    """The package's grants of `identities` that are held now and not yet suspended."""
    who = set(identities)
    return frozenset(g for g in live if g.identity in who
                     and g.entitlement in package.entitlements) - already


@dataclass(frozen=True)
class SuspensionRecord:
    grants: GrantSet
    suspended_at: datetime
    lifted_at: datetime | None = None

    def active_at(self, at: datetime) -> bool:
        t = as_utc(at)
        return as_utc(self.suspended_at) <= t and (
            self.lifted_at is None or as_utc(self.lifted_at) > t)


def suspended_at(records: Iterable[SuspensionRecord], at: datetime) -> GrantSet:
    """Grants suspended at `at`."""
    out: set[Grant] = set()
    for r in records:
        if r.active_at(at):
            out |= r.grants
    return frozenset(out)


def grants_at(plan: Plan, at: datetime, *, retired_at: datetime | None = None,
              suspensions: Iterable[SuspensionRecord] = ()) -> GrantSet:
    """The release's scope at `at` as wavekit wrote it: the prior bundle plus the adds, minus
    the removes (the deploy), minus the retirements once retired and the grants suspended.

    Changes made outside wavekit are not in here; the metrics replay them from the
    assignments feed.
    """
    grants = (plan.prior | plan.adds) - plan.removes
    if retired_at is not None and as_utc(retired_at) <= as_utc(at):
        grants -= plan.retirements
    return frozenset(grants - suspended_at(suspensions, at))
