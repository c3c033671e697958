"""Migrations build exactly the schema the code maps, and unwind cleanly, on both backends."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from dispatch.db import make_engine
from infra.db import alembic_config


def test_migrations_match_the_mapped_schema_and_downgrade(db_url: str) -> None:
    cfg = alembic_config(db_url)
    command.check(cfg)  # raises if the models and the migrated database differ
    command.downgrade(cfg, "base")
    tables = set(inspect(make_engine(db_url)).get_table_names()) - {"alembic_version"}
    assert tables == set()
    command.upgrade(cfg, "head")
    assert "sms_drafts" in inspect(make_engine(db_url)).get_table_names()


def test_centre_tables_come_and_go_with_revision_0003(db_url: str) -> None:
    cfg = alembic_config(db_url)
    centre_tables = {"shifts", "center_bookings"}
    assert centre_tables <= set(inspect(make_engine(db_url)).get_table_names())
    command.downgrade(cfg, "0002")
    assert not centre_tables & set(inspect(make_engine(db_url)).get_table_names())
    command.upgrade(cfg, "head")
    assert centre_tables <= set(inspect(make_engine(db_url)).get_table_names())
    command.check(cfg)
