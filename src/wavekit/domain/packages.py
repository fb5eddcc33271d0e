"""A role package with its members, entitlements and dependencies as one plain value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wavekit.domain.states import PackageState


@dataclass(frozen=True)
class PackageView:
    """Everything planning, gates and health need about a package, detached from the store."""

    key: str
    name: str
    state: PackageState
    risk: str = "low"
    wave: int | None = None
    owner_name: str = ""
    owner_slack_id: str | None = None
    delegates: tuple[dict[str, str], ...] = ()
    members: frozenset[str] = frozenset()
    entitlements: frozenset[str] = frozenset()
    removes: frozenset[str] = frozenset()
    retires: frozenset[str] = frozenset()
    depends_on: tuple[str, ...] = ()
    watch_days: int = 14
    health: dict[str, Any] = field(default_factory=dict)
    fallback_plan: str = ""
    fallback_drill: str = "pending"
    rollback_only: bool = False
    retire_in_launch_window: bool = False
    guards: tuple[str, ...] = ()
    population_rule: str | None = None
    rollout: dict[str, Any] | None = None  # canary steps (wavekit.domain.cohorts.rollout_from)

    @property
    def scope(self) -> frozenset[str]:
        """Every entitlement the package reads or writes on the target."""
        return self.entitlements | self.removes | self.retires

    @property
    def approvers(self) -> frozenset[str]:
        """Slack ids allowed to decide the owner handoff: the owner and the delegates."""
        ids = {self.owner_slack_id} | {d.get("slack_id") for d in self.delegates}
        return frozenset(i for i in ids if i)
