"""The indexed candidate search: a box around the job, widened as needed, returns exactly
the head of the full ranking (the brute force over every carer), never a different order."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.domain.matching import (
    SEARCH_RADII_KM,
    Box,
    Candidate,
    box_around,
    haversine_km,
    select_candidates,
    select_nearest,
)
from dispatch.domain.model import Carer
from dispatch.domain.policy import load_policies

HOSPITAL = load_policies()["hospital"]
GWANGJU = (35.16, 126.85)
DISTRICTS = ("동구", "서구", "남구", "북구", "광산구")


def in_box(carers: list[Carer], calls: list[Box] | None = None):  # type: ignore[no-untyped-def]
    """What the repository's query answers: on duty, reachable, home inside the box."""
    def query(box: Box) -> Iterable[Carer]:
        if calls is not None:
            calls.append(box)
        return [c for c in carers if c.on_duty and not c.opted_out and c.home_lat is not None
                and c.home_lon is not None and box.contains(c.home_lat, c.home_lon)]
    return query


def ids(candidates: list[Candidate]) -> list[str]:
    return [c.carer.id for c in candidates]


carer_st = st.builds(
    lambda i, lat, lon, home, districts, hospital, on_duty, opted_out, rating: Carer(
        id=f"c{i:04d}", name="x", phone="+821000000000", districts=list(districts),
        skills=["hospital"] if hospital else [], on_duty=on_duty, opted_out=opted_out,
        rating=rating, home_lat=lat if home else None, home_lon=lon if home else None),
    st.integers(0, 9999),
    # A dense town (about 13 x 13 km), so circles of 2-8 km hold a few carers each.
    st.floats(35.10, 35.22), st.floats(126.78, 126.92),
    st.sampled_from([True, True, True, False]),             # most carers gave a home
    st.sets(st.sampled_from(DISTRICTS), min_size=1, max_size=3).map(sorted),
    st.sampled_from([True, True, False]),                   # qualified for hospital care
    st.sampled_from([True, True, False]),                   # on duty
    st.sampled_from([False, False, False, True]),           # opted out
    st.sampled_from([0.0, 3.5, 4.0, 4.5, 5.0]),
)


@settings(max_examples=300, deadline=None)
@given(
    carers=st.lists(carer_st, max_size=120, unique_by=lambda c: c.id),
    job=st.tuples(st.floats(35.08, 35.24), st.floats(126.76, 126.94)),
    enough=st.integers(1, 8),
    district=st.sampled_from((None, *DISTRICTS)),
    data=st.data(),
)
def test_the_indexed_search_returns_the_head_of_the_brute_force_ranking(
        carers: list[Carer], job: tuple[float, float], enough: int, district: str | None,
        data: st.DataObject) -> None:
    all_ids = [c.id for c in carers]
    busy = set(data.draw(st.lists(st.sampled_from(all_ids), max_size=5))) if all_ids else set()
    exclude = set(data.draw(st.lists(st.sampled_from(all_ids), max_size=5))) if all_ids else set()
    jobs = {i: data.draw(st.integers(0, 3)) for i in all_ids[:10]}
    # Some carers set off from an earlier job, anywhere: they must be found all the same.
    # (near the job, so they rank high whatever their home)
    previous = {i: (job[0] + data.draw(st.floats(-0.02, 0.02)),
                    job[1] + data.draw(st.floats(-0.02, 0.02))) for i in all_ids[::5]}
    kw = dict(district=district, busy=busy, exclude=exclude, jobs_today=jobs,
              previous_location=previous)
    brute = select_candidates(HOSPITAL, carers, lat=job[0], lon=job[1], **kw)  # type: ignore[arg-type]
    elsewhere = [c for c in carers if c.id in previous and c.on_duty and not c.opted_out]
    found = select_nearest(HOSPITAL, in_box(carers), enough=enough, lat=job[0], lon=job[1],
                           elsewhere=elsewhere, **kw)  # type: ignore[arg-type]
    if found is None:
        # Too few within the widest circle: the caller ranks everyone. Only allowed when
        # the brute force also has fewer than `enough` within that circle.
        assert sum(1 for c in brute if c.distance_km is not None
                   and c.distance_km <= 32.0) < enough
        return
    assert len(found) >= enough
    assert ids(found) == ids(brute)[:len(found)]
    assert [c.distance_km for c in found] == [c.distance_km for c in brute[:len(found)]]


def test_the_search_starts_small_and_widens_only_as_far_as_needed() -> None:
    lat, lon = GWANGJU
    # One carer every ~1 km going east from the job.
    carers = [Carer(id=f"c{k:02d}", name="x", phone="+821000000000", districts=["동구"],
                    skills=["hospital"], on_duty=True, home_lat=lat,
                    home_lon=lon + k / 91.0) for k in range(1, 30)]
    calls: list[Box] = []
    found = select_nearest(HOSPITAL, in_box(carers, calls), enough=3, lat=lat, lon=lon,
                           district="동구", busy=set(), exclude=set(), jobs_today={},
                           previous_location={})
    assert found is not None and ids(found) == ["c01", "c02", "c03"]
    # 0.25, 0.5 and 1 km hold nobody for sure (the first is ~1.0 km away), 2 km two, 4 km three.
    assert [round(b.north - lat, 4) for b in calls][-1] == round(4.0 / 111.0, 4)
    calls.clear()
    assert select_nearest(HOSPITAL, in_box(carers, calls), enough=100, lat=lat, lon=lon,
                          district="동구", busy=set(), exclude=set(), jobs_today={},
                          previous_location={}) is None
    assert len(calls) == len(SEARCH_RADII_KM)


@pytest.mark.parametrize("lat", [0.0, 35.16, 60.0, -45.0])
@pytest.mark.parametrize("radius", [0.5, 2.0, 32.0])
def test_the_box_holds_the_whole_circle(lat: float, radius: float) -> None:
    box = box_around(lat, 126.85, radius)
    for step in range(360):
        # Walk the circle just inside its edge: every point must be in the box.
        bearing = math.radians(step)
        d = (radius * 0.999) / 6371.0
        p1 = math.radians(lat)
        p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(bearing))
        l2 = math.radians(126.85) + math.atan2(math.sin(bearing) * math.sin(d) * math.cos(p1),
                                               math.cos(d) - math.sin(p1) * math.sin(p2))
        point = (math.degrees(p2), math.degrees(l2))
        assert haversine_km(lat, 126.85, *point) <= radius
        assert box.contains(*point), (step, point, box)
