"""Candidate selection: who may be offered a visit job, best first."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.domain.matching import Candidate, haversine_km, select_candidates
from dispatch.domain.model import Carer
from dispatch.domain.policy import ServicePolicy, load_policies

# 전남대학교병원 (Dong-gu) and a few points around Gwangju.
HOSPITAL_AT = (35.1420, 126.9210)
NEAR = (35.1450, 126.9230)      # a few hundred metres
MIDDLE = (35.1600, 126.8520)    # 서구, a few km
FAR = (35.1390, 126.7930)       # 광산구, ~12 km


HOSPITAL = load_policies()["hospital"]


@pytest.fixture
def hospital() -> ServicePolicy:
    return HOSPITAL


def carer(id: str, *, districts: tuple[str, ...] = ("동구",), skills: tuple[str, ...] = ("hospital",),
          on_duty: bool = True, opted_out: bool = False, rating: float = 4.0,
          home: tuple[float, float] | None = None) -> Carer:
    return Carer(id=id, name=f"carer {id}", phone="+821000000000", districts=list(districts),
                 skills=list(skills), on_duty=on_duty, opted_out=opted_out, rating=rating,
                 home_lat=home[0] if home else None, home_lon=home[1] if home else None)


def ids(candidates: list[Candidate]) -> list[str]:
    return [c.carer.id for c in candidates]


def select(policy: ServicePolicy, carers: list[Carer], **kw: Any) -> list[Candidate]:
    args: dict[str, Any] = {"district": "동구", "busy": set(), "exclude": set(),
                            "jobs_today": {}}
    args.update(kw)
    return select_candidates(policy, carers, **args)


# -- who qualifies --------------------------------------------------------------------------

def test_filters_each_reason_out(hospital: ServicePolicy) -> None:
    carers = [
        carer("ok"),
        carer("off-duty", on_duty=False),
        carer("opted-out", opted_out=True),
        carer("no-skill", skills=("infant",)),
        carer("no-skills", skills=()),
        carer("other-district", districts=("서구",)),
        carer("busy"),
        carer("excluded"),
        carer("two-districts", districts=("서구", "동구"), skills=("infant", "hospital")),
    ]
    picked = select(hospital, carers, busy={"busy"}, exclude={"excluded"})
    assert sorted(ids(picked)) == ["ok", "two-districts"]


def test_no_district_means_any_district(hospital: ServicePolicy) -> None:
    carers = [carer("a", districts=("서구",)), carer("b", districts=("광산구",)),
              carer("c", districts=())]
    assert sorted(ids(select(hospital, carers, district=None))) == ["a", "b", "c"]
    assert ids(select(hospital, carers, district="광산구")) == ["b"]


def test_every_required_skill_is_needed() -> None:
    policy = ServicePolicy.model_validate({
        "id": "special", "label": "특수", "mode": "visit", "min_age_months": 0,
        "max_age_months": 155, "hours": {"daily": ["08:00-20:00"]},
        "required_skills": ["hospital", "special_needs"]})
    carers = [carer("one", skills=("hospital",)), carer("both", skills=("special_needs", "hospital")),
              carer("more", skills=("infant", "hospital", "special_needs"))]
    assert sorted(ids(select(policy, carers))) == ["both", "more"]


def test_policy_without_skills_takes_anyone_on_duty() -> None:
    policy = ServicePolicy.model_validate({
        "id": "plain", "label": "일반", "mode": "visit", "min_age_months": 0,
        "max_age_months": 155, "hours": {"daily": ["08:00-20:00"]}})
    carers = [carer("a", skills=()), carer("b", skills=("infant",)), carer("c", on_duty=False)]
    assert sorted(ids(select(policy, carers))) == ["a", "b"]


def test_nobody_qualifies(hospital: ServicePolicy) -> None:
    assert select(hospital, []) == []
    assert select(hospital, [carer("a", on_duty=False)]) == []


# -- ranking --------------------------------------------------------------------------------

def test_haversine() -> None:
    assert haversine_km(*HOSPITAL_AT, *HOSPITAL_AT) == 0.0
    # one degree of latitude is about 111.2 km
    assert haversine_km(35.0, 126.9, 36.0, 126.9) == pytest.approx(111.19, abs=0.05)
    assert 10 < haversine_km(*HOSPITAL_AT, *FAR) < 13


def test_ranked_by_distance_unknown_last(hospital: ServicePolicy) -> None:
    carers = [carer("far", home=FAR), carer("nowhere"), carer("near", home=NEAR),
              carer("middle", home=MIDDLE)]
    picked = select(hospital, carers, lat=HOSPITAL_AT[0], lon=HOSPITAL_AT[1],
                    jobs_today={"near": 3, "far": 0})
    assert ids(picked) == ["near", "middle", "far", "nowhere"]
    assert picked[0].distance_km == pytest.approx(haversine_km(*HOSPITAL_AT, *NEAR))
    assert picked[0].distance_km is not None and picked[0].distance_km < 1
    assert picked[-1].distance_km is None
    assert [c.jobs_today for c in picked] == [3, 0, 0, 0]


def test_distance_beats_jobs_and_rating(hospital: ServicePolicy) -> None:
    carers = [carer("busy-bee-near", home=NEAR, rating=1.0),
              carer("idle-star-far", home=FAR, rating=5.0)]
    picked = select(hospital, carers, lat=HOSPITAL_AT[0], lon=HOSPITAL_AT[1],
                    jobs_today={"busy-bee-near": 5})
    assert ids(picked) == ["busy-bee-near", "idle-star-far"]


def test_without_request_coordinates_no_distance(hospital: ServicePolicy) -> None:
    carers = [carer("a", home=FAR, rating=3.0), carer("b", home=NEAR, rating=5.0)]
    picked = select(hospital, carers)
    assert [c.distance_km for c in picked] == [None, None]
    assert ids(picked) == ["b", "a"]  # equal (unknown) distance: the higher rating first
    only_lat = select(hospital, carers, lat=HOSPITAL_AT[0])
    assert [c.distance_km for c in only_lat] == [None, None]


def test_then_fewest_jobs_then_rating(hospital: ServicePolicy) -> None:
    carers = [carer("two-jobs-5", rating=5.0), carer("no-jobs-3", rating=3.0),
              carer("one-job-4", rating=4.0), carer("no-jobs-4.5", rating=4.5),
              carer("one-job-2", rating=2.0)]
    jobs = {"two-jobs-5": 2, "one-job-4": 1, "one-job-2": 1, "no-jobs-3": 0}
    picked = select(hospital, carers, jobs_today=jobs)
    assert ids(picked) == ["no-jobs-4.5", "no-jobs-3", "one-job-4", "one-job-2", "two-jobs-5"]
    assert [c.jobs_today for c in picked] == [0, 0, 1, 1, 2]


def test_same_place_falls_back_to_jobs(hospital: ServicePolicy) -> None:
    carers = [carer("x", home=MIDDLE, rating=5.0), carer("y", home=MIDDLE, rating=1.0)]
    picked = select(hospital, carers, lat=HOSPITAL_AT[0], lon=HOSPITAL_AT[1],
                    jobs_today={"x": 1})
    assert ids(picked) == ["y", "x"]


@pytest.mark.parametrize(("limit", "expected"), [
    (None, ["r5", "r4", "r3", "r2"]),
    (10, ["r5", "r4", "r3", "r2"]),
    (2, ["r5", "r4"]),
    (1, ["r5"]),
    (0, []),
])
def test_limit(hospital: ServicePolicy, limit: int | None, expected: list[str]) -> None:
    carers = [carer(f"r{r}", rating=float(r)) for r in (2, 4, 5, 3)] + [
        carer("r9-off", rating=9.0, on_duty=False)]
    assert ids(select(hospital, carers, limit=limit)) == expected


# -- property -------------------------------------------------------------------------------

DISTRICTS = ["동구", "서구", "남구", "북구", "광산구"]
SKILLS = ["hospital", "infant", "special_needs"]
PLACES = [None, HOSPITAL_AT, NEAR, MIDDLE, FAR]


@st.composite
def carer_pool(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(min_value=0, max_value=12))
    return [{
        "id": f"c{i}",
        "on_duty": draw(st.booleans()),
        "opted_out": draw(st.booleans()),
        "skills": draw(st.sets(st.sampled_from(SKILLS))),
        "districts": draw(st.sets(st.sampled_from(DISTRICTS), max_size=3)),
        "home": draw(st.sampled_from(PLACES)),
        "rating": draw(st.sampled_from([0.0, 3.5, 4.0, 5.0])),
        "busy": draw(st.booleans()),
        "excluded": draw(st.booleans()),
        "jobs": draw(st.integers(min_value=0, max_value=3)),
    } for i in range(n)]


@settings(max_examples=100, deadline=None)
@given(pool=carer_pool(), district=st.sampled_from([None, *DISTRICTS]),
       at=st.sampled_from([None, HOSPITAL_AT, FAR]), limit=st.one_of(st.none(), st.integers(0, 6)))
def test_selection_property(pool: list[dict[str, Any]], district: str | None,
                            at: tuple[float, float] | None, limit: int | None) -> None:
    hospital = HOSPITAL
    carers = [carer(p["id"], districts=tuple(p["districts"]), skills=tuple(p["skills"]),
                    on_duty=p["on_duty"], opted_out=p["opted_out"], rating=p["rating"],
                    home=p["home"]) for p in pool]
    busy = {p["id"] for p in pool if p["busy"]}
    exclude = {p["id"] for p in pool if p["excluded"]}
    jobs = {p["id"]: p["jobs"] for p in pool if p["jobs"]}
    picked = select_candidates(hospital, carers, district=district, busy=busy, exclude=exclude,
                               jobs_today=jobs, lat=at[0] if at else None,
                               lon=at[1] if at else None, limit=limit)

    by_id = {p["id"]: p for p in pool}
    eligible = {p["id"] for p in pool
                if p["on_duty"] and not p["opted_out"] and "hospital" in p["skills"]
                and (district is None or district in p["districts"])
                and not p["busy"] and not p["excluded"]}
    got = ids(picked)
    assert len(got) == len(set(got))
    assert set(got) <= eligible
    if limit is None:
        assert set(got) == eligible
    else:
        assert len(got) == min(limit, len(eligible))

    for cand in picked:
        spec = by_id[cand.carer.id]
        assert cand.jobs_today == spec["jobs"]
        if at is None or spec["home"] is None:
            assert cand.distance_km is None
        else:
            assert cand.distance_km == pytest.approx(haversine_km(*at, *spec["home"]))

    # best first: known distance before unknown, nearer first, then fewer jobs, then rating
    for a, b in zip(picked, picked[1:], strict=False):
        if a.distance_km is None:
            assert b.distance_km is None
        if a.distance_km is not None and b.distance_km is not None:
            assert a.distance_km <= b.distance_km
        if a.distance_km == b.distance_km:
            assert a.jobs_today <= b.jobs_today
            if a.jobs_today == b.jobs_today:
                assert a.carer.rating >= b.carer.rating

    # a limit keeps the head of the full ranking
    if limit is not None:
        full = select_candidates(hospital, carers, district=district, busy=busy,
                                 exclude=exclude, jobs_today=jobs, lat=at[0] if at else None,
                                 lon=at[1] if at else None)
        assert got == ids(full)[:limit]


# -- where the carer will be: the previous job's place, else home ---------------------------

def test_previous_job_location_replaces_home(hospital: ServicePolicy) -> None:
    carers = [carer("home-far-but-next-door-today", home=FAR), carer("home-middle", home=MIDDLE)]
    without = select(hospital, carers, lat=HOSPITAL_AT[0], lon=HOSPITAL_AT[1])
    assert ids(without) == ["home-middle", "home-far-but-next-door-today"]
    picked = select(hospital, carers, lat=HOSPITAL_AT[0], lon=HOSPITAL_AT[1],
                    previous_location={"home-far-but-next-door-today": NEAR})
    assert ids(picked) == ["home-far-but-next-door-today", "home-middle"]
    assert picked[0].distance_km == pytest.approx(haversine_km(*HOSPITAL_AT, *NEAR))
    assert picked[1].distance_km == pytest.approx(haversine_km(*HOSPITAL_AT, *MIDDLE))


def test_previous_job_location_gives_a_distance_to_a_carer_without_a_home(
        hospital: ServicePolicy) -> None:
    carers = [carer("no-home"), carer("home-far", home=FAR)]
    picked = select(hospital, carers, lat=HOSPITAL_AT[0], lon=HOSPITAL_AT[1],
                    previous_location={"no-home": MIDDLE, "someone-else": NEAR})
    assert ids(picked) == ["no-home", "home-far"]
    # ... and none without the request's own coordinates.
    assert [c.distance_km for c in select(hospital, carers,
                                          previous_location={"no-home": MIDDLE})] == [None, None]
