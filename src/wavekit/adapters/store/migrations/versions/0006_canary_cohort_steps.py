"""Canary cohorts: rolepackage.rollout (the catalog's steps), cohortprogress (where a stepped
release stands: its step, soak end and pause) and cohortmember (the members each step took
up). New tables and a nullable column: nothing already in the store changes.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "cohortmember",
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("identity", sa.String(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["release.id"],
        ),
        sa.PrimaryKeyConstraint("release_id", "identity"),
    )
    op.create_table(
        "cohortprogress",
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("package_key", sa.String(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("soak_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_by", sa.String(), nullable=True),
        sa.Column("pause_reason", sa.String(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["release.id"],
        ),
        sa.PrimaryKeyConstraint("release_id"),
    )
    with op.batch_alter_table("cohortprogress", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cohortprogress_package_key"), ["package_key"], unique=False
        )

    with op.batch_alter_table("rolepackage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rollout", sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table("rolepackage", schema=None) as batch_op:
        batch_op.drop_column("rollout")

    with op.batch_alter_table("cohortprogress", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cohortprogress_package_key"))

    op.drop_table("cohortprogress")
    op.drop_table("cohortmember")
