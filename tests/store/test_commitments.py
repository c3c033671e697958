"""The one query matching makes about the carers' assignments (busy, jobs today, where they
set off from), on both backends."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from tests.helpers import NOW, Clock, add_carers, add_family, hospital_request, make_bus


def test_commitments_say_who_is_busy_how_many_jobs_and_where_they_set_off(db_url: str) -> None:
    bus = make_bus(db_url, Clock(NOW))
    first, second, idle = add_carers(bus, 3)
    family = add_family(bus)
    early, _ = bus.handle(hospital_request(family, start=NOW + timedelta(hours=1), hours=2))
    late, _ = bus.handle(hospital_request(family, start=NOW + timedelta(hours=5), hours=1))
    bus.handle(c.AssignCarer(request_id=early.id, carer_id=first.id, dispatcher="d"))
    bus.handle(c.AssignCarer(request_id=late.id, carer_id=second.id, dispatcher="d"))
    with make_engine(db_url).begin() as conn:  # the early job was at a place with coordinates
        conn.execute(update(orm.requests).where(orm.requests.c.id == early.id).values(
            location={"hospital": "전남대병원", "ward": "5층", "lat": 35.14, "lon": 126.92}))

    with bus.uow_factory() as uow:
        known = uow.carers.commitments(
            busy_from=NOW + timedelta(hours=2), busy_until=NOW + timedelta(hours=4),
            jobs_since=NOW - timedelta(hours=1),
            ended_from=NOW, ended_until=NOW + timedelta(hours=4))
        later = uow.carers.commitments(
            busy_from=NOW + timedelta(hours=10), busy_until=NOW + timedelta(hours=11),
            jobs_since=NOW + timedelta(hours=1),
            ended_from=NOW, ended_until=NOW + timedelta(hours=7))
    assert known.busy == {first.id}
    assert known.jobs == {first.id: 1, second.id: 1}
    assert known.previous == {first.id: (35.14, 126.92)}  # the late job ends after the window
    assert idle.id not in known.jobs
    # Nobody busy then, no job created since, and both jobs ended by then: only one had
    # coordinates to set off from.
    assert later.busy == set() and later.jobs == {}
    assert later.previous == {first.id: (35.14, 126.92)}
