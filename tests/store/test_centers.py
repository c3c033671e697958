"""Centre mode on SQLite and PostgreSQL: places in carers' groups under the staff ratio,
waitlisting, provisional infant bookings, shifts, and two bookings racing for one place."""

from __future__ import annotations

import contextlib
import threading
import time as clock_time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from dispatch import commands as c
from dispatch import orm, views
from dispatch.db import make_engine
from dispatch.domain.errors import Conflict, Ineligible, NotFound
from dispatch.handlers import centers as center_handlers
from dispatch.messagebus import MessageBus
from tests.helpers import NOW, Clock, add_carers, add_family, make_bus

KST = ZoneInfo("Asia/Seoul")
# NOW is Thursday 26 Nov 2026, 10:00 in Seoul; the centres open at 18:00.
EVENING = datetime(2026, 11, 26, 18, 0, tzinfo=KST)
TODDLER = date(2023, 3, 15)
INFANT = date(2026, 3, 20)  # 8 months old on the evening: sensitive, and provisional
MAIN = "gwangju-main"


def _count(url: str, table: Any, *where: Any) -> int:
    with make_engine(url).connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _shift(bus: MessageBus, carer: Any, *, center: str = MAIN, start: datetime = EVENING,
           hours: float = 6) -> Any:
    return bus.handle(c.AddShift(carer_id=carer.id, center_id=center, start=start,
                                 end=start + timedelta(hours=hours)))


_phones = iter(range(10_000, 99_999))


def _book(bus: MessageBus, *, birth: date = TODDLER, start: datetime = EVENING,
          hours: float = 4, center: str = MAIN, match: bool = True) -> Any:
    family = add_family(bus, phone=f"+82109990{next(_phones):05d}", birth_date=birth,
                        health=False)
    request, _ = bus.handle(c.SubmitRequest(
        service="emergency-center", family_id=family.id, child_id=family.children[0].id,
        start=start, end=start + timedelta(hours=hours), location={"center_id": center}))
    if match:
        bus.handle(c.StartMatching(request_id=request.id, event_id="m-" + request.id))
    return request


def _request(bus: MessageBus, request_id: str) -> dict[str, Any]:
    with bus.uow_factory() as uow:
        found = uow.requests.get(request_id)
        assert found is not None
        return views.request_detail(uow, found)


def _kinds(url: str, request_id: str) -> list[str]:
    n = orm.notifications.c
    with make_engine(url).connect() as conn:
        return sorted(conn.scalars(select(n.kind).where(n.request_id == request_id)))


def _carer_of(bus: MessageBus, request_id: str) -> str | None:
    carer = _request(bus, request_id)["carer"]
    return carer["id"] if carer else None


def test_a_group_fills_to_five_and_the_sixth_child_joins_the_next_carer(db_url: str) -> None:
    bus = make_bus(db_url)
    first, second = add_carers(bus, 2, skills=())
    for carer in (first, second):
        _shift(bus, carer)
    five = [_book(bus) for _ in range(5)]
    groups = {_carer_of(bus, r.id) for r in five}
    assert len(groups) == 1, "the fullest group takes the next child"
    for r in five:
        detail = _request(bus, r.id)
        assert detail["status"] == "assigned" and detail["center_id"] == MAIN
        assert detail["provisional"] is False
        assert _kinds(db_url, r.id) == ["center_booked", "center_child_arriving",
                                        "center_pickup_reminder", "request_received"]
    sixth = _book(bus)
    assert _request(bus, sixth.id)["status"] == "assigned"
    assert _carer_of(bus, sixth.id) not in groups
    assert _count(db_url, orm.center_bookings, orm.center_bookings.c.active.is_(True)) == 6
    # Group care never touches visit mode's assignments (its overlap guard forbids groups).
    assert _count(db_url, orm.assignments) == 0


def test_the_sixth_child_is_waitlisted_and_escalated_when_every_group_is_full(
        db_url: str) -> None:
    bus = make_bus(db_url, clock=Clock())
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer)
    for _ in range(5):
        _book(bus)
    sixth = _book(bus)
    detail = _request(bus, sixth.id)
    assert detail["status"] == "escalated" and detail["carer"] is None
    types = [e["type"] for e in detail["timeline"]]
    assert types.index("waitlisted") < types.index("escalated")
    escalated = next(e for e in detail["timeline"] if e["type"] == "escalated")
    assert escalated["detail"] == {"reason": "center_full"}
    assert "escalated" in _kinds(db_url, sixth.id)
    assert "center_booked" not in _kinds(db_url, sixth.id)
    assert _count(db_url, orm.center_bookings) == 5
    # Later in the evening, after the first five have gone home, there is room again.
    later = _book(bus, start=EVENING + timedelta(hours=4), hours=2)
    assert _request(bus, later.id)["status"] == "assigned"


def test_an_infant_joining_a_group_of_four_is_a_conflict(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer)
    for _ in range(4):
        _book(bus)
    infant = _book(bus, birth=INFANT)
    assert _request(bus, infant.id)["status"] == "escalated"
    assert _count(db_url, orm.center_bookings, orm.center_bookings.c.request_id == infant.id) == 0
    # A toddler still has the fifth place.
    assert _request(bus, _book(bus).id)["status"] == "assigned"


