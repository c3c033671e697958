"""The simulator's offline optimum and the worker's message → command mapping (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatch import commands as c
from dispatch.domain.matching import haversine_km
from dispatch.domain.policy import load_policies
from infra.simulate.optimum import Job, Worker, offline_optimum
from infra.simulate.report import StrategyResult, recommend
from schemas.envelope import Envelope
from streams.routing import command_for

T = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
# Two places 0.1° of latitude apart (about 11 km), both in 서구.
NORTH, SOUTH = (35.20, 126.89), (35.10, 126.89)


def job(place: tuple[float, float], start_h: float = 0, hours: float = 2,
        district: str = "서구", skills: tuple[str, ...] = ()) -> Job:
    start = T + timedelta(hours=start_h)
    return Job(start=start, end=start + timedelta(hours=hours), lat=place[0], lon=place[1],
               district=district, skills=skills)


def worker(place: tuple[float, float], districts: tuple[str, ...] = ("서구",),
           skills: tuple[str, ...] = ()) -> Worker:
    return Worker(lat=place[0], lon=place[1], districts=districts, skills=skills)


def test_crossed_online_assignment_is_uncrossed_by_the_optimum() -> None:
    # Online, the first request went to the carer living by the second job and vice versa
    # (each about 11 km); with hindsight each carer takes the job next door (0 km).
    jobs = [job(NORTH), job(SOUTH)]
    workers = [worker(SOUTH), worker(NORTH)]
    online_km = (haversine_km(*SOUTH, *NORTH) + haversine_km(*NORTH, *SOUTH)) / 2
    best = offline_optimum(jobs, workers)
    assert best.assignment == (1, 0)
    assert best.mean_km == pytest.approx(0.0, abs=1e-9)
    assert best.mean_km is not None and best.mean_km <= online_km
    assert best.method == "assignment"


def test_overlapping_jobs_need_two_carers_even_if_one_is_nearer_to_both() -> None:
    # Both jobs are next to carer 0 and overlap in time: only one can be theirs; the other
    # goes to carer 1, 11 km away. Without the overlap rule the answer would be 0 km.
    jobs = [job(NORTH, 0), job(NORTH, 1)]
    workers = [worker(NORTH), worker(SOUTH)]
    best = offline_optimum(jobs, workers, buffer=timedelta(minutes=30))
    assert sorted(best.assignment) == [0, 1]
    assert best.mean_km == pytest.approx(haversine_km(*NORTH, *SOUTH) / 2, rel=1e-6)


def test_when_the_assignment_double_books_a_carer_the_integer_program_decides() -> None:
    # Carer 0 lives by jobs A (08–10) and B (09–11), which overlap, and could also do C
    # (14–16) halfway to carer 1. The assignment relaxation gives carer 0 both A and B
    # (5.5 km in all); the real optimum gives them one of A/B plus C, or leaves C to carer 1:
    # either way 0 + 11 + 5.5 km.
    mid = ((NORTH[0] + SOUTH[0]) / 2, NORTH[1])
    jobs = [job(NORTH, 0), job(NORTH, 1), job(mid, 6)]
    workers = [worker(NORTH), worker(SOUTH)]
    best = offline_optimum(jobs, workers, buffer=timedelta(minutes=30))
    assert best.method == "integer program"
    assert best.assignment[0] != best.assignment[1]
    far, half = haversine_km(*NORTH, *SOUTH), haversine_km(*NORTH, *mid)
    assert best.mean_km == pytest.approx((far + half) / 3, rel=1e-6)


def test_one_carer_may_take_two_jobs_that_do_not_overlap() -> None:
    jobs = [job(NORTH, 0), job(NORTH, 5)]
    workers = [worker(NORTH), worker(SOUTH)]
    best = offline_optimum(jobs, workers, buffer=timedelta(minutes=30))
    assert best.assignment == (0, 0)
    assert best.mean_km == pytest.approx(0.0, abs=1e-9)


def test_the_travel_buffer_makes_back_to_back_jobs_clash() -> None:
    # 08–10 and 10:15–12: 15 minutes apart, less than the 30-minute buffer.
    jobs = [job(NORTH, 0, 2), job(NORTH, 2.25, 1.75)]
    workers = [worker(NORTH), worker(SOUTH)]
    best = offline_optimum(jobs, workers, buffer=timedelta(minutes=30))
    assert sorted(best.assignment) == [0, 1]
    relaxed = offline_optimum(jobs, workers, buffer=timedelta(0))
    assert relaxed.assignment == (0, 0)


def test_unqualified_or_out_of_district_carers_are_never_chosen() -> None:
    jobs = [job(NORTH, skills=("hospital",)), job(SOUTH, district="남구")]
    workers = [worker(NORTH),                                   # next door, no qualification
               worker(SOUTH, skills=("hospital",)),              # qualified, far
               worker(SOUTH, districts=("서구",)),                # next door, wrong district
               worker(NORTH, districts=("남구",))]               # far, serves 남구
    best = offline_optimum(jobs, workers)
    assert best.assignment == (1, 3)


def test_a_job_nobody_may_take_is_an_error_not_a_silent_pairing() -> None:
    with pytest.raises(ValueError, match="no qualified carer"):
        offline_optimum([job(NORTH, district="동구")], [worker(NORTH)])


def test_no_jobs_no_distance() -> None:
    assert offline_optimum([], [worker(NORTH)]).mean_km is None


def _envelope(type_: str, payload: dict[str, str]) -> Envelope:
    return Envelope(type=type_, version=1, key="k", payload=payload, occurred_at=T)


def test_the_worker_mapping_turns_each_message_into_its_command() -> None:
    received = _envelope("request.received", {"request_id": "r1", "service": "hospital"})
    assert command_for(received) == c.StartMatching(request_id="r1", event_id=received.event_id)
    sms_in = _envelope("sms.received", {"inbound_id": "i1"})
    assert command_for(sms_in) == c.HandleInboundSms(inbound_id="i1", event_id=sms_in.event_id)
    assert command_for(_envelope("sms.requested", {"notification_id": "n1"})) == \
        c.DeliverNotification(notification_id="n1")
    assert command_for(_envelope("request.assigned", {"request_id": "r1"})) is None


def _result(strategy: str, fill_rate: float, p90: float | None, sms: float | None
            ) -> StrategyResult:
    filled = round(fill_rate * 100)
    return StrategyResult(strategy=strategy, requests=100, rejected=0, filled=filled,
                          fill_rate=fill_rate, escalated=0, median_fill_min=p90 and p90 / 3,
                          p90_fill_min=p90, sms_per_fill=sms, sms_total=0, sms_by_kind={},
                          offers_made=0, mean_km=None, optimum_mean_km=None,
                          optimum_method="assignment", wall_s=0.0, commands=0)


def test_the_advice_wants_the_fill_rate_then_the_sla_then_the_fewest_texts() -> None:
    built_in = load_policies()  # home-emergency: SLA 15 min
    home = built_in["home-emergency"]
    # As the policy file stood before the simulator's advice: the advice names the difference.
    policies = {**built_in, "home-emergency": home.model_copy(update={
        "offers": home.offers.model_copy(update={"strategy": "broadcast"})})}
    results = [_result("broadcast", 0.52, 5.7, 17.0), _result("waves", 0.515, 7.8, 12.0),
               _result("sequential", 0.54, 27.4, 7.0)]
    advice = recommend(results, policies, "home-emergency")
    # sequential texts least but leaves too many requests to the dispatcher; broadcast
    # fills as many in time but texts more than waves.
    assert advice.startswith("Use `waves` for home-emergency")
    assert "policy file says `broadcast`" in advice
    fewer = [_result("broadcast", 0.70, 5.0, 17.0), _result("waves", 0.60, 7.0, 12.0)]
    assert recommend(fewer, policies, "home-emergency").startswith("Use `broadcast`")
    late = [_result("waves", 0.5, 40.0, 12.0), _result("sequential", 0.5, 60.0, 7.0)]
    assert "No strategy filled 9 in 10 within the SLA" in recommend(late, policies,
                                                                    "home-emergency")
    nothing = [_result("waves", 0.0, None, None)]
    assert recommend(nothing, policies, "home-emergency").startswith("No strategy filled")
