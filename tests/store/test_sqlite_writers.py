"""SQLite has one write lock for every process. Writers queue for it on a file lock (the
kernel wakes the next at once) instead of SQLite's sleep-and-retry; readers never take it."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, event, insert, select, text

from dispatch import orm
from dispatch.db import make_engine
from dispatch.unit_of_work import UnitOfWork, session_factory
from infra.db import upgrade
from tests.helpers import NOW


def _impatient(url: str) -> Engine:
    """An engine whose connections give up at once on a taken write lock: it only gets
    through a busy database if it waits its turn before BEGIN."""
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    return engine


def _hold_write_lock(url: str, holding: threading.Event, release: threading.Event) -> None:
    with make_engine(url).begin() as conn:
        conn.execute(insert(orm.outbox).values(
            event_id="held", topic="t", key="k", type="x", body=b"{}", created_at=NOW))
        holding.set()
        release.wait(10)


def test_a_writer_waits_its_turn_instead_of_failing(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    holding, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(sqlite_url, holding, release))
    holder.start()
    assert holding.wait(10)
    done: list[str] = []

    def write() -> None:
        with _impatient(sqlite_url).begin() as conn:
            conn.execute(insert(orm.outbox).values(
                event_id="second", topic="t", key="k", type="x", body=b"{}", created_at=NOW))
        done.append("written")

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and not done  # waiting for its turn, not failed
    release.set()
    holder.join(10)
    writer.join(10)
    assert done == ["written"]
    with make_engine(sqlite_url).connect() as conn:
        assert set(conn.scalars(select(orm.outbox.c.event_id))) == {"held", "second"}


def test_readers_never_wait_for_a_writer(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    holding, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(sqlite_url, holding, release))
    holder.start()
    try:
        assert holding.wait(10)
        read: list[int] = []
        readers = session_factory(_impatient(sqlite_url), read_only=True)

        def look() -> None:
            with UnitOfWork(readers) as uow:
                read.append(uow.session.scalar(text("SELECT count(*) FROM outbox")) or 0)

        reader = threading.Thread(target=look)
        reader.start()
        reader.join(5)
        # Answered while the writer still holds the lock, from the last committed state.
        assert not reader.is_alive() and read == [0]
    finally:
        release.set()
        holder.join(10)
