"""Rollback drills: drillrun (one drill of a package, automated or signed by hand, with its
timing, read-back counts and verdict) and drillgrant (an automated drill's bundle on its drill
target). New tables only: nothing already in the store changes.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "drillrun",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("package_key", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("production_target", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("signed_by", sa.String(), nullable=True),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("flow_run_id", sa.String(), nullable=True),
        sa.Column("objective_minutes", sa.Float(), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deployed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rollback_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("production_count", sa.Integer(), nullable=False),
        sa.Column("seeded_added", sa.Integer(), nullable=False),
        sa.Column("seeded_removed", sa.Integer(), nullable=False),
        sa.Column("adds", sa.Integer(), nullable=False),
        sa.Column("removes", sa.Integer(), nullable=False),
        sa.Column("retirements", sa.Integer(), nullable=False),
        sa.Column("re_granted", sa.Integer(), nullable=False),
        sa.Column("withdrawn", sa.Integer(), nullable=False),
        sa.Column("prior_count", sa.Integer(), nullable=False),
        sa.Column("readback_count", sa.Integer(), nullable=False),
        sa.Column("mismatches", sa.JSON(), nullable=False),
        sa.Column("drift_outside", sa.JSON(), nullable=False),
        sa.Column("failure", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["package_key"],
            ["rolepackage.key"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("drillrun", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_drillrun_package_key"), ["package_key"], unique=False)

    op.create_table(
        "drillgrant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("drill_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("identity", sa.String(), nullable=False),
        sa.Column("entitlement", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["drill_id"],
            ["drillrun.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("drill_id", "kind", "identity", "entitlement"),
    )
    with op.batch_alter_table("drillgrant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_drillgrant_drill_id"), ["drill_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("drillgrant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_drillgrant_drill_id"))

    op.drop_table("drillgrant")
    with op.batch_alter_table("drillrun", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_drillrun_package_key"))

    op.drop_table("drillrun")