"""Prior bundles keep each grant's stored form: bundlegrant.stored_value (nullable).

An LDAP group member is a DN that may be stored as uid=a,ou=People,dc=Example; rollback
writes a removed member back exactly as it was read, not in the canonical form of the user's
entry. Rows written before this revision have no stored value and restore as before.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("bundlegrant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stored_value", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bundlegrant", schema=None) as batch_op:
        batch_op.drop_column("stored_value")
