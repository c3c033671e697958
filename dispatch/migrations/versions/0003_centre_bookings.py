"""Centre mode: carers' shifts at a centre, and children's places in their groups

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

The assignments table stays for visit mode only: its "no carer in two overlapping
assignments" guard is right for a carer sent to a ward, and would forbid a group of five.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shifts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("carer_id", sa.String(length=32), nullable=False),
        sa.Column("center_id", sa.String(length=50), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["carer_id"], ["carers.id"],
                                name=op.f("fk_shifts_carer_id_carers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shifts")),
    )
    with op.batch_alter_table("shifts", schema=None) as batch_op:
        batch_op.create_index("ix_shifts_carer_window", ["carer_id", "start", "end"],
                              unique=False)
        batch_op.create_index("ix_shifts_center_window", ["center_id", "start", "end"],
                              unique=False)

    op.create_table(
        "center_bookings",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("carer_id", sa.String(length=32), nullable=False),
        sa.Column("center_id", sa.String(length=50), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("provisional", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["carer_id"], ["carers.id"],
                                name=op.f("fk_center_bookings_carer_id_carers")),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"],
                                name=op.f("fk_center_bookings_request_id_requests")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_center_bookings")),
    )
    with op.batch_alter_table("center_bookings", schema=None) as batch_op:
        batch_op.create_index("ix_center_bookings_carer_window", ["carer_id", "start", "end"],
                              unique=False)
        batch_op.create_index("uq_center_bookings_active_request", ["request_id"], unique=True,
                              sqlite_where=sa.text("active"), postgresql_where=sa.text("active"))


def downgrade() -> None:
    with op.batch_alter_table("center_bookings", schema=None) as batch_op:
        batch_op.drop_index("uq_center_bookings_active_request", sqlite_where=sa.text("active"),
                            postgresql_where=sa.text("active"))
        batch_op.drop_index("ix_center_bookings_carer_window")
    op.drop_table("center_bookings")
    with op.batch_alter_table("shifts", schema=None) as batch_op:
        batch_op.drop_index("ix_shifts_center_window")
        batch_op.drop_index("ix_shifts_carer_window")
    op.drop_table("shifts")
