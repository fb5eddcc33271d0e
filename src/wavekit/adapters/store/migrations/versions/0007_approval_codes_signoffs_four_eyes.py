"""Approvals that prove who decided: approvalcode (one-time codes, hashes only),
approvalsignoff (each accepted approve/reject, so four eyes can count distinct approvers),
approval.required/proof/form_inputs/wrong_codes/locked_at, and the catalog's four-eyes
settings on rolepackage. Existing rows get defaults: one approval required, nothing locked.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "approvalcode",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("approval_id", sa.Integer(), nullable=False),
        sa.Column("approver", sa.String(), nullable=False),
        sa.Column("salt", sa.String(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("sent_via", sa.String(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["approval_id"],
            ["approval.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("approval_id", "approver"),
    )
    with op.batch_alter_table("approvalcode", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_approvalcode_approval_id"), ["approval_id"], unique=False
        )

    op.create_table(
        "approvalsignoff",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("approval_id", sa.Integer(), nullable=False),
        sa.Column("approver", sa.String(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("comment", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("proof", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["approval_id"],
            ["approval.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("approval_id", "approver"),
    )
    with op.batch_alter_table("approvalsignoff", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_approvalsignoff_approval_id"), ["approval_id"], unique=False
        )

    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.add_column(sa.Column("required", sa.Integer(), nullable=False,
                                      server_default="1"))
        batch_op.add_column(sa.Column("proof", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("form_inputs", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("wrong_codes", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("rolepackage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approvals_required", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("approvals_from", sa.JSON(), nullable=False,
                                      server_default="[]"))
        batch_op.add_column(sa.Column("security_approvers", sa.JSON(), nullable=False,
                                      server_default="[]"))



def downgrade() -> None:
    with op.batch_alter_table("rolepackage", schema=None) as batch_op:
        batch_op.drop_column("security_approvers")
        batch_op.drop_column("approvals_from")
        batch_op.drop_column("approvals_required")

    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.drop_column("locked_at")
        batch_op.drop_column("wrong_codes")
        batch_op.drop_column("form_inputs")
        batch_op.drop_column("proof")
        batch_op.drop_column("required")

    with op.batch_alter_table("approvalsignoff", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approvalsignoff_approval_id"))

    op.drop_table("approvalsignoff")
    with op.batch_alter_table("approvalcode", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approvalcode_approval_id"))

    op.drop_table("approvalcode")
