"""Offer strategies (pure): broadcast, waves, sequential; and how they drive a Request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.domain.model import OfferStatus, Request
from dispatch.domain.policy import OfferRules, load_policies
from dispatch.domain.strategies import next_offers

T0 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
RANKED = ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]


@dataclass
class Off:
    carer_id: str
    status: str = "open"

    @property
    def is_open(self) -> bool:
        return self.status == "open"


def rules(strategy: Literal["broadcast", "waves", "sequential"], wave_size: int = 3,
          timeout_s: int = 600) -> OfferRules:
    return OfferRules(strategy=strategy, wave_size=wave_size, timeout_s=timeout_s)


# -- broadcast ------------------------------------------------------------------------------

def test_broadcast_offers_every_candidate_at_once_whatever_the_wave_size() -> None:
    assert next_offers(rules("broadcast", wave_size=2), [], RANKED) == RANKED


def test_broadcast_adds_newcomers_while_others_are_open_but_never_asks_twice() -> None:
    offers = [Off("c0"), Off("c1", "declined"), Off("c2", "expired")]
    assert next_offers(rules("broadcast"), offers, ["c9", "c0", "c1", "c2", "c3"]) == ["c9", "c3"]
    assert next_offers(rules("broadcast"), offers, ["c0", "c1"]) == []


# -- waves ----------------------------------------------------------------------------------

def test_waves_first_wave_is_the_best_ranked() -> None:
    assert next_offers(rules("waves", 3), [], RANKED) == ["c0", "c1", "c2"]


def test_waves_wait_while_any_offer_of_the_wave_is_open() -> None:
    offers = [Off("c0", "declined"), Off("c1", "declined"), Off("c2")]
    assert next_offers(rules("waves", 3), offers, RANKED) == []


def test_waves_widen_to_the_next_best_once_the_wave_is_over() -> None:
    offers = [Off("c0", "expired"), Off("c1", "declined"), Off("c2", "expired")]
    assert next_offers(rules("waves", 3), offers, RANKED) == ["c3", "c4", "c5"]
    offers += [Off("c3", "expired"), Off("c4", "expired"), Off("c5", "declined")]
    assert next_offers(rules("waves", 3), offers, RANKED) == ["c6"]  # the last, smaller wave
    offers.append(Off("c6", "expired"))
    assert next_offers(rules("waves", 3), offers, RANKED) == []


def test_waves_rank_is_taken_fresh_each_time() -> None:
    # Someone nearer came on duty meanwhile: they lead the next wave.
    offers = [Off("c0", "expired"), Off("c1", "expired")]
    assert next_offers(rules("waves", 2), offers, ["new", "c0", "c1", "c2"]) == ["new", "c2"]


# -- sequential -----------------------------------------------------------------------------

def test_sequential_one_at_a_time() -> None:
    r = rules("sequential", wave_size=5)
    assert next_offers(r, [], RANKED) == ["c0"]
    assert next_offers(r, [Off("c0")], RANKED) == []
    assert next_offers(r, [Off("c0", "declined")], RANKED) == ["c1"]
    assert next_offers(r, [Off("c0", "declined"), Off("c1", "expired")], RANKED) == ["c2"]


@pytest.mark.parametrize("strategy", ["broadcast", "waves", "sequential"])
def test_nobody_left(strategy: Literal["broadcast", "waves", "sequential"]) -> None:
    assert next_offers(rules(strategy), [Off("c0", "declined")], []) == []
    assert next_offers(rules(strategy), [Off("c0", "declined")], ["c0"]) == []


@pytest.mark.parametrize(("strategy", "expected"), [
    ("broadcast", ["a", "b"]), ("waves", ["a", "b"]), ("sequential", ["a"])])
def test_a_carer_named_twice_in_the_ranking_is_offered_once(
        strategy: Literal["broadcast", "waves", "sequential"], expected: list[str]) -> None:
    assert next_offers(rules(strategy, 3), [], ["a", "a", "b", "a"]) == expected


def test_unknown_strategy_is_refused() -> None:
    bad = OfferRules.model_construct(strategy="shout", wave_size=3, timeout_s=600)
    with pytest.raises(ValueError, match="shout"):
        next_offers(bad, [], RANKED)


def test_policy_timeouts_may_be_short_but_not_zero() -> None:
    assert OfferRules(timeout_s=1).timeout_s == 1
    with pytest.raises(ValueError):
        OfferRules(timeout_s=0)
    hospital = load_policies()["hospital"]
    assert hospital.model_validate({**hospital.model_dump(), "escalate_after_s": 1}
                                   ).escalate_after_s == 1
    with pytest.raises(ValueError):
        hospital.model_validate({**hospital.model_dump(), "escalate_after_s": 0})


def test_built_in_hospital_policy_uses_waves_of_three_with_a_ten_minute_window() -> None:
    offers = load_policies()["hospital"].offers
    assert (offers.strategy, offers.wave_size, offers.timeout_s) == ("waves", 3, 600)


# -- driving a real Request: expiry and the strategy together -------------------------------

def new_request() -> Request:
    return Request(service="hospital", family_id="f", child_id="k", start=T0 + timedelta(hours=2),
                   end=T0 + timedelta(hours=5), location={}, code="4821", created_at=T0)


def test_expire_offers_marks_only_those_past_their_window_and_records_each() -> None:
    req = new_request()
    req.make_offers(["a", "b"], T0, T0 + timedelta(minutes=10))
    req.make_offers(["c"], T0 + timedelta(minutes=5), T0 + timedelta(minutes=15))
    assert req.expire_offers(T0 + timedelta(minutes=9, seconds=59)) == []
    expired = req.expire_offers(T0 + timedelta(minutes=10))
    assert sorted(o.carer_id for o in expired) == ["a", "b"]
    assert {o.carer_id: o.status for o in req.offers} == {
        "a": OfferStatus.EXPIRED, "b": OfferStatus.EXPIRED, "c": OfferStatus.OPEN}
    assert [(e.type, e.detail) for e in req.timeline[-2:]] == [
        ("offer_expired", {"carer_id": "a"}), ("offer_expired", {"carer_id": "b"})]
    assert req.expire_offers(T0 + timedelta(minutes=10)) == []  # nothing twice


def test_withdraw_returns_the_job_to_matching_without_that_carer() -> None:
    req = new_request()
    req.make_offers(["a", "b"], T0, T0 + timedelta(minutes=10))
    won = req.accept("a", T0 + timedelta(minutes=1))
    assert won.won and won.assignment is not None
    assignment = req.withdraw("a", T0 + timedelta(minutes=2))
    assert assignment is won.assignment and not assignment.active
    assert req.status == "matching" and req.carer_id is None and req.active_assignment is None
    assert {o.carer_id: o.status for o in req.offers} == {
        "a": OfferStatus.WITHDRAWN, "b": OfferStatus.RESCINDED}
    entry = req.timeline[-1]
    assert (entry.type, entry.actor, entry.detail["carer_id"]) == ("withdrawn", "carer", "a")
    # Never offered again, by any strategy.
    for strategy in ("broadcast", "waves", "sequential"):
        assert "a" not in next_offers(rules(strategy), req.offers, ["a", "b", "c"])  # type: ignore[arg-type]
    assert req.make_offers(["a", "c"], T0 + timedelta(minutes=3), T0 + timedelta(minutes=13)
                           )[0].carer_id == "c"
    assert req.accept("c", T0 + timedelta(minutes=4)).won


def test_only_the_assigned_carer_can_withdraw_and_only_before_arriving() -> None:
    from dispatch.domain.errors import Conflict

    req = new_request()
    req.make_offers(["a", "b"], T0, T0 + timedelta(minutes=10))
    with pytest.raises(Conflict):
        req.withdraw("a", T0)  # not assigned yet
    req.accept("a", T0 + timedelta(minutes=1))
    with pytest.raises(Conflict):
        req.withdraw("b", T0 + timedelta(minutes=2))
    req.mark_arrived("a", T0 + timedelta(hours=2))
    with pytest.raises(Conflict):
        req.withdraw("a", T0 + timedelta(hours=2, minutes=1))
    assert req.status == "in_progress" and req.active_assignment is not None


# -- property: whatever happens, the strategy's promises hold --------------------------------

POOL = [f"k{i}" for i in range(9)]
event = st.one_of(
    st.tuples(st.just("tick"), st.integers(0, 15)),        # minutes pass, then the sweep runs
    st.tuples(st.just("no"), st.integers(0, 8)),           # the n-th open offer says NO
    st.tuples(st.just("join"), st.sampled_from(POOL)),     # a carer becomes a candidate
    st.tuples(st.just("leave"), st.sampled_from(POOL)),    # a carer stops being one (busy, off)
)


@settings(max_examples=300, deadline=None)
@given(strategy=st.sampled_from(["broadcast", "waves", "sequential"]),
       wave_size=st.integers(1, 4), timeout_min=st.integers(1, 10),
       first=st.lists(st.sampled_from(POOL), max_size=9),
       events=st.lists(event, max_size=30))
def test_strategy_promises(strategy: Literal["broadcast", "waves", "sequential"],
                           wave_size: int, timeout_min: int, first: list[str],
                           events: list[tuple[str, object]]) -> None:
    r = rules(strategy, wave_size, timeout_min * 60)
    cap = {"broadcast": len(POOL), "waves": wave_size, "sequential": 1}[strategy]
    req = new_request()
    ranked = list(first)  # may name a carer twice: the ranking is the caller's business
    now = T0
    ever: list[str] = []

    def offer_now() -> None:
        req.expire_offers(now)
        open_before = sum(o.is_open for o in req.offers)
        chosen = next_offers(r, req.offers, ranked)
        fresh = [c for c in dict.fromkeys(ranked) if c not in ever]
        # never re-offers a carer, never names one twice
        assert not set(chosen) & set(ever)
        assert len(chosen) == len(set(chosen))
        assert set(chosen) <= set(fresh)
        # never exceeds the wave (one for sequential), counting what is still open
        assert len(chosen) <= cap
        assert open_before + len(chosen) <= cap or strategy == "broadcast"
        # and never stalls: nothing open and someone left means someone is asked now
        if open_before == 0 and fresh:
            assert chosen
        if strategy == "broadcast":
            assert chosen == fresh
        if chosen:
            req.make_offers(chosen, now, now + timedelta(seconds=r.timeout_s))
            ever.extend(chosen)

    offer_now()
    for kind, arg in events:
        if kind == "tick":
            now += timedelta(minutes=int(arg))  # type: ignore[call-overload]
        elif kind == "no":
            still_open = [o for o in req.offers if o.is_open]
            if still_open:
                req.decline(still_open[int(arg) % len(still_open)].carer_id, now)  # type: ignore[call-overload]
        elif kind == "join":
            ranked.insert(0, str(arg))
        else:
            ranked = [c for c in ranked if c != arg]
        offer_now()
        open_now = sum(o.is_open for o in req.offers)
        if strategy == "sequential":
            assert open_now <= 1
        if strategy == "waves":
            assert open_now <= wave_size
        assert len(req.offers) == len(set(o.carer_id for o in req.offers)) == len(ever)
