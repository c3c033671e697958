"""An escalated request that ran out of carers is offered again when a carer comes on duty."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from tests.helpers import Clock, add_carers, add_family, hospital_request, make_bus
from tests.store.test_store import _sms


def _escalated(db_url: str, clock: Clock) -> tuple[Any, Any]:
    bus = make_bus(db_url, clock=clock)
    request, _ = bus.handle(hospital_request(add_family(bus)))
    bus.handle(c.StartMatching(request_id=request.id, event_id="m"))  # nobody on duty
    assert _status(db_url, request.id) == "escalated"
    return bus, request


def _status(db_url: str, request_id: str) -> str:
    with make_engine(db_url).connect() as conn:
        return str(conn.scalar(select(orm.requests.c.status)
                               .where(orm.requests.c.id == request_id)))


def _offered(db_url: str, request_id: str) -> list[str]:
    with make_engine(db_url).connect() as conn:
        return list(conn.scalars(select(orm.offers.c.carer_id)
                                 .where(orm.offers.c.request_id == request_id)))


def _timeline(db_url: str, request_id: str) -> list[str]:
    t = orm.timeline.c
    with make_engine(db_url).connect() as conn:
        return list(conn.scalars(select(t.type).where(t.request_id == request_id)
                                 .order_by(t.seq)))


def test_a_carer_coming_on_duty_gets_the_escalated_request(db_url: str) -> None:
    clock = Clock()
    bus, request = _escalated(db_url, clock)
    (carer,) = add_carers(bus, 1, on_duty=False)
    assert _offered(db_url, request.id) == []
    bus.handle(c.SetDuty(carer_id=carer.id, on_duty=True))
    assert _offered(db_url, request.id) == [carer.id]
    assert _timeline(db_url, request.id)[-1] == "reoffered_on_duty"
    assert _status(db_url, request.id) == "escalated"  # still on the dispatcher's board
    assert _sms(bus, db_url, carer.phone, f"YES {request.code}", "SM1") == "assigned"
    assert _status(db_url, request.id) == "assigned"


def test_on_by_sms_replies_first_then_offers(db_url: str) -> None:
    clock = Clock()
    bus, request = _escalated(db_url, clock)
    (carer,) = add_carers(bus, 1, on_duty=False)
    assert _sms(bus, db_url, carer.phone, "출근", "SM1") == "on_duty"
    assert _offered(db_url, request.id) == [carer.id]
    n = orm.notifications.c
    with make_engine(db_url).connect() as conn:
        kinds = list(conn.scalars(select(n.kind).where(n.recipient == carer.phone)))
    assert sorted(kinds) == ["duty_on", "offer"]
    # Off and on again: nobody is asked twice.
    assert _sms(bus, db_url, carer.phone, "퇴근", "SM2") == "off_duty"
    assert _sms(bus, db_url, carer.phone, "출근", "SM3") == "on_duty"
    assert _offered(db_url, request.id) == [carer.id]


def test_what_is_not_brought_back(db_url: str) -> None:
    clock = Clock()
    bus, request = _escalated(db_url, clock)
    # A carer without the skill: nothing to offer, nothing on the timeline.
    (cook,) = add_carers(bus, 1, on_duty=False, skills=("home-emergency",),
                         first_phone=20_000_000)
    bus.handle(c.SetDuty(carer_id=cook.id, on_duty=True))
    assert _offered(db_url, request.id) == []
    assert "reoffered_on_duty" not in _timeline(db_url, request.id)
    # Once the request's time is over, a carer coming on duty is not offered it.
    (late,) = add_carers(bus, 1, on_duty=False, first_phone=30_000_000)
    clock.advance(hours=6)
    bus.handle(c.SetDuty(carer_id=late.id, on_duty=True))
    assert _offered(db_url, request.id) == []


def test_a_request_with_an_open_offer_is_left_to_it(db_url: str) -> None:
    clock = Clock()
    bus, request = _escalated(db_url, clock)
    first, second = add_carers(bus, 2, on_duty=False)
    bus.handle(c.SetDuty(carer_id=first.id, on_duty=True))
    clock.advance(seconds=30)  # the first offer is still open
    bus.handle(c.SetDuty(carer_id=second.id, on_duty=True))
    assert _offered(db_url, request.id) == [first.id]
    clock.advance(minutes=10)  # the first offer's answer window is over
    bus.handle(c.SetDuty(carer_id=second.id, on_duty=False))
    bus.handle(c.SetDuty(carer_id=second.id, on_duty=True))
    assert sorted(_offered(db_url, request.id)) == sorted([first.id, second.id])
