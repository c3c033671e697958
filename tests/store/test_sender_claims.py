"""A `sending` SMS is its sender's until that sender dies or lets go of it.

The sweep used to look up any row `sending` for over 60 s. A live worker holding a batch
behind the 1 SMS/s rate limit could then still send a row the sweep had just found missing
at the provider and sent: twice. And a SIGKILLed worker's offers waited a minute.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, update

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from dispatch.senders import DEAD_AFTER_S, LocalClaims
from tests.helpers import Clock, add_family, hospital_request, make_bus
from tests.store.test_delivery import ScriptedGateway, _row


def _claimed(db_url: str, clock: Clock, sender: str, *, beat: datetime | None):
    """A parent's SMS claimed by `sender` (and, if `beat`, a sender row that beat then)."""
    gateway = ScriptedGateway()
    bus = make_bus(db_url, sms=gateway, clock=clock)
    family = add_family(bus)
    bus.handle(hospital_request(family))
    note_id = str(_row(db_url, kind="request_received")["id"])
    with make_engine(db_url).begin() as conn:
        conn.execute(update(orm.notifications).where(orm.notifications.c.id == note_id)
                     .values(status="sending", status_at=clock.now, body="본문", attempts=1,
                             claimed_by=sender))
        if beat is not None:
            conn.execute(insert(orm.senders).values(
                id=sender, host="elsewhere", pid=1, process_start=None, started_at=beat,
                beat_at=beat))
    return bus, gateway, family, note_id


def _beat(db_url: str, sender: str, at: datetime) -> None:
    with make_engine(db_url).begin() as conn:
        conn.execute(update(orm.senders).where(orm.senders.c.id == sender).values(beat_at=at))


def test_a_live_senders_claim_is_left_alone_however_long_it_waits(db_url: str) -> None:
    clock = Clock()
    bus, gateway, _, note_id = _claimed(db_url, clock, "worker-a", beat=clock.now)
    for _ in range(10):  # ten minutes behind the rate limit, the sender beating all along
        clock.advance(seconds=60)
        _beat(db_url, "worker-a", clock.now)
        assert bus.handle(c.SweepNotifications()) == {"retried": 0, "looked_up": 0}
    assert _row(db_url, id=note_id)["status"] == "sending"
    assert gateway.sent == []


def test_a_dead_senders_claim_is_looked_up_and_sent_once(db_url: str) -> None:
    clock = Clock()
    bus, gateway, family, note_id = _claimed(db_url, clock, "worker-a", beat=clock.now)
    clock.advance(seconds=DEAD_AFTER_S - 1)
    assert bus.handle(c.SweepNotifications())["looked_up"] == 0
    clock.advance(seconds=2)  # no heartbeat for DEAD_AFTER_S: it died before the call
    assert bus.handle(c.SweepNotifications()) == {"retried": 1, "looked_up": 1}
    assert gateway.sent == [(family.guardian_phone, "본문")]
    assert _row(db_url, id=note_id)["status"] == "sent"
    assert bus.handle(c.SweepNotifications()) == {"retried": 0, "looked_up": 0}


def test_a_forgotten_senders_claim_is_looked_up_at_once(db_url: str) -> None:
    """A worker on the same host saw the process gone and deleted its sender row: no wait,
    and what the provider already has is not sent again."""
    clock = Clock()
    bus, gateway, family, note_id = _claimed(db_url, clock, "worker-a", beat=None)
    gateway.provider_has.append(("SM" + "5" * 32, family.guardian_phone, "본문"))
    assert bus.handle(c.SweepNotifications()) == {"retried": 0, "looked_up": 1}
    assert _row(db_url, id=note_id)["sid"] == "SM" + "5" * 32
    assert gateway.sent == []


def test_a_claim_this_process_let_go_of_unsettled_is_looked_up(db_url: str) -> None:
    """Its settle failed after the call: nothing of ours is sending it any more. While it
    is held (between claim and settle) the sweep leaves it alone."""
    clock = Clock()
    bus, gateway, family, note_id = _claimed(db_url, clock, "me", beat=clock.now)
    claims = LocalClaims("me")
    bus.dependencies["claims"] = claims
    claims.hold([note_id])
    assert bus.handle(c.SweepNotifications())["looked_up"] == 0
    claims.let_go([note_id])
    gateway.provider_has.append(("SM" + "6" * 32, family.guardian_phone, "본문"))
    assert bus.handle(c.SweepNotifications()) == {"retried": 0, "looked_up": 1}
    assert _row(db_url, id=note_id)["status"] == "sent" and gateway.sent == []


def test_a_claim_records_its_sender_and_is_let_go_once_settled(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway()
    bus = make_bus(db_url, sms=gateway, clock=clock)
    claims = LocalClaims("me")
    bus.dependencies["claims"] = claims
    bus.handle(hospital_request(add_family(bus)))
    note_id = str(_row(db_url, kind="request_received")["id"])
    assert bus.handle(c.DeliverNotification(notification_id=note_id)) == "sent"
    row = _row(db_url, id=note_id)
    assert row["claimed_by"] == "me" and row["status"] == "sent"
    assert claims.held() == frozenset()


def test_without_a_heartbeat_a_claim_waits_the_fixed_time(db_url: str) -> None:
    clock = Clock()
    bus, gateway, _, note_id = _claimed(db_url, clock, "unused", beat=None)
    with make_engine(db_url).begin() as conn:
        conn.execute(update(orm.notifications).where(orm.notifications.c.id == note_id)
                     .values(claimed_by=None))
    clock.advance(seconds=59)
    assert bus.handle(c.SweepNotifications())["looked_up"] == 0
    clock.advance(seconds=2)
    assert bus.handle(c.SweepNotifications())["looked_up"] == 1
