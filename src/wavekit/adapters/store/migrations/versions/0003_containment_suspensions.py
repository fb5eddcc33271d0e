"""Containment that contains: suspended grants (suspension, suspendedgrant), the Contained
package state, and release.analysis_from (where the health analysis restarts after a restore).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # SQLite stores the state as text
        op.execute("ALTER TYPE packagestate ADD VALUE IF NOT EXISTS 'CONTAINED' AFTER 'STABLE'")
    op.create_table(
        "suspension",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("package_key", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("identities", sa.JSON(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("from_state", sa.String(), nullable=False),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(), nullable=True),
        sa.Column("lift_reason", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["release.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("suspension", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_suspension_package_key"), ["package_key"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_suspension_release_id"), ["release_id"], unique=False)

    op.create_table(
        "suspendedgrant",
        sa.Column("suspension_id", sa.Integer(), nullable=False),
        sa.Column("identity", sa.String(), nullable=False),
        sa.Column("entitlement", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["suspension_id"],
            ["suspension.id"],
        ),
        sa.PrimaryKeyConstraint("suspension_id", "identity", "entitlement"),
    )
    with op.batch_alter_table("release", schema=None) as batch_op:
        batch_op.add_column(sa.Column("analysis_from", sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    # PostgreSQL cannot drop an enum value; 'CONTAINED' stays in the type, unused.
    with op.batch_alter_table("release", schema=None) as batch_op:
        batch_op.drop_column("analysis_from")

    op.drop_table("suspendedgrant")
    with op.batch_alter_table("suspension", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suspension_release_id"))
        batch_op.drop_index(batch_op.f("ix_suspension_package_key"))

    op.drop_table("suspension")
