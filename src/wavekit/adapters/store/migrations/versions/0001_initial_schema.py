"""The initial schema: exactly the tables, indexes and constraints that
`SQLModel.metadata.create_all` made before wavekit had migrations (a store made that way is
stamped as this revision by `wavekit db upgrade`). Do not edit: add a revision instead.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "auditevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("package_key", sa.String(), nullable=True),
        sa.Column("wave", sa.Integer(), nullable=True),
        sa.Column("release_id", sa.Integer(), nullable=True),
        sa.Column("flow_run_id", sa.String(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auditevent_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_auditevent_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_auditevent_package_key"), ["package_key"], unique=False
        )

    op.create_table(
        "entitlement",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("system", sa.String(), nullable=True),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("privileged", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "identity",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("display_name", sa.String(), nullable=False),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("department", sa.String(), nullable=True),
        sa.Column("business_unit", sa.String(), nullable=True),
        sa.Column("title", sa.String(), nullable=True),
        sa.Column("location", sa.String(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("slack_id", sa.String(), nullable=True),
        sa.Column("manager", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("identity", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_business_unit"), ["business_unit"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_identity_department"), ["department"], unique=False)

    op.create_table(
        "maintenancetask",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(), nullable=False),
        sa.Column("package_key", sa.String(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("maintenancetask", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_maintenancetask_package_key"), ["package_key"], unique=False
        )

    op.create_table(
        "rolepackage",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("owner_name", sa.String(), nullable=False),
        sa.Column("owner_slack_id", sa.String(), nullable=True),
        sa.Column("owner_email", sa.String(), nullable=True),
        sa.Column("delegates", sa.JSON(), nullable=False),
        sa.Column("business_unit", sa.String(), nullable=True),
        sa.Column("risk", sa.String(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=True),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.Column("release_tentative", sa.Boolean(), nullable=False),
        sa.Column("watch_days", sa.Integer(), nullable=False),
        sa.Column("telemetry_focus", sa.String(), nullable=False),
        sa.Column("health", sa.JSON(), nullable=False),
        sa.Column("fallback_plan", sa.String(), nullable=False),
        sa.Column("fallback_drill", sa.String(), nullable=False),
        sa.Column("rollback_only", sa.Boolean(), nullable=False),
        sa.Column("retire_in_launch_window", sa.Boolean(), nullable=False),
        sa.Column("population_rule", sa.String(), nullable=True),
        sa.Column("guards", sa.JSON(), nullable=False),
        sa.Column("maintenance_note", sa.String(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "SCHEDULED",
                "RELEASE_READY",
                "MONITORING",
                "NEEDS_TUNING",
                "ROLLBACK_READY",
                "AWAITING_HANDOFF",
                "HELD",
                "DEPLOYING",
                "WATCHING",
                "STABLE",
                "ROLLING_BACK",
                "ROLLED_BACK",
                name="packagestate",
            ),
            nullable=False,
        ),
        sa.Column("state_reason", sa.String(), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_review_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("rolepackage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rolepackage_wave"), ["wave"], unique=False)

    op.create_table(
        "sandboxgrant",
        sa.Column("sandbox", sa.String(), nullable=False),
        sa.Column("identity", sa.String(), nullable=False),
        sa.Column("entitlement", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("sandbox", "identity", "entitlement"),
    )
    with op.batch_alter_table("sandboxgrant", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sandboxgrant_entitlement", ["sandbox", "entitlement"], unique=False
        )

    op.create_table(
        "slackrequestseen",
        sa.Column("signature", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("signature"),
    )
    with op.batch_alter_table("slackrequestseen", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slackrequestseen_at"), ["at"], unique=False)

    op.create_table(
        "telemetrysample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("package_key", sa.String(), nullable=True),
        sa.Column("identity", sa.String(), nullable=True),
        sa.Column("entitlement", sa.String(), nullable=True),
        sa.Column("category", sa.String(), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("telemetrysample", schema=None) as batch_op:
        batch_op.create_index("ix_telemetry_kind_at", ["kind", "at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_telemetrysample_package_key"), ["package_key"], unique=False
        )

    op.create_table(
        "wave",
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("window_start", sa.Date(), nullable=True),
        sa.Column("window_end", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_table(
        "packagedependency",
        sa.Column("package_key", sa.String(), nullable=False),
        sa.Column("depends_on", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["depends_on"],
            ["rolepackage.key"],
        ),
        sa.ForeignKeyConstraint(
            ["package_key"],
            ["rolepackage.key"],
        ),
        sa.PrimaryKeyConstraint("package_key", "depends_on"),
    )
    op.create_table(
        "packageentitlement",
        sa.Column("package_key", sa.String(), nullable=False),
        sa.Column("entitlement_key", sa.String(), nullable=False),
        sa.Column("usage", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entitlement_key"],
            ["entitlement.key"],
        ),
        sa.ForeignKeyConstraint(
            ["package_key"],
            ["rolepackage.key"],
        ),
        sa.PrimaryKeyConstraint("package_key", "entitlement_key", "usage"),
    )
    op.create_table(
        "packagemember",
        sa.Column("package_key", sa.String(), nullable=False),
        sa.Column("identity_id", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identity.id"],
        ),
        sa.ForeignKeyConstraint(
            ["package_key"],
            ["rolepackage.key"],
        ),
        sa.PrimaryKeyConstraint("package_key", "identity_id"),
    )
    with op.batch_alter_table("packagemember", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_packagemember_identity_id"), ["identity_id"], unique=False
        )

    op.create_table(
        "release",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("package_key", sa.String(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("flow_run_id", sa.String(), nullable=True),
        sa.Column("triggered_by", sa.String(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_by", sa.String(), nullable=True),
        sa.Column("deploy_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deployed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("watch_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stable_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("legacy_retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rolled_back_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rollback_reason", sa.String(), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("adds", sa.Integer(), nullable=False),
        sa.Column("removes", sa.Integer(), nullable=False),
        sa.Column("retirements", sa.Integer(), nullable=False),
        sa.Column("applied_batches", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["package_key"],
            ["rolepackage.key"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("release", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_release_package_key"), ["package_key"], unique=False)

    op.create_table(
        "sodrule",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("entitlement_a", sa.String(), nullable=False),
        sa.Column("entitlement_b", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entitlement_a"],
            ["entitlement.key"],
        ),
        sa.ForeignKeyConstraint(
            ["entitlement_b"],
            ["entitlement.key"],
        ),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("package_key", sa.String(), nullable=False),
        sa.Column("flow_run_id", sa.String(), nullable=True),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminder_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(), nullable=True),
        sa.Column("approver", sa.String(), nullable=True),
        sa.Column("comment", sa.String(), nullable=True),
        sa.Column("slack_channel", sa.String(), nullable=True),
        sa.Column("slack_ts", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["release.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approval_package_key"), ["package_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_approval_release_id"), ["release_id"], unique=False)

    op.create_table(
        "bundlegrant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("identity", sa.String(), nullable=False),
        sa.Column("entitlement", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["release.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("release_id", "kind", "identity", "entitlement"),
    )
    with op.batch_alter_table("bundlegrant", schema=None) as batch_op:
        batch_op.create_index("ix_bundlegrant_release_kind", ["release_id", "kind"], unique=False)

    op.create_table(
        "bundlescope",
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("entitlement", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["release.id"],
        ),
        sa.PrimaryKeyConstraint("release_id", "entitlement"),
    )
    op.create_table(
        "healthcheckresult",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("package_key", sa.String(), nullable=False),
        sa.Column("check_name", sa.String(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("verdict", sa.String(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["release.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("release_id", "check_name", "due_at"),
    )
    with op.batch_alter_table("healthcheckresult", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_healthcheckresult_package_key"), ["package_key"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_healthcheckresult_release_id"), ["release_id"], unique=False
        )



def downgrade() -> None:
    with op.batch_alter_table("healthcheckresult", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_healthcheckresult_release_id"))
        batch_op.drop_index(batch_op.f("ix_healthcheckresult_package_key"))

    op.drop_table("healthcheckresult")
    op.drop_table("bundlescope")
    with op.batch_alter_table("bundlegrant", schema=None) as batch_op:
        batch_op.drop_index("ix_bundlegrant_release_kind")

    op.drop_table("bundlegrant")
    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approval_release_id"))
        batch_op.drop_index(batch_op.f("ix_approval_package_key"))

    op.drop_table("approval")
    op.drop_table("sodrule")
    with op.batch_alter_table("release", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_release_package_key"))

    op.drop_table("release")
    with op.batch_alter_table("packagemember", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_packagemember_identity_id"))

    op.drop_table("packagemember")
    op.drop_table("packageentitlement")
    op.drop_table("packagedependency")
    op.drop_table("wave")
    with op.batch_alter_table("telemetrysample", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_telemetrysample_package_key"))
        batch_op.drop_index("ix_telemetry_kind_at")

    op.drop_table("telemetrysample")
    with op.batch_alter_table("slackrequestseen", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slackrequestseen_at"))

    op.drop_table("slackrequestseen")
    with op.batch_alter_table("sandboxgrant", schema=None) as batch_op:
        batch_op.drop_index("ix_sandboxgrant_entitlement")

    op.drop_table("sandboxgrant")
    with op.batch_alter_table("rolepackage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rolepackage_wave"))

    op.drop_table("rolepackage")
    sa.Enum(name="packagestate").drop(op.get_bind(), checkfirst=True)  # PostgreSQL's type
    with op.batch_alter_table("maintenancetask", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_maintenancetask_package_key"))

    op.drop_table("maintenancetask")
    with op.batch_alter_table("identity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_department"))
        batch_op.drop_index(batch_op.f("ix_identity_business_unit"))

    op.drop_table("identity")
    op.drop_table("entitlement")
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auditevent_package_key"))
        batch_op.drop_index(batch_op.f("ix_auditevent_at"))
        batch_op.drop_index(batch_op.f("ix_auditevent_action"))

    op.drop_table("auditevent")
