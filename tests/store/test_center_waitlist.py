"""A child waitlisted at a full centre gets a place once there is room: a carer's shift is
added there, or a child holding a place there is cancelled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dispatch import commands as c
from dispatch.messagebus import MessageBus
from tests.helpers import Clock, add_carers, make_bus
from tests.store.test_centers import EVENING, _book, _carer_of, _kinds, _request, _shift
from tests.store.test_store import _sms


def _full_centre(db_url: str) -> tuple[MessageBus, list[Any], Any]:
    """One carer's group of five, and a sixth child waitlisted (escalated)."""
    bus = make_bus(db_url, clock=Clock())
    _shift(bus, add_carers(bus, 1, skills=())[0])
    five = [_book(bus) for _ in range(5)]
    sixth = _book(bus)
    assert _request(bus, sixth.id)["status"] == "escalated"
    return bus, five, sixth


def _types(bus: MessageBus, request_id: str) -> list[str]:
    return [e["type"] for e in _request(bus, request_id)["timeline"]]


def test_a_new_shift_gives_the_waiting_child_a_place(db_url: str) -> None:
    bus, _, sixth = _full_centre(db_url)
    second = add_carers(bus, 1, skills=(), first_phone=20_000_000)[0]
    _shift(bus, second)
    assert _request(bus, sixth.id)["status"] == "assigned"
    assert _carer_of(bus, sixth.id) == second.id
    assert "center_booked" in _kinds(db_url, sixth.id)
    assert _kinds(db_url, sixth.id).count("escalated") == 1  # told once that it waits
    assert _types(bus, sixth.id).count("waitlisted") == 1


def test_a_cancelled_place_goes_to_the_waiting_child(db_url: str) -> None:
    bus, five, sixth = _full_centre(db_url)
    bus.handle(c.CancelRequest(request_id=five[0].id, reason="아이가 나았어요"))
    assert _request(bus, sixth.id)["status"] == "assigned"
    assert "center_booked" in _kinds(db_url, sixth.id)


def test_a_place_cancelled_by_the_parents_sms_goes_to_the_waiting_child(db_url: str) -> None:
    bus, five, sixth = _full_centre(db_url)
    with bus.uow_factory() as uow:
        family = uow.families.get(uow.requests.get(five[1].id).family_id)  # type: ignore[union-attr]
        phone = family.guardian_phone  # type: ignore[union-attr]
    assert _sms(bus, db_url, phone, f"취소 {five[1].code}", "SMc1") == "cancelled"
    assert _request(bus, sixth.id)["status"] == "assigned"


def test_room_elsewhere_or_at_other_times_books_nobody(db_url: str) -> None:
    bus, _, sixth = _full_centre(db_url)
    other = add_carers(bus, 1, skills=(), first_phone=30_000_000)[0]
    _shift(bus, other, center="gwangju-seogu")  # another centre
    late = add_carers(bus, 1, skills=(), first_phone=40_000_000)[0]
    _shift(bus, late, start=EVENING + timedelta(hours=2))  # does not cover 18:00-22:00
    assert _request(bus, sixth.id)["status"] == "escalated"
    assert "center_booked" not in _kinds(db_url, sixth.id)
    assert _types(bus, sixth.id).count("waitlisted") == 1


def test_the_sooner_stay_gets_the_one_place(db_url: str) -> None:
    bus = make_bus(db_url, clock=Clock())
    _shift(bus, add_carers(bus, 1, skills=())[0])
    five = [_book(bus) for _ in range(5)]
    later = _book(bus, start=EVENING + timedelta(minutes=30), hours=3)  # asked first
    sooner = _book(bus)
    assert {_request(bus, r.id)["status"] for r in (later, sooner)} == {"escalated"}
    bus.handle(c.CancelRequest(request_id=five[0].id, reason="취소"))
    assert _request(bus, sooner.id)["status"] == "assigned"
    assert _request(bus, later.id)["status"] == "escalated"  # one place, not two
