"""The store's tables (SQLModel): catalog, target sandbox, releases, bundles, audit."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from wavekit.domain.clock import utcnow
from wavekit.domain.states import PackageState


def _json(default: Any = None) -> Any:
    return Field(default_factory=lambda: [] if default is None else default,
                 sa_column=Column(JSON, nullable=False))


# ---------------------------------------------------------------- catalog


class Identity(SQLModel, table=True):
    """A person or service account, keyed by the name targets know it by (userName / uid)."""

    id: str = Field(primary_key=True)
    display_name: str
    email: str | None = None
    department: str | None = Field(default=None, index=True)
    business_unit: str | None = Field(default=None, index=True)
    title: str | None = None
    location: str | None = None
    kind: str = "person"  # person | service
    active: bool = True
    slack_id: str | None = None
    manager: str | None = None


class Entitlement(SQLModel, table=True):
    """Something an identity can hold on a target: a SCIM Group or an LDAP group."""

    key: str = Field(primary_key=True)
    name: str
    system: str | None = None
    description: str | None = None
    privileged: bool = False


class RolePackage(SQLModel, table=True):
    """A reviewed role ready for production, with its current state."""

    key: str = Field(primary_key=True)
    name: str
    description: str = ""
    owner_name: str
    owner_slack_id: str | None = None
    owner_email: str | None = None
    delegates: list[dict[str, str]] = _json()  # [{"name": ..., "slack_id": ..., "email": ...}]
    # Four eyes (catalog `approvals:`): distinct approvals needed (None: by risk), who may
    # give them (owner, delegates, security; empty: owner and delegates), and the security
    # approvers the catalog names.
    approvals_required: int | None = None
    approvals_from: list[str] = _json()
    security_approvers: list[dict[str, str]] = _json()
    business_unit: str | None = None
    risk: str = "low"  # low | medium | high
    wave: int | None = Field(default=None, index=True)
    release_date: date | None = None
    release_tentative: bool = False
    watch_days: int = 14
    telemetry_focus: str = ""
    health: dict[str, Any] = _json({})  # health-check overrides from the catalog
    fallback_plan: str = ""
    fallback_drill: str = "pending"  # signed | pending | not_required
    rollback_only: bool = False
    retire_in_launch_window: bool = False
    population_rule: str | None = None  # wavekit.domain.rules over identities, for coverage health
    guards: list[str] = _json()  # operational guards required before deploy, e.g. "mfa"
    maintenance_note: str = ""
    # Canary steps from the catalog (wavekit.domain.cohorts.rollout_from); None: no steps.
    rollout: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    state: PackageState = PackageState.SCHEDULED
    state_reason: str = ""
    state_changed_at: datetime = Field(default_factory=utcnow)
    last_review_at: datetime | None = None


class PackageMember(SQLModel, table=True):
    package_key: str = Field(foreign_key="rolepackage.key", primary_key=True)
    identity_id: str = Field(foreign_key="identity.id", primary_key=True, index=True)


class PackageEntitlement(SQLModel, table=True):
    """How a package uses an entitlement: grant it, remove it at launch, or retire it (legacy)."""

    package_key: str = Field(foreign_key="rolepackage.key", primary_key=True)
    entitlement_key: str = Field(foreign_key="entitlement.key", primary_key=True)
    usage: str = Field(default="grant", primary_key=True)  # grant | remove | retire


class PackageDependency(SQLModel, table=True):
    package_key: str = Field(foreign_key="rolepackage.key", primary_key=True)
    depends_on: str = Field(foreign_key="rolepackage.key", primary_key=True)


class SodRule(SQLModel, table=True):
    """Two entitlements no identity may hold together (separation of duties)."""

    key: str = Field(primary_key=True)
    entitlement_a: str = Field(foreign_key="entitlement.key")
    entitlement_b: str = Field(foreign_key="entitlement.key")
    description: str = ""


class Wave(SQLModel, table=True):
    number: int = Field(primary_key=True)
    name: str = ""
    window_start: date | None = None
    window_end: date | None = None


# ---------------------------------------------------------------- sandbox target


class SandboxGrant(SQLModel, table=True):
    """The sandbox target's grants, kept in the store; the default target."""

    __table_args__ = (Index("ix_sandboxgrant_entitlement", "sandbox", "entitlement"),)

    sandbox: str = Field(default="default", primary_key=True)
    identity: str = Field(primary_key=True)
    entitlement: str = Field(primary_key=True)


# ---------------------------------------------------------------- releases


class Release(SQLModel, table=True):
    """One attempt to roll a package out; re-runs of the same wave reuse the open attempt."""

    id: int | None = Field(default=None, primary_key=True)
    package_key: str = Field(foreign_key="rolepackage.key", index=True)
    wave: int | None = None
    target: str = "sandbox"
    flow_run_id: str | None = None
    triggered_by: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    approved_at: datetime | None = None
    approved_by: str | None = None
    deploy_started_at: datetime | None = None
    deployed_at: datetime | None = None
    watch_ends_at: datetime | None = None
    next_check_at: datetime | None = None
    stable_at: datetime | None = None
    # Health results due before this do not count (a restore after containment starts the
    # analysis afresh, as a new AnalysisRun would); None: everything since deploy counts.
    analysis_from: datetime | None = None
    legacy_retired_at: datetime | None = None
    rolled_back_at: datetime | None = None
    rollback_reason: str | None = None
    closed: bool = False
    adds: int = 0
    removes: int = 0
    retirements: int = 0
    applied_batches: int = 0


