"""SMS of one batch go out side by side, but one person's in the order they were queued."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import insert

from dispatch import commands as c
from dispatch import orm
from dispatch.bootstrap import bootstrap
from dispatch.db import make_engine
from dispatch.domain.policy import load_policies
from notifiers.gateway import SentSms
from tests.helpers import NOW, Clock


class SlowOnOne:
    """Takes a while over the body "1"; keeps the order in which sends finished."""

    name = "slow"

    def __init__(self) -> None:
        self.finished: list[tuple[str, str]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        if body == "1":
            time.sleep(0.3)
        with self._lock:
            self.finished.append((to, body))
            self.threads.add(threading.current_thread().name)
            return SentSms(sid=f"SM{len(self.finished):032d}", status="queued")


def test_one_persons_sms_keep_their_order_in_a_parallel_batch(db_url: str) -> None:
    gateway = SlowOnOne()
    bus = bootstrap(make_engine(db_url), load_policies(), sms=gateway, clock=Clock(),
                    sms_threads=4)
    parent, other = "+821011112222", "+821033334444"
    rows = [(parent, "1", 0), (parent, "2", 1), (other, "x", 2), (parent, "3", 3)]
    with make_engine(db_url).begin() as conn:
        for i, (to, body, second) in enumerate(rows):
            conn.execute(insert(orm.notifications).values(
                id=f"n{i}", event_id=f"e{i}", recipient=to, kind="request_received",
                params={}, lang="ko", status="pending", attempts=0, body=body,
                created_at=NOW - timedelta(minutes=1) + timedelta(seconds=second)))
    # Asked in an order that is not the queueing order: the order comes from created_at.
    outcomes = bus.handle(c.DeliverNotifications(notification_ids=("n3", "n1", "n2", "n0")))
    assert set(outcomes.values()) == {"sent"}
    assert [body for to, body in gateway.finished if to == parent] == ["1", "2", "3"]
    # The other person did not wait behind the slow one.
    assert gateway.finished[0] == (other, "x")
    assert len(gateway.threads) == 2


class InOrder:
    name = "in-order"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        self.sent.append(body)
        return SentSms(sid=f"SM{len(self.sent):032d}", status="queued")


def test_news_that_changes_plans_goes_first_then_what_people_wait_for(db_url: str) -> None:
    """One at a time (as behind the provider's 1 SMS/s): a cancelled job, then the
    parent's "assigned", then new offers, whatever order they were queued in."""
    gateway = InOrder()
    bus = bootstrap(make_engine(db_url), load_policies(), sms=gateway, clock=Clock())
    rows = [("+821055550001", "offer", "new offer"),
            ("+821011112222", "assigned", "assigned"),
            ("+821055550002", "job_cancelled", "cancelled")]
    with make_engine(db_url).begin() as conn:
        for i, (to, kind, body) in enumerate(rows):
            conn.execute(insert(orm.notifications).values(
                id=f"p{i}", event_id=f"pe{i}", recipient=to, kind=kind, params={},
                lang="ko", status="pending", attempts=0, body=body,
                created_at=NOW - timedelta(minutes=1) + timedelta(seconds=i)))
    bus.handle(c.DeliverNotifications(notification_ids=("p0", "p1", "p2")))
    assert gateway.sent == ["cancelled", "assigned", "new offer"]
