"""Planning, as pure functions: a package and the target's state give the plan and the bundle.

- adds:        members x granted entitlements, minus what they already hold
- removes:     members x entitlements the package takes away at launch, that they hold
- retirements: members x legacy entitlements the package supersedes, that they hold
- prior:       every current grant of the package's scope, read before the first write;
               rollback restores the touched grants to exactly this.
"""

from __future__ import annotations

from dataclasses import dataclass

from wavekit.domain.grants import Grant, GrantSet
from wavekit.domain.packages import PackageView


@dataclass(frozen=True)
class Plan:
    package_key: str
    scope: frozenset[str]
    adds: GrantSet
    removes: GrantSet
    retirements: GrantSet
    prior: GrantSet

    @property
    def touched(self) -> GrantSet:
        """Every grant the release may change; rollback puts exactly these back."""
        return self.adds | self.removes | self.retirements

    @property
    def is_empty(self) -> bool:
        return not self.touched

    def counts(self) -> dict[str, int]:
        return {"adds": len(self.adds), "removes": len(self.removes),
                "retirements": len(self.retirements)}


def _cross(identities: frozenset[str], entitlements: frozenset[str]) -> GrantSet:
    return frozenset(Grant(i, e) for e in entitlements for i in identities)


def plan_package(package: PackageView, current: GrantSet) -> Plan:
    """The plan for `package` given `current`, the target's grants of the package's scope."""
    prior = frozenset(g for g in current if g.entitlement in package.scope)
    wanted = _cross(package.members, package.entitlements)
    return Plan(
        package_key=package.key,
        scope=package.scope,
        adds=wanted - prior,
        removes=_cross(package.members, package.removes) & prior,
        retirements=_cross(package.members, package.retires) & prior,
        prior=prior,
    )


@dataclass(frozen=True)
class RestorePlan:
    """The writes that put a release's touched grants back to the prior bundle."""

    adds: GrantSet
    removes: GrantSet


def plan_restore(prior: GrantSet, touched: GrantSet, current: GrantSet) -> RestorePlan:
    """Re-grant touched grants that were present before; remove touched ones that were not.

    Grants outside `touched` are never written, whatever their state.
    """
    should_hold = touched & prior
    should_not = touched - prior
    return RestorePlan(adds=should_hold - current, removes=should_not & current)


@dataclass(frozen=True)
class RestoreProof:
    """The read-back after a rollback, compared with the prior bundle."""

    touched_restored: bool
    prior_count: int
    readback_count: int
    mismatched: GrantSet  # touched grants whose presence differs from the prior bundle
    drift_outside: GrantSet  # untouched grants that changed since the snapshot (not ours)

    @property
    def equal(self) -> bool:
        """The target's scope reads back equal to the prior bundle, grant for grant."""
        return self.touched_restored and not self.drift_outside


def prove_restore(prior: GrantSet, touched: GrantSet, readback: GrantSet) -> RestoreProof:
    """Compare what the target holds now with the prior bundle, over the same scope."""
    mismatched = (touched & prior) - readback | (touched - prior) & readback
    drift = (prior ^ readback) - touched
    return RestoreProof(
        touched_restored=not mismatched, prior_count=len(prior), readback_count=len(readback),
        mismatched=frozenset(mismatched), drift_outside=frozenset(drift),
    )
