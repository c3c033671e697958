"""Delivery tracking on notifications; drafts for requests asked for by SMS

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("provider_status", sa.String(length=20)))
        batch_op.add_column(sa.Column("status_at", sa.DateTime(timezone=True)))
        batch_op.create_index("ix_notifications_due", ["status", "next_attempt_at"])
    op.create_table(
        "sms_drafts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("family_id", sa.String(length=32), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("service", sa.String(length=40), nullable=False),
        sa.Column("child_id", sa.String(length=32), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("inbound_id", sa.String(length=32)),
        sa.Column("request_id", sa.String(length=32)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["family_id"], ["families.id"],
                                name=op.f("fk_sms_drafts_family_id_families"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_drafts")),
    )
    with op.batch_alter_table("sms_drafts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sms_drafts_phone"), ["phone"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sms_drafts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sms_drafts_phone"))
    op.drop_table("sms_drafts")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_due")
        batch_op.drop_column("status_at")
        batch_op.drop_column("provider_status")
        batch_op.drop_column("next_attempt_at")
