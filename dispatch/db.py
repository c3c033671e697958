"""Engines for SQLite (the default) and PostgreSQL, set up for several processes at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from dispatch.encryption import Keyring, attach, keyring_for
from schemas.config import Settings, get_settings

READ_ONLY = "dolbom_read_only"


def make_engine(url: str, *, settings: Settings | None = None, keyring: Keyring | None = None,
                **kwargs: Any) -> Engine:
    """An engine whose sensitive columns encrypt with `keyring`, or else with the key the
    settings name (dispatch/encryption.py: DOLBOM_DATA_KEY, or the development key file)."""
    if keyring is None:
        keyring = data_keyring(settings or get_settings())
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_for_many_processes(engine)
    else:
        if "poolclass" not in kwargs:
            kwargs.update(pool_size=10, max_overflow=10)
        engine = create_engine(url, pool_pre_ping=True, **kwargs)
    attach(engine.dialect, keyring)
    return engine


def data_keyring(settings: Settings) -> Keyring:
    """Raises encryption.DataKeyError in production without DOLBOM_DATA_KEY."""
    return keyring_for(
        data_key=settings.data_key.get_secret_value() if settings.data_key else None,
        previous=settings.data_key_previous.get_secret_value()
        if settings.data_key_previous else None,
        production=settings.production, data_dir=settings.data_dir)


def _sqlite_for_many_processes(engine: Engine) -> None:
    """WAL so readers never block the writer; BEGIN IMMEDIATE so two writers queue.

    With pysqlite's default deferred BEGIN, a transaction that reads and then writes
    fails at once with "database is locked" when another process wrote in between;
    taking the write lock at BEGIN makes it wait (busy_timeout) instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Pure readers (the relay's poll, API reads) opt out and don't queue behind writers.
        readonly = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
