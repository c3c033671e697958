"""Engines for SQLite (the default) and PostgreSQL, set up for several processes at once."""

from __future__ import annotations

import fcntl
import os
import threading
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

    lock_path = f"{engine.url.database}.writers" if engine.url.database not in (
        None, "", ":memory:") else None

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Pure readers (the relay's poll, API reads) opt out and don't queue behind writers.
        readonly = conn.get_execution_options().get(READ_ONLY, False)
        if not readonly and lock_path is not None:
            _WriterTurn.of(conn.connection, lock_path).take()
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    def _returned(dbapi_conn: Any, record: Any, *_: Any) -> None:
        turn = record.info.get(_WriterTurn.KEY) if record is not None else None
        if turn is not None:
            turn.give_back()

    # The turn ends when the connection goes back to the pool, which is after its COMMIT or
    # ROLLBACK has run (the engine's commit event comes before it, too early: the next
    # writer would find SQLite's lock still taken). Sessions and engine.begin() give their
    # connection back at the end of every transaction.
    event.listen(engine.pool, "reset", _returned)
    event.listen(engine.pool, "checkin", _returned)
    event.listen(engine.pool, "invalidate", _returned)


class _WriterTurn:
    """One connection's place in the queue for SQLite's single write lock.

    SQLite makes a writer that finds the lock taken sleep and retry (1, 2, 5 … 100 ms), so
    under load writers from the API, the relay and the worker poll for it and the unlucky
    ones wait seconds. Taking an exclusive `flock` on a file beside the database first lets
    the kernel queue them and wake the next at once; BEGIN IMMEDIATE then finds the lock
    free. The flock is released when the connection is given back after its transaction,
    and by the kernel if the process dies, so a killed writer never leaves others waiting.
    """

    KEY = "dolbom_writer_turn"

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.held = False

    @classmethod
    def of(cls, connection: Any, path: str) -> _WriterTurn:
        turn = connection.info.get(cls.KEY)
        if turn is None:
            turn = connection.info[cls.KEY] = cls(path)
        return turn  # type: ignore[no-any-return]

    def take(self) -> None:
        # A thread already writing on another connection (a nested unit of work) would wait
        # for itself forever here; it goes straight to SQLite, whose busy timeout ends that.
        if self.held or getattr(_turns, "held", False):
            return
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.held = True
        _turns.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            _turns.held = False
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def __del__(self) -> None:
        # The pool forgot the connection (closed, invalidated): the lock goes with the file.
        os.close(self.fd)


_turns = threading.local()
