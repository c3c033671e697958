"""Senders and their claims: a `sending` SMS belongs to the worker that claimed it

Before this, a row left `sending` was looked up at the provider after a fixed 60 s. That
was both too slow (a SIGKILLed worker's offers waited a minute) and unsafe: a live worker
holding a batch behind the 1 SMS/s rate limit could still send a row that the sweep had
already found missing at the provider and sent again. Now a row names its sender
(`notifications.claimed_by`), senders beat in `senders`, and only a dead sender's rows
are uncertain.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "senders",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("process_start", sa.BigInteger),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_senders")),
    )
    op.add_column("notifications", sa.Column("claimed_by", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("claimed_by")
    op.drop_table("senders")