class BundleGrant(SQLModel, table=True):
    """A grant in a release's bundle.

    kind "prior" rows are the scope as read before the first write (what rollback restores);
    kind "add" / "remove" / "retire" rows are the plan's touched grants.
    """

    __table_args__ = (
        UniqueConstraint("release_id", "kind", "identity", "entitlement"),
        Index("ix_bundlegrant_release_kind", "release_id", "kind"),
    )

    id: int | None = Field(default=None, primary_key=True)
    release_id: int = Field(foreign_key="release.id")
    kind: str
    identity: str
    entitlement: str
    # The target's own form of a prior grant (an LDAP member DN as stored), for rollback.
    stored_value: str | None = None


class BundleScope(SQLModel, table=True):
    """The entitlements a release's prior snapshot covers (the snapshot is complete for them)."""

    release_id: int = Field(foreign_key="release.id", primary_key=True)
    entitlement: str = Field(primary_key=True)


class Suspension(SQLModel, table=True):
    """A containment: grants of a live release taken away at once, kept to be given back.

    Recorded before the target is written (`applied_at` is set once it was), so a crash in
    between is finished by the next containment call; `lifted_at` is set when the grants are
    given back (restore), or when a rollback or a new release supersedes them.
    """

    id: int | None = Field(default=None, primary_key=True)
    release_id: int = Field(foreign_key="release.id", index=True)
    package_key: str = Field(index=True)
    reason: str
    scope: str = "identities"  # identities | package
    identities: list[str] = _json()
    checks: list[str] = _json()
    from_state: str  # where containment found the package; restore returns it there
    suspended_at: datetime
    applied_at: datetime | None = None
    lifted_at: datetime | None = None
    lifted_by: str | None = None
    lift_reason: str | None = None


class SuspendedGrant(SQLModel, table=True):
    suspension_id: int = Field(foreign_key="suspension.id", primary_key=True)
    identity: str = Field(primary_key=True)
    entitlement: str = Field(primary_key=True)