def test_an_infant_makes_a_group_of_three(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer)
    infant = _book(bus, birth=INFANT)
    statuses = [_request(bus, _book(bus).id)["status"] for _ in range(3)]
    assert statuses == ["assigned", "assigned", "escalated"]
    with make_engine(db_url).connect() as conn:
        sensitive = conn.scalar(select(orm.center_bookings.c.sensitive).where(
            orm.center_bookings.c.request_id == infant.id))
    assert sensitive is True


def test_an_infant_is_booked_provisionally_until_a_dispatcher_confirms(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer)
    infant = _book(bus, birth=INFANT)
    detail = _request(bus, infant.id)
    assert detail["status"] == "assigned" and detail["provisional"] is True
    assert "center_provisional" in _kinds(db_url, infant.id)

    confirmed = bus.handle(c.ConfirmBooking(request_id=infant.id, dispatcher="상황실 이주임"))
    assert confirmed.status == "assigned"
    detail = _request(bus, infant.id)
    assert detail["provisional"] is False
    entry = next(e for e in detail["timeline"] if e["type"] == "booking_confirmed")
    assert entry["actor"] == "dispatcher" and entry["detail"]["dispatcher"] == "상황실 이주임"
    assert "center_confirmed" in _kinds(db_url, infant.id)
    # Nothing left to confirm: a second confirmation, or one for a toddler's booking.
    with pytest.raises(Conflict) as err:
        bus.handle(c.ConfirmBooking(request_id=infant.id, dispatcher="x"))
    assert err.value.code == "nothing_to_confirm"
    toddler = _book(bus)
    with pytest.raises(Conflict):
        bus.handle(c.ConfirmBooking(request_id=toddler.id, dispatcher="x"))
    with pytest.raises(NotFound):
        bus.handle(c.ConfirmBooking(request_id="nope", dispatcher="x"))


def test_a_cancelled_infant_booking_is_no_longer_shown_provisional(db_url: str) -> None:
    bus = make_bus(db_url)
    _shift(bus, add_carers(bus, 1, skills=())[0])
    infant = _book(bus, birth=INFANT)
    assert _request(bus, infant.id)["provisional"] is True
    bus.handle(c.CancelRequest(request_id=infant.id, reason="취소"))
    assert _request(bus, infant.id)["provisional"] is False
    with pytest.raises(Conflict):
        bus.handle(c.ConfirmBooking(request_id=infant.id, dispatcher="x"))


def test_a_cancelled_booking_frees_its_place(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer)
    five = [_book(bus) for _ in range(5)]
    bus.handle(c.CancelRequest(request_id=five[0].id, reason="아이가 나았어요"))
    assert _request(bus, _book(bus).id)["status"] == "assigned"
    assert _request(bus, _book(bus).id)["status"] == "escalated"


def test_without_a_shift_covering_the_stay_the_request_is_escalated(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer, hours=3)  # 18:00-21:00 does not cover 18:00-22:00
    assert _request(bus, _book(bus).id)["status"] == "escalated"
    # ... nor does a shift at the other centre.
    other = add_carers(bus, 1, skills=(), first_phone=20_000_000)[0]
    _shift(bus, other, center="gwangju-seogu")
    assert _request(bus, _book(bus).id)["status"] == "escalated"
    assert _request(bus, _book(bus, hours=3).id)["status"] == "assigned"


def test_a_replayed_start_matching_books_nothing_twice(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer)
    request = _book(bus, match=False)
    assert bus.handle(c.StartMatching(request_id=request.id, event_id="e1")) == 1
    assert bus.handle(c.StartMatching(request_id=request.id, event_id="e1")) == 0
    assert bus.handle(c.StartMatching(request_id=request.id, event_id="e2")) == 0
    assert _count(db_url, orm.center_bookings) == 1
    assert _kinds(db_url, request.id).count("center_booked") == 1


def test_shifts_are_checked(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer)
    with pytest.raises(Conflict) as err:  # the same carer in two places at once
        _shift(bus, carer, center="gwangju-seogu", start=EVENING + timedelta(hours=5))
    assert err.value.code == "shift_overlap"
    _shift(bus, carer, center="gwangju-seogu", start=EVENING + timedelta(hours=6))  # back to back
    with pytest.raises(Ineligible) as bad:
        _shift(bus, carer, center="gwangju-bukgu", start=EVENING + timedelta(days=1))
    assert bad.value.code == "unknown_center"
    with pytest.raises(Ineligible) as bad:
        _shift(bus, carer, start=EVENING + timedelta(days=1), hours=0)
    assert bad.value.code == "invalid_time"
    with pytest.raises(NotFound):
        bus.handle(c.AddShift(carer_id="nobody", center_id=MAIN, start=EVENING,
                              end=EVENING + timedelta(hours=1)))
    assert _count(db_url, orm.shifts) == 2


