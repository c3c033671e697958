"""The Request aggregate's state machine: offers, the first YES, arrival, completion, cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.domain.errors import Conflict
from dispatch.domain.model import (
    Acceptance,
    Actor,
    OfferStatus,
    Request,
    RequestStatus,
)

T0 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)  # 10:00 in Seoul
EXPIRES = T0 + timedelta(minutes=10)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def new_request() -> Request:
    return Request(service="hospital", family_id="fam-1", child_id="child-1",
                   start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=5),
                   location={"hospital": "전남대학교병원", "ward": "5층"}, code="4821",
                   created_at=T0)


def offered(*carers: str) -> Request:
    req = new_request()
    req.make_offers(list(carers), T0, EXPIRES)
    return req


def assigned(winner: str = "a", *others: str) -> Request:
    req = offered(winner, *others)
    assert req.accept(winner, minutes(1)).won
    return req


def offer_states(req: Request) -> dict[str, OfferStatus]:
    return {o.carer_id: o.status for o in req.offers}


def last(req: Request) -> tuple[str, str]:
    entry = req.timeline[-1]
    return entry.type, entry.actor


# -- received → matching --------------------------------------------------------------------

def test_a_new_request() -> None:
    req = new_request()
    assert req.status == RequestStatus.RECEIVED
    assert req.open_code == "4821"
    assert (req.offers, req.assignments, req.timeline) == ([], [], [])
    assert req.carer_id is None and req.active_assignment is None
    assert req.is_open


def test_make_offers_starts_matching() -> None:
    req = new_request()
    made = req.make_offers(["a", "b"], minutes(0.5), EXPIRES)
    assert req.status == RequestStatus.MATCHING
    assert [o.carer_id for o in made] == ["a", "b"]
    assert req.offers == made
    assert all(o.is_open and o.request_id == req.id and o.expires_at == EXPIRES
               and o.created_at == minutes(0.5) for o in made)
    assert len({o.id for o in made}) == 2
    assert len(req.timeline) == 1
    entry = req.timeline[0]
    assert (entry.type, entry.actor, entry.at, entry.seq) == ("matching", "system",
                                                              minutes(0.5), 0)
    assert entry.detail == {"offers": 2, "carers": ["a", "b"]}
    assert req.updated_at == minutes(0.5)


def test_no_second_offer_for_a_carer() -> None:
    req = offered("a", "b")
    req.decline("b", minutes(1))
    made = req.make_offers(["b", "c", "a"], minutes(2), minutes(12))
    assert [o.carer_id for o in made] == ["c"]
    assert sorted(o.carer_id for o in req.offers) == ["a", "b", "c"]
    assert req.timeline[-1].detail == {"offers": 1, "carers": ["c"]}


def test_no_duplicate_offers_within_one_call() -> None:
    req = new_request()
    made = req.make_offers(["a", "a", "b"], T0, EXPIRES)
    assert [o.carer_id for o in made] == ["a", "b"]
    assert len(req.offers) == 2


def test_offers_only_while_matching() -> None:
    req = assigned("a")
    with pytest.raises(Conflict) as caught:
        req.make_offers(["z"], minutes(2), minutes(12))
    assert caught.value.code == "not_matching"
    assert "z" not in req.offered_carer_ids()


# -- accept ---------------------------------------------------------------------------------

def test_first_yes_wins() -> None:
    req = offered("a", "b", "c")
    result = req.accept("b", minutes(3))
    assert result.won is True and result.reason == ""
    assignment = result.assignment
    assert assignment is not None
    assert (assignment.carer_id, assignment.request_id, assignment.active) == ("b", req.id, True)
    assert (assignment.start, assignment.end, assignment.created_at) == (req.start, req.end,
                                                                         minutes(3))
    assert req.assignments == [assignment]
    assert req.active_assignment is assignment
    assert req.status == RequestStatus.ASSIGNED
    assert req.carer_id == "b"
    assert offer_states(req) == {"a": OfferStatus.RESCINDED, "b": OfferStatus.ACCEPTED,
                                 "c": OfferStatus.RESCINDED}
    accepted = next(o for o in req.offers if o.carer_id == "b")
    assert accepted.answered_at == minutes(3)
    assert last(req) == ("assigned", "carer")
    assert req.timeline[-1].detail == {"carer_id": "b", "offer_id": accepted.id}
    assert req.open_code == "4821"


def test_second_yes_loses_and_changes_nothing() -> None:
    req = assigned("a", "b")
    first = req.active_assignment
    result = req.accept("b", minutes(2))
    assert result == Acceptance(won=False, reason="already_filled")
    assert result.assignment is None
    assert req.status == RequestStatus.ASSIGNED
    assert req.carer_id == "a"
    assert req.assignments == [first] and first is not None and first.active
    assert offer_states(req) == {"a": OfferStatus.ACCEPTED, "b": OfferStatus.RESCINDED}
    assert last(req) == ("late_accept", "carer")


def test_accept_without_an_offer() -> None:
    req = offered("a")
    result = req.accept("stranger", minutes(1))
    assert result == Acceptance(won=False, reason="no_open_offer")
    assert req.status == RequestStatus.MATCHING
    assert req.assignments == [] and req.carer_id is None
    assert offer_states(req) == {"a": OfferStatus.OPEN}


@pytest.mark.parametrize(("at", "won"), [
    (EXPIRES - timedelta(seconds=1), True),
    (EXPIRES, False),
    (EXPIRES + timedelta(minutes=5), False),
])
def test_accept_an_expired_offer(at: datetime, won: bool) -> None:
    req = offered("a", "b")
    result = req.accept("a", at)
    assert result.won is won
    if won:
        assert req.status == RequestStatus.ASSIGNED
        return
    assert result == Acceptance(won=False, reason="offer_expired")
    assert req.status == RequestStatus.MATCHING
    assert req.assignments == []
    assert offer_states(req) == {"a": OfferStatus.EXPIRED, "b": OfferStatus.OPEN}
    # trying again does not revive it
    assert req.accept("a", at).reason == "no_open_offer"


def test_escalated_request_can_still_be_assigned() -> None:
    req = offered("a")
    req.status = RequestStatus.ESCALATED  # set by the SLA handler, outside the aggregate
    req.make_offers(["b"], minutes(15), minutes(25))
    assert req.status == RequestStatus.ESCALATED
    result = req.accept("b", minutes(16))
    assert result.won
    assert req.status == RequestStatus.ASSIGNED and req.carer_id == "b"


def test_accept_after_cancel_loses() -> None:
    req = offered("a")
    req.cancel(minutes(1), Actor.PARENT, "child discharged")
    result = req.accept("a", minutes(2))
    assert result.won is False and result.assignment is None
    assert req.status == RequestStatus.CANCELLED
    assert req.assignments == []


# -- decline --------------------------------------------------------------------------------

def test_decline() -> None:
    req = offered("a", "b")
    assert req.decline("a", minutes(2)) is True
    assert offer_states(req) == {"a": OfferStatus.DECLINED, "b": OfferStatus.OPEN}
    assert req.offers[0].answered_at == minutes(2)
    assert req.status == RequestStatus.MATCHING
    assert last(req) == ("offer_declined", "carer")
    assert req.timeline[-1].detail == {"carer_id": "a"}
    entries = len(req.timeline)
    assert req.decline("a", minutes(3)) is False          # already answered
    assert req.decline("stranger", minutes(3)) is False   # never offered
    assert len(req.timeline) == entries
    assert req.accept("a", minutes(4)).reason == "no_open_offer"
    assert req.accept("b", minutes(4)).won


def test_decline_after_assignment_is_a_no_op() -> None:
    req = assigned("a", "b")
    assert req.decline("b", minutes(2)) is False
    assert req.decline("a", minutes(2)) is False
    assert req.status == RequestStatus.ASSIGNED and req.carer_id == "a"
    assert offer_states(req) == {"a": OfferStatus.ACCEPTED, "b": OfferStatus.RESCINDED}


# -- arrived and done -----------------------------------------------------------------------

def test_arrived_and_done() -> None:
    req = assigned("a", "b")
    req.mark_arrived("a", minutes(100))
    assert req.status == RequestStatus.IN_PROGRESS
    assert last(req) == ("arrived", "carer")
    assert req.open_code == "4821"
    req.mark_done("a", minutes(300))
    assert req.status == RequestStatus.COMPLETED
    assert req.open_code is None and req.code == "4821"
    assert last(req) == ("completed", "carer")
    assert req.timeline[-1].at == minutes(300) and req.updated_at == minutes(300)
    assert not req.is_open


@pytest.mark.parametrize("setup", ["received", "matching", "other_carer", "in_progress",
                                   "completed", "cancelled"])
def test_arrived_only_from_assigned_by_the_carer(setup: str) -> None:
    req, who = {
        "received": (new_request(), "a"),
        "matching": (offered("a"), "a"),
        "other_carer": (assigned("a", "b"), "b"),
        "in_progress": (assigned("a"), "a"),
        "completed": (assigned("a"), "a"),
        "cancelled": (offered("a"), "a"),
    }[setup]
    if setup == "in_progress":
        req.mark_arrived("a", minutes(2))
    elif setup == "completed":
        req.mark_done("a", minutes(2))
    elif setup == "cancelled":
        req.cancel(minutes(2), Actor.PARENT, "no longer needed")
    status, entries = req.status, len(req.timeline)
    with pytest.raises(Conflict) as caught:
        req.mark_arrived(who, minutes(5))
    assert caught.value.code == "not_assigned_to_you"
    assert req.status == status and len(req.timeline) == entries


@pytest.mark.parametrize("setup", ["matching", "other_carer", "completed", "cancelled"])
def test_done_only_by_the_assigned_carer(setup: str) -> None:
    req, who = {
        "matching": (offered("a"), "a"),
        "other_carer": (assigned("a", "b"), "b"),
        "completed": (assigned("a"), "a"),
        "cancelled": (assigned("a"), "a"),
    }[setup]
    if setup == "completed":
        req.mark_done("a", minutes(2))
    elif setup == "cancelled":
        req.cancel(minutes(2), Actor.DISPATCHER, "duplicate")
    status, code = req.status, req.open_code
    with pytest.raises(Conflict) as caught:
        req.mark_done(who, minutes(5))
    assert caught.value.code == "not_assigned_to_you"
    assert (req.status, req.open_code) == (status, code)


def test_done_straight_from_assigned() -> None:
    req = assigned("a")
    req.mark_done("a", minutes(200))
    assert req.status == RequestStatus.COMPLETED and req.open_code is None


# -- cancel ---------------------------------------------------------------------------------

@pytest.mark.parametrize("setup", ["received", "matching", "assigned", "escalated"])
def test_cancel_open_request(setup: str) -> None:
    req = {"received": new_request, "matching": lambda: offered("a", "b"),
           "assigned": lambda: assigned("a", "b", "c"),
           "escalated": lambda: offered("a", "b")}[setup]()
    if setup == "escalated":
        req.status = RequestStatus.ESCALATED
    before = offer_states(req)
    req.cancel(minutes(30), Actor.PARENT, "child discharged")
    assert req.status == RequestStatus.CANCELLED
    assert req.open_code is None
    assert not any(o.is_open for o in req.offers)
    assert req.active_assignment is None
    assert all(not a.active for a in req.assignments)
    assert len(req.assignments) == (1 if setup == "assigned" else 0)
    # answered offers keep their answer; only open ones are rescinded
    for carer_id, state in offer_states(req).items():
        expected = OfferStatus.RESCINDED if before[carer_id] == OfferStatus.OPEN \
            else before[carer_id]
        assert state == expected
    entry = req.timeline[-1]
    assert (entry.type, entry.actor, entry.at) == ("cancelled", "parent", minutes(30))
    assert entry.detail == {"reason": "child discharged"}
    assert not req.is_open


@pytest.mark.parametrize("setup", ["completed", "cancelled", "in_progress"])
def test_cancel_refused(setup: str) -> None:
    req = assigned("a")
    if setup == "completed":
        req.mark_done("a", minutes(2))
    elif setup == "cancelled":
        req.cancel(minutes(2), Actor.DISPATCHER, "first")
    else:
        req.mark_arrived("a", minutes(2))
    status, entries = req.status, len(req.timeline)
    assignment_active = [a.active for a in req.assignments]
    with pytest.raises(Conflict) as caught:
        req.cancel(minutes(5), Actor.PARENT, "second")
    assert caught.value.code == "not_cancellable"
    assert req.status == status and len(req.timeline) == entries
    assert [a.active for a in req.assignments] == assignment_active


# -- timeline -------------------------------------------------------------------------------

def test_timeline_of_a_whole_job() -> None:
    req = new_request()
    req.make_offers(["a", "b"], minutes(0), EXPIRES)
    req.decline("b", minutes(1))
    req.accept("a", minutes(2))
    req.accept("b", minutes(3))
    req.mark_arrived("a", minutes(120))
    req.mark_done("a", minutes(300))
    assert [(e.type, e.actor) for e in req.timeline] == [
        ("matching", "system"), ("offer_declined", "carer"), ("assigned", "carer"),
        ("late_accept", "carer"), ("arrived", "carer"), ("completed", "carer")]
    assert [e.seq for e in req.timeline] == list(range(6))
    assert [e.at for e in req.timeline] == [minutes(m) for m in (0, 1, 2, 3, 120, 300)]
    assert all(e.request_id == req.id for e in req.timeline)
    assert len({e.id for e in req.timeline}) == 6


def test_cancel_records_the_actor() -> None:
    req = offered("a")
    req.cancel(minutes(1), Actor.DISPATCHER, "duplicate")
    assert last(req) == ("cancelled", "dispatcher")


# -- property: whatever carers answer, one job goes to at most one carer ---------------------

CARERS = ["a", "b", "c", "d", "e"]
OFFER_TTL = timedelta(minutes=10)
step = st.one_of(
    st.tuples(st.just("accept"), st.sampled_from(CARERS), st.integers(0, 6)),
    st.tuples(st.just("decline"), st.sampled_from(CARERS), st.integers(0, 6)),
    st.tuples(st.just("offer"), st.lists(st.sampled_from(CARERS), max_size=3),
              st.integers(0, 6)),
)


@settings(max_examples=300, deadline=None)
@given(first=st.lists(st.sampled_from(CARERS), min_size=1, max_size=5),
       steps=st.lists(step, max_size=25))
def test_at_most_one_carer_gets_the_job(first: list[str], steps: list[tuple]) -> None:
    req = new_request()
    now = T0
    req.make_offers(first, now, now + OFFER_TTL)
    # a plain reference model of the rules
    open_until: dict[str, datetime] = {c: now + OFFER_TTL for c in dict.fromkeys(first)}
    ever_offered = set(first)
    winner: str | None = None

    for op, who, advance in steps:
        now += timedelta(minutes=advance)
        if op == "offer":
            if winner is not None:
                with pytest.raises(Conflict):
                    req.make_offers(who, now, now + OFFER_TTL)
            else:
                req.make_offers(who, now, now + OFFER_TTL)
                for c in who:
                    if c not in ever_offered:
                        ever_offered.add(c)
                        open_until[c] = now + OFFER_TTL
        elif op == "decline":
            assert req.decline(who, now) is (who in open_until)
            open_until.pop(who, None)
        else:
            result = req.accept(who, now)
            if winner is not None:
                assert result == Acceptance(won=False, reason="already_filled")
            elif who not in open_until:
                assert result == Acceptance(won=False, reason="no_open_offer")
            elif now >= open_until[who]:
                assert result == Acceptance(won=False, reason="offer_expired")
                del open_until[who]
            else:
                assert result.won and result.assignment is not None
                winner = who
                open_until.clear()

        active = [a for a in req.assignments if a.active]
        assert len(active) <= 1
        assert len(req.assignments) <= 1
        assert (req.status == RequestStatus.ASSIGNED) == (req.active_assignment is not None)
        assert req.status == (RequestStatus.ASSIGNED if winner else RequestStatus.MATCHING)
        assert req.carer_id == winner
        assert sorted(o.carer_id for o in req.offers) == sorted(ever_offered)
        assert {o.carer_id for o in req.offers if o.is_open} == set(open_until)
        accepted = [o.carer_id for o in req.offers if o.status == OfferStatus.ACCEPTED]
        assert accepted == ([winner] if winner else [])
        if winner:
            assert active[0].carer_id == winner
