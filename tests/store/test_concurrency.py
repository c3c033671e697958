"""No double-booking when YES replies race: parallel connections, the database decides."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import func, select

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from tests.helpers import NOW, add_carers, add_family, hospital_request, make_bus


def _stored_inbound(bus, url: str, phone: str, body: str, sid: str) -> str:  # type: ignore[no-untyped-def]
    bus.handle(c.ReceiveSms(message_sid=sid, from_phone=phone, to_phone="x", body=body))
    with make_engine(url).connect() as conn:
        return str(conn.scalar(select(orm.inbound_sms.c.id).where(
            orm.inbound_sms.c.message_sid == sid)))


def _race(bus, jobs: list[c.HandleInboundSms]) -> list[str]:  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(bus.handle, jobs))


def test_twenty_carers_say_yes_to_one_request_at_once(db_url: str) -> None:
    bus = make_bus(db_url, wave_size=20)
    carers = add_carers(bus, 20)
    request, _ = bus.handle(hospital_request(add_family(bus)))
    bus.handle(c.StartMatching(request_id=request.id, event_id="m"))
    with make_engine(db_url).connect() as conn:
        offered = set(conn.scalars(select(orm.offers.c.carer_id)))
    assert len(offered) == 20
    jobs = [c.HandleInboundSms(
        inbound_id=_stored_inbound(bus, db_url, carer.phone, f"YES {request.code}", f"SM{i}"),
        event_id=f"e{i}") for i, carer in enumerate(carers) if carer.id in offered]
    outcomes = _race(bus, jobs)
    assert outcomes.count("assigned") == 1, outcomes
    assert set(outcomes) <= {"assigned", "already_filled"}
    with make_engine(db_url).connect() as conn:
        active = conn.scalar(select(func.count()).select_from(orm.assignments).where(
            orm.assignments.c.active.is_(True)))
    assert active == 1


def test_one_carer_says_yes_to_twenty_overlapping_requests_at_once(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1)[0]
    requests = []
    for i in range(20):
        family = add_family(bus, phone=f"+8210999{i:05d}")
        request, _ = bus.handle(hospital_request(family, start=NOW + timedelta(hours=1,
                                                                                minutes=i)))
        bus.handle(c.StartMatching(request_id=request.id, event_id=f"m{i}"))
        requests.append(request)
    jobs = [c.HandleInboundSms(
        inbound_id=_stored_inbound(bus, db_url, carer.phone, f"YES {r.code}", f"SMr{i}"),
        event_id=f"r{i}") for i, r in enumerate(requests)]
    outcomes = _race(bus, jobs)
    assert outcomes.count("assigned") == 1, outcomes
    with make_engine(db_url).connect() as conn:
        rows = conn.execute(select(orm.assignments.c.start, orm.assignments.c.end).where(
            orm.assignments.c.carer_id == carer.id, orm.assignments.c.active.is_(True))).all()
    assert len(rows) == 1
