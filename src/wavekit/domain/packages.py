"""A role package with its members, entitlements and dependencies as one plain value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wavekit.domain.states import PackageState


@dataclass(frozen=True)
class Approver:
    """One person who may decide a handoff; known by their Slack id, else their e-mail."""

    role: str  # owner | delegate | security
    name: str
    slack_id: str | None = None
    email: str | None = None

    @property
    def id(self) -> str:
        return self.slack_id or self.email or ""


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
    owner_email: str | None = None
    delegates: tuple[dict[str, str], ...] = ()
    approvals_required: int | None = None  # None: two for high risk, else one
    approvals_from: tuple[str, ...] = ()  # owner | delegates | security; empty: the first two
    security_approvers: tuple[dict[str, str], ...] = ()
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
    def approver_people(self) -> tuple[Approver, ...]:
        """Who may decide the owner handoff, each with the channels that reach them."""
        sources = self.approvals_from or ("owner", "delegates")
        people: dict[str, Approver] = {}
        found: list[tuple[str, str, str | None, str | None]] = []
        if "owner" in sources:
            found.append(("owner", self.owner_name, self.owner_slack_id, self.owner_email))
        for role, group in (("delegate", self.delegates), ("security", self.security_approvers)):
            if ("delegates" if role == "delegate" else role) in sources:
                found += [(role, d.get("name", ""), d.get("slack_id") or None,
                           d.get("email") or None) for d in group]
        for role, name, slack_id, email in found:
            person = Approver(role, name, slack_id, email)
            if person.id and person.id not in people:
                people[person.id] = person
        return tuple(people.values())

    @property
    def approvers(self) -> frozenset[str]:
        """Ids (Slack id, else e-mail) allowed to decide the owner handoff."""
        return frozenset(p.id for p in self.approver_people)

    @property
    def required_approvals(self) -> int:
        """Distinct approvals the handoff needs: the catalog's, else four eyes for high risk."""
        if self.approvals_required is not None:
            return self.approvals_required
        return 2 if self.risk == "high" else 1