class Approval(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    release_id: int = Field(foreign_key="release.id", index=True)
    package_key: str = Field(index=True)
    flow_run_id: str | None = None
    channel: str = "prefect-ui"  # prefect-ui | slack | deadline
    requested_at: datetime = Field(default_factory=utcnow)
    required: int = 1  # distinct approvals needed before it is approved (four eyes: 2)
    # How the final decision's decider was identified: slack | code | unverified | deadline.
    proof: str | None = None
    form_inputs: int = 0  # UI form inputs judged so far: the next pause's key
    wrong_codes: int = 0
    locked_at: datetime | None = None
    deadline: datetime | None = None
    reminder_sent_at: datetime | None = None
    escalated_at: datetime | None = None
    decided_at: datetime | None = None
    decision: str | None = None  # approved | rejected | timeout
    approver: str | None = None
    comment: str | None = None
    slack_channel: str | None = None
    slack_ts: str | None = None


class ApprovalSignoff(SQLModel, table=True):
    """One accepted approve or reject of an approval; four eyes need several."""

    __table_args__ = (UniqueConstraint("approval_id", "approver"),)

    id: int | None = Field(default=None, primary_key=True)
    approval_id: int = Field(foreign_key="approval.id", index=True)
    approver: str
    decision: str  # approved | rejected
    comment: str = ""
    channel: str  # slack | prefect-ui
    proof: str  # slack | code | unverified
    at: datetime = Field(default_factory=utcnow)


class ApprovalCode(SQLModel, table=True):
    """A one-time approval code sent to one approver of one approval; only its hash is kept."""

    __table_args__ = (UniqueConstraint("approval_id", "approver"),)

    id: int | None = Field(default=None, primary_key=True)
    approval_id: int = Field(foreign_key="approval.id", index=True)
    approver: str
    salt: str
    digest: str = Field(max_length=64)
    sent_via: str  # slack | email
    sent_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    used_at: datetime | None = None


class HealthCheckResult(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("release_id", "check_name", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    release_id: int = Field(foreign_key="release.id", index=True)
    package_key: str = Field(index=True)
    check_name: str
    due_at: datetime
    measured_at: datetime
    value: float | None = None
    threshold: float | None = None
    verdict: str  # passed | failed | inconclusive | error
    detail: str = ""


class TelemetrySample(SQLModel, table=True):
    """One telemetry event, normalised: usage, ticket, exception, export or assignment change."""

    __table_args__ = (Index("ix_telemetry_kind_at", "kind", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    at: datetime
    package_key: str | None = Field(default=None, index=True)
    identity: str | None = None
    entitlement: str | None = None
    category: str | None = None
    value: float = 1.0
    source: str = ""


class MaintenanceTask(SQLModel, table=True):
    """An open or closed backlog item; `dedupe_key` keeps the nightly run from opening twins."""

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(unique=True)
    package_key: str | None = Field(default=None, index=True)
    kind: str  # tuning | exception_review | ownership_renewal | legacy_retirement | drill | anomaly
    reason: str
    opened_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = None
    close_reason: str | None = None


class AuditEvent(SQLModel, table=True):
    """One audit event, a link in a hash chain (see wavekit.adapters.store.audit).

    `seq`, `prev_hash` and `hash` are assigned when the transaction that records the event
    commits; a committed row without them was not written by wavekit.
    """

    id: int | None = Field(default=None, primary_key=True)
    seq: int | None = Field(default=None, unique=True)
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = "wavekit"
    action: str = Field(index=True)
    package_key: str | None = Field(default=None, index=True)
    wave: int | None = None
    release_id: int | None = None
    flow_run_id: str | None = None
    detail: dict[str, Any] = _json({})


class SlackRequestSeen(SQLModel, table=True):
    """Signatures of Slack requests already handled: a replayed request is refused."""

    signature: str = Field(primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)


# ---------------------------------------------------------------- rollback drills


class DrillRun(SQLModel, table=True):
    """One rollback drill of a package (see wavekit.domain.drills).

    automated: deployed to a drill target (never production), rolled back, read back and
    timed; `duration_seconds` is rollback_started_at -> finished_at, what the objective
    measures. manual: rehearsed elsewhere and signed by `signed_by`.
    """

    id: int | None = Field(default=None, primary_key=True)
    package_key: str = Field(foreign_key="rolepackage.key", index=True)
    kind: str = "automated"  # automated | manual
    status: str = "running"  # running | passed | failed
    target: str = ""  # the drill target, e.g. "sandbox:drill-service-desk-resolver"
    production_target: str = ""  # read for the drill target's starting state, never written
    actor: str = "wavekit"  # who ran (or recorded) it
    signed_by: str | None = None  # manual drills
    note: str = ""
    flow_run_id: str | None = None
    objective_minutes: float = 30.0
    scope: list[str] = _json()  # the package's entitlements the drill read and wrote
    started_at: datetime = Field(default_factory=utcnow)
    deployed_at: datetime | None = None
    rollback_started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    production_count: int = 0  # production's grants in scope, copied to the drill target
    seeded_added: int = 0  # writes that made the drill target's scope equal to that copy
    seeded_removed: int = 0
    adds: int = 0  # the package's plan on the drill target
    removes: int = 0
    retirements: int = 0
    re_granted: int = 0  # the rollback's writes
    withdrawn: int = 0
    prior_count: int = 0
    readback_count: int = 0
    mismatches: list[list[str]] = _json()  # [identity, entitlement] touched, not restored
    drift_outside: list[list[str]] = _json()  # [identity, entitlement] untouched, changed
    failure: str = ""  # why it failed, in words

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class DrillGrant(SQLModel, table=True):
    """A grant of a drill's bundle on its drill target: kind prior (read before the deploy),
    add / remove / retire (the package's plan there)."""

    __table_args__ = (UniqueConstraint("drill_id", "kind", "identity", "entitlement"),)

    id: int | None = Field(default=None, primary_key=True)
    drill_id: int = Field(foreign_key="drillrun.id", index=True)
    kind: str
    identity: str
    entitlement: str


# ---------------------------------------------------------------- canary cohorts


class CohortProgress(SQLModel, table=True):
    """Where a stepped release stands (see wavekit.domain.cohorts): its current member step,
    whether that step's writes are done, and whether a release manager paused it.

    status: deploying (the step's members are recorded, their writes may be partial: a re-run
    applies them again) | soaking (the step is on the target and watched) | complete (the
    last step is on the target; the package's watch window runs).
    """

    release_id: int = Field(foreign_key="release.id", primary_key=True)
    package_key: str = Field(index=True)
    step: int = 0  # index of the current member step
    steps: int = 1  # member steps in the rollout
    granted: int = 0  # members in the cohort so far (steps 1..step)
    total: int = 0  # members of the package
    status: str = "deploying"  # deploying | soaking | complete
    step_started_at: datetime | None = None
    soak_ends_at: datetime | None = None
    paused_at: datetime | None = None
    paused_by: str | None = None
    pause_reason: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class CohortMember(SQLModel, table=True):
    """A member a stepped release took up, with the step that took it up. Recorded before the
    step writes to the target, so a rollback covers a step a crash left half written."""

    release_id: int = Field(foreign_key="release.id", primary_key=True)
    identity: str = Field(primary_key=True)
    step: int


# ---------------------------------------------------------------- one writer per package


class Lease(SQLModel, table=True):
    """Who writes a resource now ("package:<key>", "wave:<n>"): at most one holder each.

    A holder renews `expires_at` while it works; a lease past it, or of a dead process on
    this host, or of a finished Prefect flow run, may be taken over (wavekit.workflow.leases).
    """

    resource: str = Field(primary_key=True)
    token: str  # one per acquisition: only its holder renews or gives it back
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