def test_the_groups_view_counts_children_and_capacity_at_a_moment(db_url: str) -> None:
    bus = make_bus(db_url)
    busy, free = add_carers(bus, 2, skills=())
    for carer in (busy, free):
        _shift(bus, carer)
    _book(bus, birth=INFANT, hours=2)       # 18-20, sensitive
    _book(bus)                              # 18-22
    _book(bus, start=EVENING + timedelta(hours=1), hours=3)  # 19-22
    policy = bus.dependencies["policies"]["emergency-center"]
    center = policy.center.center(MAIN)
    with bus.uow_factory() as uow:
        at_19 = views.center_groups(uow, center, policy.center, EVENING + timedelta(hours=1))
        at_20 = views.center_groups(uow, center, policy.center, EVENING + timedelta(hours=2))
        at_1 = views.center_groups(uow, center, policy.center, EVENING + timedelta(hours=7))
    loads = {g["carer"]["id"]: (g["children"], g["sensitive"], g["capacity"], g["free"])
             for g in at_19["groups"]}
    booked = next(cid for cid, load in loads.items() if load[0])
    assert loads[booked] == (3, 1, 3, 0)
    assert sorted(loads.values())[0] == (0, 0, 5, 5)
    loads_20 = {g["carer"]["id"]: g for g in at_20["groups"]}
    assert (loads_20[booked]["children"], loads_20[booked]["capacity"]) == (2, 5)
    assert at_1["groups"] == []  # the shifts ended at midnight


def test_one_active_booking_per_request_is_enforced_by_the_database(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer)
    request = _book(bus)
    row = {"request_id": request.id, "carer_id": carer.id, "center_id": MAIN,
           "start": request.start, "end": request.end, "sensitive": False,
           "provisional": False, "created_at": NOW}
    engine = make_engine(db_url)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(orm.center_bookings).values(id="again", active=True, **row))
    with engine.begin() as conn:  # an inactive (released) row may stay beside it
        conn.execute(insert(orm.center_bookings).values(id="old", active=False, **row))


@pytest.mark.parametrize("racers", [2, 6])
def test_bookings_racing_for_the_last_place_get_it_once(db_url: str, racers: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1, skills=())[0]
    _shift(bus, carer)
    for _ in range(4):
        _book(bus)
    contenders = [_book(bus, match=False) for _ in range(racers)]

    # Hold every booking between "count the group" and "take the place" for a moment, so
    # without the lock on the shift rows both would count four children and both book.
    place = center_handlers.place_booking
    gate = threading.Barrier(racers, timeout=2)

    def slow_place(*args: Any, **kwargs: Any) -> str | None:
        chosen = place(*args, **kwargs)
        # With the lock held, the others can't get here: the wait times out and breaks.
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait()
        clock_time.sleep(0.05)
        return chosen

    monkeypatch.setattr(center_handlers, "place_booking", slow_place)
    with ThreadPoolExecutor(max_workers=racers) as pool:
        outcomes = list(pool.map(
            lambda r: bus.handle(c.StartMatching(request_id=r.id, event_id="race-" + r.id)),
            contenders))
    assert sorted(outcomes) == [0] * (racers - 1) + [1], outcomes
    statuses = sorted(_request(bus, r.id)["status"] for r in contenders)
    assert statuses == ["assigned"] + ["escalated"] * (racers - 1)
    assert _count(db_url, orm.center_bookings, orm.center_bookings.c.active.is_(True)) == 5


def test_a_dispatcher_places_a_waitlisted_child_in_a_chosen_group(db_url: str) -> None:
    bus = make_bus(db_url)
    full, spare, off = add_carers(bus, 3, skills=())
    _shift(bus, full)
    for _ in range(5):
        _book(bus)
    waiting = _book(bus)  # no second shift yet: waitlisted and escalated
    assert _request(bus, waiting.id)["status"] == "escalated"
    with pytest.raises(Conflict) as err:
        bus.handle(c.AssignCarer(request_id=waiting.id, carer_id=full.id, dispatcher="김상황"))
    assert err.value.code == "group_full"
    with pytest.raises(Conflict) as err:
        bus.handle(c.AssignCarer(request_id=waiting.id, carer_id=off.id, dispatcher="김상황"))
    assert err.value.code == "carer_not_on_shift"
    _shift(bus, spare)  # room at last: the waiting child gets it without a dispatcher
    detail = _request(bus, waiting.id)
    assert detail["status"] == "assigned" and detail["carer"]["id"] == spare.id
    assert "center_booked" in _kinds(db_url, waiting.id)
    # The dispatcher's choice of group places a child the engine has not placed yet.
    unmatched = _book(bus, match=False)
    bus.handle(c.AssignCarer(request_id=unmatched.id, carer_id=spare.id, dispatcher="김상황"))
    detail = _request(bus, unmatched.id)
    assert detail["status"] == "assigned" and detail["carer"]["id"] == spare.id
    assert any(e["type"] == "dispatcher_assigned" and e["detail"]["dispatcher"] == "김상황"
               for e in detail["timeline"])
    assert "center_booked" in _kinds(db_url, unmatched.id)
