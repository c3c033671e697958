"""Privacy (개인정보보호법): sensitive fields encrypted at rest, the audit log, purge marks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Existing rows are encrypted here, with the key the migrating process was given: `dolbom db
upgrade` builds its engine with `dispatch.db.make_engine`, which takes DOLBOM_DATA_KEY (or,
outside production, the development key file in DOLBOM_DATA_DIR) and refuses to run in
production without one. So run the upgrade with the same DOLBOM_DATA_KEY as the services,
or they will not be able to read what it encrypted (they say so, they don't show garbage).
A value already encrypted is left alone, so the upgrade can be re-run after a failure.

Downgrading decrypts the columns again (with the same key).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

from dispatch.encryption import (
    LOCATION_KEYS,
    TIMELINE_KEYS,
    Keyring,
    is_encrypted,
    keyring_of,
)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (table, column, JSON keys to encrypt: None = a plain text column, ALL = every key)
ALL = frozenset({"*"})
SENSITIVE: list[tuple[str, str, frozenset[str] | None]] = [
    ("requests", "location", LOCATION_KEYS),
    ("requests", "notes", None),
    ("timeline", "detail", TIMELINE_KEYS),
    ("notifications", "params", ALL),
    ("notifications", "body", None),
    ("inbound_sms", "body", None),
]


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("family_id", sa.String(length=32), nullable=True),
        sa.Column("request_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_family_id"), ["family_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_request_id"), ["request_id"],
                              unique=False)
    with op.batch_alter_table("families", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("child_age_months", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    _retype_disability("TEXT NOT NULL DEFAULT ''", "CAST(disability AS TEXT)",
                       "TEXT USING disability::text", default=None)

    keyring = keyring_of(op.get_bind().dialect)
    _each("children", "disability", lambda v: v if is_encrypted(v) else keyring.encrypt(
        "1" if str(v).lower() in ("1", "true", "t") else "0"))
    for table, column, keys in SENSITIVE:
        _each(table, column, _encrypter(keyring, keys))


def downgrade() -> None:
    keyring = keyring_of(op.get_bind().dialect)
    for table, column, keys in SENSITIVE:
        _each(table, column, _decrypter(keyring, keys))
    _each("children", "disability",
          lambda v: ("1" if keyring.decrypt(v) == "1" else "0") if is_encrypted(v) else v)
    _retype_disability("BOOLEAN NOT NULL DEFAULT (false)", "disability = '1'",
                       "BOOLEAN USING (disability = '1')", default="false")
    # Natively, not by a batch rebuild: see _retype_disability.
    for table, column in (("requests", "purged_at"), ("requests", "child_age_months"),
                          ("families", "purged_at")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_request_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_family_id"))
    op.drop_table("audit_log")


def _encrypter(keyring: Keyring, keys: frozenset[str] | None) -> Callable[[Any], Any]:
    if keys is None:
        return lambda v: v if is_encrypted(v) else keyring.encrypt(str(v))

    def encrypt(obj: Any) -> Any:
        if not isinstance(obj, dict):
            return obj
        return {k: keyring.encrypt(json.dumps(v, ensure_ascii=False))
                if (keys is ALL or k in keys) and v is not None and not is_encrypted(v) else v
                for k, v in obj.items()}

    return encrypt


def _decrypter(keyring: Keyring, keys: frozenset[str] | None) -> Callable[[Any], Any]:
    if keys is None:
        return lambda v: keyring.decrypt(v) if is_encrypted(v) else v

    def decrypt(obj: Any) -> Any:
        if not isinstance(obj, dict):
            return obj
        return {k: json.loads(keyring.decrypt(v)) if is_encrypted(v) else v
                for k, v in obj.items()}

    return decrypt


def _each(table: str, column: str, change: Callable[[Any], Any]) -> None:
    """Rewrite one column row by row (raw values: no ORM type in between)."""
    kind: Any = sa.JSON if column in ("location", "detail", "params") else sa.Text
    t = sa.table(table, sa.column("id", sa.String), sa.column(column, kind))
    bind = op.get_bind()
    rows = bind.execute(sa.select(t.c.id, t.c[column]).where(t.c[column].is_not(None))).all()
    for row_id, value in rows:
        new = change(value)
        if new != value:
            bind.execute(t.update().where(t.c.id == row_id).values({column: new}))


def _retype_disability(sqlite_column: str, sqlite_copy: str, postgresql_type: str, *,
                       default: str | None) -> None:
    """children.disability between BOOLEAN and TEXT (ciphertext).

    Not with a batch rebuild on SQLite: rebuilding `children` drops it, and requests point at
    it, so the drop fails with foreign keys on (and PRAGMA foreign_keys can't change inside
    the migration's transaction). A new column, a copy, a drop and a rename need no rebuild.
    """
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE children ADD COLUMN disability_new {sqlite_column}")
        op.execute(f"UPDATE children SET disability_new = {sqlite_copy}")
        op.execute("ALTER TABLE children DROP COLUMN disability")
        op.execute("ALTER TABLE children RENAME COLUMN disability_new TO disability")
        return
    op.execute("ALTER TABLE children ALTER COLUMN disability DROP DEFAULT")
    op.execute(f"ALTER TABLE children ALTER COLUMN disability TYPE {postgresql_type}")
    if default is not None:
        op.execute(f"ALTER TABLE children ALTER COLUMN disability SET DEFAULT {default}")
