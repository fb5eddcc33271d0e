"""The audit log becomes a hash chain: auditevent.seq (unique), prev_hash, hash.

Events already in the log are chained here, in id order (the order they were written), so
`wavekit audit verify` finds a whole chain after the upgrade rather than calling every
earlier event "inserted outside wavekit". The hash is wavekit.adapters.store.audit's
`event_hash` (HASH_VERSION 1), the one verify checks.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# PostgreSQL's name for the constraint create_all makes from `Field(unique=True)`; named so
# the downgrade (and SQLite's batch copy) can find it.
SEQ_UNIQUE = "auditevent_seq_key"


def upgrade() -> None:
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(SEQ_UNIQUE, ["seq"])
    _chain_existing_events()


def _chain_existing_events(batch: int = 1000) -> None:
    from wavekit.adapters.store.audit import GENESIS_HASH, event_hash

    events = sa.table(
        "auditevent",
        sa.column("id", sa.Integer()),
        sa.column("seq", sa.Integer()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String()),
        sa.column("action", sa.String()),
        sa.column("package_key", sa.String()),
        sa.column("wave", sa.Integer()),
        sa.column("release_id", sa.Integer()),
        sa.column("flow_run_id", sa.String()),
        sa.column("detail", sa.JSON()),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(events).order_by(events.c.id)).all()
    prev = GENESIS_HASH
    updates = []
    for seq, r in enumerate(rows, start=1):
        digest = event_hash(
            seq=seq, prev_hash=prev, at=r.at, actor=r.actor, action=r.action,
            package_key=r.package_key, wave=r.wave, release_id=r.release_id,
            flow_run_id=r.flow_run_id, detail=r.detail,
        )
        updates.append({"_id": r.id, "seq": seq, "prev_hash": prev, "hash": digest})
        prev = digest
    stmt = (
        events.update()
        .where(events.c.id == sa.bindparam("_id"))
        .values(seq=sa.bindparam("seq"), prev_hash=sa.bindparam("prev_hash"),
                hash=sa.bindparam("hash"))
    )
    for start in range(0, len(updates), batch):
        conn.execute(stmt, updates[start:start + batch])


def downgrade() -> None:
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.drop_constraint(SEQ_UNIQUE, type_="unique")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
