"""The indexed candidate search against the database (both backends): the box query finds
what ranking every carer finds, in the same order, and never a carer who cannot take the job."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from dispatch import commands as c
from dispatch.domain.matching import Candidate, box_around
from dispatch.handlers.matching import find_candidates
from dispatch.messagebus import MessageBus
from tests.helpers import NOW, add_family, hospital_request, make_bus

JOB = (35.146, 126.923)  # near 전남대병원
DISTRICTS = ("동구", "서구", "광산구")


def ids(candidates: list[Candidate]) -> list[str]:
    return [cand.carer.id for cand in candidates]


def _town(bus: MessageBus, rng: random.Random, n: int) -> list[str]:
    """Carers around the job: mixed skills, districts, duty; some without a home."""
    carer_ids = []
    for i in range(n):
        home = rng.random() < 0.85
        carer = bus.handle(c.RegisterCarer(
            name=f"돌봄{i}", phone=f"+8210{20_000_000 + i:08d}",
            districts=sorted(set(rng.sample(DISTRICTS, rng.randint(1, 2)))),
            skills=["hospital"] if rng.random() < 0.7 else ["infant"],
            home_lat=JOB[0] + rng.uniform(-0.06, 0.06) if home else None,
            home_lon=JOB[1] + rng.uniform(-0.07, 0.07) if home else None))
        if rng.random() < 0.8:
            bus.handle(c.SetDuty(carer_id=carer.id, on_duty=True))
        carer_ids.append(carer.id)
    return carer_ids


def _request(bus: MessageBus, *, district: str = "동구", hours_from_now: int = 2):  # type: ignore[no-untyped-def]
    family = add_family(bus, district=district)
    cmd = hospital_request(family, start=NOW + timedelta(hours=hours_from_now))
    cmd = c.SubmitRequest(**{**cmd.__dict__, "location": {
        "hospital": "전남대병원", "ward": "소아병동 5층", "lat": JOB[0], "lon": JOB[1]}})
    request, _ = bus.handle(cmd)
    return request


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_head_found_through_the_box_is_the_head_of_the_full_ranking(
        db_url: str, seed: int) -> None:
    bus = make_bus(db_url)
    rng = random.Random(seed)
    carer_ids = _town(bus, rng, 60)
    request = _request(bus, district=rng.choice(DISTRICTS))
    policy = bus.dependencies["policies"]["hospital"]
    now = bus.dependencies["clock"]()
    with bus.uow_factory() as uow:
        full = find_candidates(uow, request, policy, now)
        assert full, "the town has candidates for this job"
        for enough in (1, 3, 5):
            for exclude in ((), tuple(rng.sample(carer_ids, 5))):
                brute = find_candidates(uow, request, policy, now, exclude=exclude)
                head = find_candidates(uow, request, policy, now, exclude=exclude,
                                       enough=enough)
                assert ids(head) == ids(brute)[:len(head)]
                assert len(head) == min(enough, len(brute))
                assert [cand.distance_km for cand in head] == \
                    [cand.distance_km for cand in brute[:len(head)]]
                # What comes back are the carers themselves, ready for an offer SMS.
                assert all(cand.carer.phone.startswith("+8210") for cand in head)


def test_the_box_query_skips_carers_off_duty_opted_out_or_outside(db_url: str) -> None:
    bus = make_bus(db_url)
    inside = [bus.handle(c.RegisterCarer(name=f"안{i}", phone=f"+8210300000{i:02d}",
                                         districts=["동구"], skills=["hospital"],
                                         home_lat=JOB[0] + i * 0.001, home_lon=JOB[1]))
              for i in range(4)]
    outside = bus.handle(c.RegisterCarer(name="밖", phone="+821030000099", districts=["동구"],
                                         skills=["hospital"], home_lat=JOB[0] + 0.2,
                                         home_lon=JOB[1]))
    for carer in [*inside[:3], outside]:
        bus.handle(c.SetDuty(carer_id=carer.id, on_duty=True))
    with bus.uow_factory() as uow:
        carer = uow.carers.get(inside[2].id)
        assert carer is not None
        carer.opted_out = True
        uow.commit()
    with bus.uow_factory() as uow:
        found = {p.id for p in uow.carers.available_in_box(box_around(*JOB, 2.0))}
        among = {cr.id for cr in uow.carers.available_among([cr.id for cr in inside])}
    assert found == {inside[0].id, inside[1].id}  # [2] opted out, [3] off duty
    assert among == found


def test_offer_next_asks_the_nearest_free_carers_first(db_url: str) -> None:
    bus = make_bus(db_url)
    near = [bus.handle(c.RegisterCarer(name=f"가{i}", phone=f"+8210400000{i:02d}",
                                       districts=["동구"], skills=["hospital"],
                                       home_lat=JOB[0] + (i + 1) * 0.004, home_lon=JOB[1]))
            for i in range(6)]
    for carer in near:
        bus.handle(c.SetDuty(carer_id=carer.id, on_duty=True))
    request = _request(bus)
    bus.handle(c.StartMatching(request_id=request.id, event_id="e-start"))
    with bus.uow_factory() as uow:
        loaded = uow.requests.get(request.id)
        assert loaded is not None
        asked = {o.carer_id for o in loaded.offers}
    assert asked == {near[0].id, near[1].id, near[2].id}  # a wave of the three nearest
