"""The worker's heartbeat as a sender (streams/lease.py), on both backends."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from dispatch import orm
from dispatch.db import make_engine
from dispatch.senders import LEASE_S
from notifiers.fence import FencedGateway
from notifiers.gateway import SmsSendError
from streams.lease import SenderLease, process_start
from tests.helpers import RecordingSms


def _senders(url: str) -> dict[str, int]:
    with make_engine(url).connect() as conn:
        return {row.id: row.pid for row in conn.execute(select(orm.senders))}


def _add_sender(url: str, sender_id: str, *, host: str, pid: int, start: int | None) -> None:
    now = datetime.now(UTC)
    with make_engine(url).begin() as conn:
        conn.execute(insert(orm.senders).values(id=sender_id, host=host, pid=pid,
                                                process_start=start, started_at=now,
                                                beat_at=now))


class Monotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_sender_may_send_only_within_its_lease(db_url: str) -> None:
    tick = Monotonic()
    lease = SenderLease(make_engine(db_url), monotonic=tick)
    assert not lease.may_send()  # no heartbeat yet
    lease.beat()
    assert lease.may_send() and lease.id in _senders(db_url)
    tick.t += LEASE_S - 0.1
    assert lease.may_send()
    tick.t += 0.2  # the database has not taken a heartbeat for LEASE_S
    assert not lease.may_send()
    lease.beat()
    assert lease.may_send()
    lease.close(idle=False)
    assert not lease.may_send() and lease.id in _senders(db_url)  # it ages out


def test_an_idle_sender_signs_off(db_url: str) -> None:
    lease = SenderLease(make_engine(db_url)).start()
    lease.close(idle=True)
    assert lease.id not in _senders(db_url)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_senders_on_this_host_whose_process_is_gone_are_forgotten(db_url: str) -> None:
    lease = SenderLease(make_engine(db_url))
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_start = process_start(dead.pid)
        assert dead_start is not None
        dead.kill()
        dead.wait()
        _add_sender(db_url, "killed", host=lease.host, pid=dead.pid, start=dead_start)
        _add_sender(db_url, "running", host=lease.host, pid=alive.pid,
                    start=process_start(alive.pid))
        # A pid reused by a later process (here: this one) is not the sender's process.
        _add_sender(db_url, "reused", host=lease.host, pid=lease.pid,
                    start=(lease.process_start or 0) + 1)
        # On another host a pid says nothing: that one waits for its heartbeat to age.
        _add_sender(db_url, "remote", host="another-host", pid=dead.pid, start=dead_start)
        lease.beat()
        assert set(_senders(db_url)) == {lease.id, "running", "remote"}
    finally:
        alive.kill()
        alive.wait()


def test_the_fence_refuses_a_send_once_the_lease_has_lapsed() -> None:
    inner = RecordingSms()
    allowed = [True]
    gateway = FencedGateway(inner, lambda: allowed[0])
    gateway.send("+821012345678", "첫째")
    allowed[0] = False
    with pytest.raises(SmsSendError) as refused:
        gateway.send("+821012345678", "둘째")
    assert refused.value.retryable and not refused.value.outcome_unknown
    assert [body for _, body in inner.sent] == ["첫째"]
