"""The delivery rules through the real twilio client against the local Twilio stub.

Each test counts what reached the stub: a message Twilio took is never sent twice, a
refused one is retried only when that can help.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from infra.twilio_stub import DEFAULT_FROM_NUMBER, TwilioStub
from notifiers.twilio_gateway import TwilioGateway
from tests.helpers import Clock, add_carers, add_family, hospital_request, make_bus


@pytest.fixture
def stub() -> Iterator[TwilioStub]:
    with TwilioStub() as running:
        yield running


def _gateway(stub: TwilioStub, timeout: float = 5.0) -> TwilioGateway:
    return TwilioGateway(stub.account_sid, stub.auth_token, from_number=DEFAULT_FROM_NUMBER,
                         api_base_url=stub.base_url, timeout=timeout,
                         status_callback_url="https://dolbom.example.org/webhooks/twilio/status")


def _parent_note(url: str) -> str:
    with make_engine(url).connect() as conn:
        return str(conn.scalar(select(orm.notifications.c.id).where(
            orm.notifications.c.kind == "request_received")))


def _status(url: str, note_id: str) -> str:
    with make_engine(url).connect() as conn:
        return str(conn.scalar(select(orm.notifications.c.status).where(
            orm.notifications.c.id == note_id)))


def _setup(url: str, stub: TwilioStub, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    clock = Clock()
    bus = make_bus(url, sms=_gateway(stub, timeout), clock=clock)
    family = add_family(bus)
    bus.handle(hospital_request(family))
    return bus, clock, family, _parent_note(url)


def test_a_500_that_twilio_did_take_is_found_and_not_resent(sqlite_url: str,
                                                           stub: TwilioStub) -> None:
    bus, clock, family, note = _setup(sqlite_url, stub)
    stub.fail_next(1, http_status=500, code=20500, accepted=True)
    assert bus.handle(c.DeliverNotification(notification_id=note)) == "unknown"
    clock.advance(seconds=30)
    assert bus.handle(c.SweepNotifications()) == {"retried": 0, "looked_up": 1}
    assert _status(sqlite_url, note) == "sent"
    assert len([m for m in stub.messages if m["to"] == family.guardian_phone]) == 1


def test_a_500_that_twilio_did_not_take_is_sent_again_once(sqlite_url: str,
                                                          stub: TwilioStub) -> None:
    bus, clock, family, note = _setup(sqlite_url, stub)
    stub.fail_next(1, http_status=500, code=20500)
    assert bus.handle(c.DeliverNotification(notification_id=note)) == "unknown"
    clock.advance(seconds=30)
    assert bus.handle(c.SweepNotifications()) == {"retried": 1, "looked_up": 1}
    assert len([m for m in stub.messages if m["to"] == family.guardian_phone]) == 1
    assert _status(sqlite_url, note) == "sent"


def test_429_waits_and_retries(sqlite_url: str, stub: TwilioStub) -> None:
    bus, clock, family, note = _setup(sqlite_url, stub)
    stub.fail_next(2, http_status=429, code=20429)
    assert bus.handle(c.DeliverNotification(notification_id=note)) == "retry"
    clock.advance(seconds=6)
    bus.handle(c.SweepNotifications())
    assert _status(sqlite_url, note) == "pending"  # the second 429
    clock.advance(seconds=21)
    bus.handle(c.SweepNotifications())
    assert _status(sqlite_url, note) == "sent"
    assert len([m for m in stub.messages if m["to"] == family.guardian_phone]) == 1


def test_timeout_after_twilio_took_it_is_not_resent(sqlite_url: str, stub: TwilioStub) -> None:
    bus, clock, family, note = _setup(sqlite_url, stub, timeout=0.5)
    stub.fail_next_timeout(1, seconds=3)
    assert bus.handle(c.DeliverNotification(notification_id=note)) == "unknown"
    clock.advance(seconds=30)
    assert bus.handle(c.SweepNotifications())["looked_up"] == 1
    assert _status(sqlite_url, note) == "sent"
    assert len([m for m in stub.messages if m["to"] == family.guardian_phone]) == 1


def test_invalid_number_is_not_retried(sqlite_url: str, stub: TwilioStub) -> None:
    bus, clock, _, note = _setup(sqlite_url, stub)
    stub.fail_next(1, http_status=400, code=21211)
    assert bus.handle(c.DeliverNotification(notification_id=note)) == "failed"
    clock.advance(seconds=600)
    assert bus.handle(c.SweepNotifications()) == {"retried": 0, "looked_up": 0}
    assert len(stub.attempts) == 1


def test_carrier_opt_out_skips_the_carer_in_matching(sqlite_url: str, stub: TwilioStub) -> None:
    clock = Clock()
    bus = make_bus(sqlite_url, sms=_gateway(stub), clock=clock)
    carers = add_carers(bus, 2)
    first, _ = bus.handle(hospital_request(add_family(bus)))
    bus.handle(c.StartMatching(request_id=first.id, event_id="m1"))
    with make_engine(sqlite_url).connect() as conn:
        offer_to_first = conn.scalar(select(orm.notifications.c.id).where(
            orm.notifications.c.kind == "offer",
            orm.notifications.c.recipient == carers[0].phone))
    stub.fail_next(1, http_status=400, code=21610)
    assert bus.handle(c.DeliverNotification(notification_id=str(offer_to_first))) == "failed"
    second, _ = bus.handle(hospital_request(add_family(bus, phone="+821099990009")))
    assert bus.handle(c.StartMatching(request_id=second.id, event_id="m2")) == 1
    with make_engine(sqlite_url).connect() as conn:
        offered = set(conn.scalars(select(orm.offers.c.carer_id).where(
            orm.offers.c.request_id == second.id)))
    assert offered == {carers[1].id}
