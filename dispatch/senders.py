"""The senders' table: who is alive to finish the SMS they claimed.

A worker claims SMS (`sending`, `claimed_by`) and then calls the provider; the call may
wait behind the rate limit for minutes. Another worker must not look such a row up at the
provider while its claimer may still send it (not found → sent again → twice). So each
sender beats here, and its rows become uncertain only when it stops: its heartbeat is older
than `DEAD_AFTER_S`, or a process on the same host sees that its process has gone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Select, delete, insert, select, update

from dispatch import orm

# A sender whose heartbeat is older than this is dead to the others. It stops starting
# sends `LEASE_S` after its last heartbeat (streams/lease.py), and a send already started
# ends within the gateway's timeouts (connect + read, 10 s each): 10 + 20, and a margin for
# the clocks of two hosts.
LEASE_S = 10.0
DEAD_AFTER_S = 40.0
# Rows of senders long dead are of no use to anyone.
FORGET_AFTER = timedelta(days=1)


class LocalClaims:
    """The claims of a process that keeps no heartbeat (tests, the simulator): rows it
    claims carry no sender, and the sweep treats them as uncertain after a fixed time."""

    def __init__(self, sender_id: str | None = None) -> None:
        self._id = sender_id
        self._held: set[str] = set()
        self._lock = threading.Lock()

    @property
    def id(self) -> str | None:
        return self._id

    def hold(self, notification_ids: Iterable[str]) -> None:
        with self._lock:
            self._held.update(notification_ids)

    def let_go(self, notification_ids: Iterable[str]) -> None:
        with self._lock:
            self._held.difference_update(notification_ids)

    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)


def live_senders(now: datetime) -> Select[tuple[str]]:
    """A subquery: the ids of senders that beat within `DEAD_AFTER_S` of `now`."""
    s = orm.senders.c
    return select(s.id).where(s.beat_at > now - timedelta(seconds=DEAD_AFTER_S))


def beat(conn: Connection, sender_id: str, *, host: str, pid: int,
         process_start: int | None, now: datetime) -> None:
    s = orm.senders.c
    if conn.execute(update(orm.senders).where(s.id == sender_id)
                    .values(beat_at=now)).rowcount == 0:
        conn.execute(insert(orm.senders).values(
            id=sender_id, host=host, pid=pid, process_start=process_start, started_at=now,
            beat_at=now))


def same_host(conn: Connection, host: str, sender_id: str) -> list[tuple[str, int, int | None]]:
    """The other senders on this host: (id, pid, process start)."""
    s = orm.senders.c
    return [(row.id, row.pid, row.process_start) for row in conn.execute(
        select(s.id, s.pid, s.process_start).where(s.host == host, s.id != sender_id))]


def forget(conn: Connection, sender_ids: Iterable[str]) -> int:
    """Senders known to be gone: their `sending` rows are uncertain from now on."""
    ids = list(sender_ids)
    if not ids:
        return 0
    return conn.execute(delete(orm.senders).where(orm.senders.c.id.in_(ids))).rowcount


def forget_long_dead(conn: Connection, now: datetime) -> int:
    return conn.execute(delete(orm.senders).where(
        orm.senders.c.beat_at < now - FORGET_AFTER)).rowcount
