"""A carer who takes a job no longer holds up the jobs at the same time they were offered."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from tests.helpers import NOW, Clock, add_carers, add_family, hospital_request, make_bus
from tests.store.test_store import _sms


def _offers(db_url: str, request_id: str) -> dict[str, str]:
    """Carer → offer status (the test clock stands still: no order by time)."""
    o = orm.offers.c
    with make_engine(db_url).connect() as conn:
        return {row.carer_id: row.status for row in conn.execute(
            select(o.carer_id, o.status).where(o.request_id == request_id))}


def _setup(db_url: str):  # type: ignore[no-untyped-def]
    """Waves of one; A alone on duty when the three jobs come in, then B comes on duty."""
    bus = make_bus(db_url, clock=Clock(), wave_size=1)
    (a,) = add_carers(bus, 1)
    requests = []
    for i, start in enumerate((NOW + timedelta(hours=1), NOW + timedelta(hours=2),
                               NOW + timedelta(days=1))):
        family = add_family(bus, phone=f"+82109999{i:04d}")
        request, _ = bus.handle(hospital_request(family, start=start))
        bus.handle(c.StartMatching(request_id=request.id, event_id=f"m{i}"))
        requests.append(request)
    (b,) = add_carers(bus, 1, first_phone=20_000_000)
    return bus, a, b, requests


def test_a_yes_closes_the_carers_overlapping_offers_and_the_next_carer_is_asked(
        db_url: str) -> None:
    bus, a, b, (first, overlapping, tomorrow) = _setup(db_url)
    for r in (first, overlapping, tomorrow):
        assert _offers(db_url, r.id) == {a.id: "open"}
    assert _sms(bus, db_url, a.phone, f"YES {first.code}", "SMy1") == "assigned"
    # Overlapping (with the travel buffer): closed at once, and B is asked now, not in 10 min.
    assert _offers(db_url, overlapping.id) == {a.id: "rescinded", b.id: "open"}
    t = orm.timeline.c
    with make_engine(db_url).connect() as conn:
        types = list(conn.scalars(select(t.type).where(t.request_id == overlapping.id)))
    assert "offer_closed_busy" in types
    # Tomorrow's job does not overlap: A may still take it.
    assert _offers(db_url, tomorrow.id) == {a.id: "open"}
    assert _sms(bus, db_url, a.phone, f"YES {tomorrow.code}", "SMy2") == "assigned"
    assert _sms(bus, db_url, b.phone, f"YES {overlapping.code}", "SMy3") == "assigned"


def test_a_dispatchers_assignment_closes_them_too(db_url: str) -> None:
    bus, a, b, (first, overlapping, _) = _setup(db_url)
    bus.handle(c.AssignCarer(request_id=first.id, carer_id=a.id, dispatcher="김상황"))
    assert _offers(db_url, overlapping.id) == {a.id: "rescinded", b.id: "open"}
