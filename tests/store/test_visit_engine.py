"""The visit-mode engine on SQLite and PostgreSQL, driven by the test clock: offer strategies,
expiry and SLA sweeps, first YES and rescinds, withdrawal, replays, several sweepers at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select

from dispatch import commands as c
from dispatch import orm
from dispatch.bootstrap import bootstrap
from dispatch.db import make_engine
from dispatch.domain.policy import OfferRules, load_policies
from dispatch.messagebus import MessageBus
from notifiers import grammar, intake_grammar, templates
from tests.helpers import NOW, Clock, RecordingSms, add_family

HOSPITAL_AT = (35.1420, 126.9210)  # 전남대학교병원
DISPATCHER = "+821000000001"
Strategy = Literal["broadcast", "waves", "sequential"]


def _bus(url: str, clock: Clock, *, strategy: Strategy = "waves", wave_size: int = 3,
         timeout_s: int = 600, escalate_after_s: int = 3600, sms: Any = None,
         dispatcher_phone: str | None = DISPATCHER) -> MessageBus:
    policies = load_policies()
    hospital = policies["hospital"].model_copy(update={
        "escalate_after_s": escalate_after_s,
        "offers": OfferRules(strategy=strategy, wave_size=wave_size, timeout_s=timeout_s)})
    return bootstrap(make_engine(url), {**policies, "hospital": hospital},
                     sms=sms or RecordingSms(), templates=templates.render,
                     grammar=grammar.parse, intake=intake_grammar.parse_request, clock=clock,
                     dispatcher_phone=dispatcher_phone)


def _carers(bus: MessageBus, n: int, first_phone: int = 10_000_000) -> list[Any]:
    """Carers living ever further north of the hospital: c0 nearest, so the rank is known."""
    carers = []
    for i in range(n):
        carer = bus.handle(c.RegisterCarer(
            name=f"김돌봄{i}", phone=f"+8210{first_phone + i:08d}", districts=["광산구"],
            skills=["hospital"], home_lat=HOSPITAL_AT[0] + 0.01 * (i + 1),
            home_lon=HOSPITAL_AT[1]))
        bus.handle(c.SetDuty(carer_id=carer.id, on_duty=True))
        carers.append(carer)
    return carers


def _request(bus: MessageBus, family: Any, *, start: datetime = NOW + timedelta(hours=1),
             hours: float = 4, at: tuple[float, float] = HOSPITAL_AT) -> Any:
    request, _ = bus.handle(c.SubmitRequest(
        service="hospital", family_id=family.id, child_id=family.children[0].id, start=start,
        end=start + timedelta(hours=hours),
        location={"hospital": "전남대병원", "ward": "소아병동 5층", "lat": at[0], "lon": at[1]}))
    return request


def _start(bus: MessageBus, request: Any) -> int:
    return int(bus.handle(c.StartMatching(request_id=request.id, event_id="m-" + request.id)))


def _offers(url: str, request: Any) -> dict[str, str]:
    o = orm.offers.c
    with make_engine(url).connect() as conn:
        return dict(conn.execute(select(o.carer_id, o.status).where(
            o.request_id == request.id)).all())


def _open(url: str, request: Any) -> set[str]:
    return {k for k, v in _offers(url, request).items() if v == "open"}


def _status(url: str, request: Any) -> str:
    with make_engine(url).connect() as conn:
        return str(conn.scalar(select(orm.requests.c.status).where(
            orm.requests.c.id == request.id)))


def _notes(url: str, kind: str, recipient: str | None = None) -> list[dict[str, Any]]:
    n = orm.notifications.c
    stmt = select(orm.notifications).where(n.kind == kind).order_by(n.created_at, n.id)
    if recipient is not None:
        stmt = stmt.where(n.recipient == recipient)
    with make_engine(url).connect() as conn:
        return [dict(row) for row in conn.execute(stmt).mappings()]


def _timeline(url: str, request: Any) -> list[tuple[str, str, dict[str, Any]]]:
    t = orm.timeline.c
    with make_engine(url).connect() as conn:
        return [(row.type, row.actor, row.detail) for row in conn.execute(
            select(t.type, t.actor, t.detail).where(t.request_id == request.id)
            .order_by(t.at, t.seq))]


def _counts(url: str) -> tuple[int, int, int, int]:
    """Rows that a replay must not add to: notifications, outbox, offers, timeline."""
    with make_engine(url).connect() as conn:
        return tuple(int(conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[return-value]
                     for table in (orm.notifications, orm.outbox, orm.offers, orm.timeline))


def _sms(bus: MessageBus, url: str, phone: str, body: str, sid: str) -> str:
    bus.handle(c.ReceiveSms(message_sid=sid, from_phone=phone, to_phone="+15005550006",
                            body=body))
    with make_engine(url).connect() as conn:
        inbound_id = conn.scalar(select(orm.inbound_sms.c.id).where(
            orm.inbound_sms.c.message_sid == sid))
    return str(bus.handle(c.HandleInboundSms(inbound_id=inbound_id, event_id="evt-" + sid)))


def _deliver(bus: MessageBus, url: str, kind: str) -> list[str]:
    return [str(bus.handle(c.DeliverNotification(notification_id=str(note["id"]))))
            for note in _notes(url, kind) if note["status"] == "pending"]


# -- strategies -----------------------------------------------------------------------------

def test_waves_expire_and_widen_and_a_restarted_worker_picks_them_up(db_url: str) -> None:
    clock = Clock()
    bus = _bus(db_url, clock, wave_size=2)
    carers = _carers(bus, 5)
    ids = [k.id for k in carers]
    request = _request(bus, add_family(bus))
    assert _start(bus, request) == 2
    assert _open(db_url, request) == {ids[0], ids[1]}  # the two nearest
    clock.advance(seconds=599)
    assert bus.handle(c.SweepDeadlines())["requests"] == 0
    assert _open(db_url, request) == {ids[0], ids[1]}

    # The worker that made the offers is gone; a new one, with the same clock, sweeps.
    clock.advance(seconds=1)
    restarted = _bus(db_url, clock, wave_size=2)
    assert restarted.handle(c.SweepDeadlines()) == {"requests": 1, "expired": 2, "offered": 2,
                                                     "escalated": 0}
    assert _offers(db_url, request) == {ids[0]: "expired", ids[1]: "expired",
                                        ids[2]: "open", ids[3]: "open"}
    expired = [d["carer_id"] for t, a, d in _timeline(db_url, request) if t == "offer_expired"]
    assert sorted(expired) == sorted(ids[:2])
    assert {n["recipient"] for n in _notes(db_url, "offer")} == {k.phone for k in carers[:4]}

    clock.advance(seconds=600)
    assert restarted.handle(c.SweepDeadlines())["offered"] == 1  # the last, smaller wave
    assert _open(db_url, request) == {ids[4]}
    clock.advance(seconds=600)
    # Nobody left and nothing open: straight to a dispatcher, well before the SLA.
    assert restarted.handle(c.SweepDeadlines())["expired"] == 1
    assert _status(db_url, request) == "escalated"
    assert _notes(db_url, "dispatcher_escalation")[0]["params"]["reason"] == "no_candidates"


def test_a_wave_that_all_say_no_moves_on_at_once(db_url: str) -> None:
    clock = Clock()
    bus = _bus(db_url, clock, wave_size=2)
    carers = _carers(bus, 4)
    request = _request(bus, add_family(bus))
    _start(bus, request)
    assert _sms(bus, db_url, carers[0].phone, f"NO {request.code}", "SMn0") == "declined"
    assert _open(db_url, request) == {carers[1].id}  # the wave is not over yet
    assert _sms(bus, db_url, carers[1].phone, f"거절 {request.code}", "SMn1") == "declined"
    assert _open(db_url, request) == {carers[2].id, carers[3].id}
    assert len(_notes(db_url, "declined_ack")) == 2


def test_sequential_moves_on_after_a_no_and_after_expiry(db_url: str) -> None:
    clock = Clock()
    bus = _bus(db_url, clock, strategy="sequential", wave_size=5, timeout_s=300)
    carers = _carers(bus, 4)
    ids = [k.id for k in carers]
    request = _request(bus, add_family(bus))
    assert _start(bus, request) == 1
    assert _open(db_url, request) == {ids[0]}
    clock.advance(seconds=60)
    assert _sms(bus, db_url, carers[0].phone, f"NO {request.code}", "SMs0") == "declined"
    assert _open(db_url, request) == {ids[1]}  # at once, no waiting for the sweep
    clock.advance(seconds=299)
    assert bus.handle(c.SweepDeadlines())["requests"] == 0
    clock.advance(seconds=1)
    assert bus.handle(c.SweepDeadlines())["offered"] == 1
    assert _offers(db_url, request) == {ids[0]: "declined", ids[1]: "expired", ids[2]: "open"}
    # A NO from someone who was never asked, or asked before, changes nothing.
    assert _sms(bus, db_url, carers[0].phone, f"NO {request.code}", "SMs1") == "no_open_offer"
    assert _sms(bus, db_url, carers[3].phone, f"NO {request.code}", "SMs2") == "no_open_offer"
    assert _open(db_url, request) == {ids[2]}
    offer = _notes(db_url, "offer", carers[2].phone)[0]
    assert offer["validity_s"] == 300


def test_broadcast_offers_everyone_at_once(db_url: str) -> None:
    bus = _bus(db_url, Clock(), strategy="broadcast", wave_size=2)
    carers = _carers(bus, 7)
    request = _request(bus, add_family(bus))
    assert _start(bus, request) == 7
    assert _open(db_url, request) == {k.id for k in carers}


# -- SLA ------------------------------------------------------------------------------------

def test_sla_escalation_tells_parent_and_dispatcher_and_matching_goes_on(db_url: str) -> None:
    clock = Clock()
    bus = _bus(db_url, clock, wave_size=1, timeout_s=600, escalate_after_s=900)
    carers = _carers(bus, 3)
    family = add_family(bus)
    request = _request(bus, family)
    _start(bus, request)
    clock.advance(seconds=600)
    assert bus.handle(c.SweepDeadlines())["offered"] == 1
    clock.advance(seconds=299)
    assert bus.handle(c.SweepDeadlines())["requests"] == 0
    assert _status(db_url, request) == "matching"
    clock.advance(seconds=1)
    assert bus.handle(c.SweepDeadlines()) == {"requests": 1, "expired": 0, "offered": 0,
                                              "escalated": 1}
    assert _status(db_url, request) == "escalated"
    [parent] = _notes(db_url, "escalated")
    assert parent["recipient"] == family.guardian_phone
    assert "못 찾았어요" in templates.render("escalated", parent["params"])
    [dispatcher] = _notes(db_url, "dispatcher_escalation")
    assert dispatcher["recipient"] == DISPATCHER and dispatcher["params"]["reason"] == "sla"
    with make_engine(db_url).connect() as conn:
        assert "request.escalated" in set(conn.scalars(select(orm.outbox.c.type)))
    assert ("escalated", "system", {"reason": "sla"}) in _timeline(db_url, request)

    # Matching goes on while escalated: the wave still widens, and a YES still assigns.
    clock.advance(seconds=300)  # the second offer (made at 600 s) runs out at 1200 s
    assert bus.handle(c.SweepDeadlines())["offered"] == 1
    assert _open(db_url, request) == {carers[2].id}
    assert _status(db_url, request) == "escalated"
    assert _sms(bus, db_url, carers[2].phone, f"네 {request.code}", "SMy") == "assigned"
    assert _status(db_url, request) == "assigned"
    assert _notes(db_url, "assigned")[0]["recipient"] == family.guardian_phone
    # Assigned: nothing more is due, and the parent is not told twice.
    clock.advance(seconds=3600)
    assert bus.handle(c.SweepDeadlines())["requests"] == 0
    assert len(_notes(db_url, "escalated")) == 1


def test_a_request_past_its_sla_with_offers_running_out_escalates_and_moves_on(
        db_url: str) -> None:
    clock = Clock()
    bus = _bus(db_url, clock, wave_size=1, timeout_s=900, escalate_after_s=900)
    carers = _carers(bus, 2)
    request = _request(bus, add_family(bus))
    _start(bus, request)
    clock.advance(seconds=900)
    assert bus.handle(c.SweepDeadlines()) == {"requests": 1, "expired": 1, "offered": 1,
                                              "escalated": 1}
    assert _open(db_url, request) == {carers[1].id}
    assert _status(db_url, request) == "escalated"


def test_oldest_request_is_swept_first(db_url: str) -> None:
    clock = Clock()
    bus = _bus(db_url, clock, wave_size=1)
    _carers(bus, 4)
    older = _request(bus, add_family(bus, phone="+821099990001"))
    clock.advance(seconds=30)
    newer = _request(bus, add_family(bus, phone="+821099990002"),
                     start=NOW + timedelta(hours=6), hours=2)
    # Started in the other order: the sweep still goes by when the request was made.
    _start(bus, newer)
    clock.advance(seconds=5)
    _start(bus, older)
    clock.advance(seconds=700)
    assert bus.handle(c.SweepDeadlines(limit=1))["requests"] == 1
    assert len(_offers(db_url, older)) == 2 and len(_offers(db_url, newer)) == 1
    assert bus.handle(c.SweepDeadlines(limit=1))["requests"] == 1
    assert len(_offers(db_url, newer)) == 2


# -- first YES wins, the others are told ---------------------------------------------------

def test_yes_rescinds_every_other_open_offer_by_sms(db_url: str) -> None:
    clock = Clock()
    sms = RecordingSms()
    bus = _bus(db_url, clock, strategy="broadcast", sms=sms)
    carers = _carers(bus, 4)
    request = _request(bus, add_family(bus))
    _start(bus, request)
    _deliver(bus, db_url, "offer")  # every offer is on a phone
    assert _sms(bus, db_url, carers[3].phone, f"NO {request.code}", "SMr0") == "declined"
    clock.advance(seconds=60)
    assert _sms(bus, db_url, carers[1].phone, f"YES {request.code}", "SMr1") == "assigned"
    told = _notes(db_url, "offer_rescinded")
    assert sorted(n["recipient"] for n in told) == sorted([carers[0].phone, carers[2].phone])
    assert all(n["params"]["code"] == request.code for n in told)
    assert _offers(db_url, request) == {carers[0].id: "rescinded", carers[1].id: "accepted",
                                        carers[2].id: "rescinded", carers[3].id: "declined"}
    [(_, actor, detail)] = [e for e in _timeline(db_url, request) if e[0] == "offers_rescinded"]
    assert actor == "system" and detail["reason"] == "filled"
    assert sorted(detail["carers"]) == sorted([carers[0].id, carers[2].id])
    assert _deliver(bus, db_url, "offer_rescinded") == ["sent", "sent"]
    bodies = [body for to, body in sms.sent if to == carers[0].phone]
    assert len(bodies) == 2 and "마감" in bodies[1] and request.code in bodies[1]
    # A late YES is thanked, and told nothing more.
    assert _sms(bus, db_url, carers[0].phone, f"YES {request.code}", "SMr2") == "already_filled"
    assert len(_notes(db_url, "offer_rescinded")) == 2


def test_an_offer_not_yet_sent_when_the_job_closes_is_never_sent(db_url: str) -> None:
    sms = RecordingSms()
    bus = _bus(db_url, Clock(), strategy="broadcast", sms=sms)
    carers = _carers(bus, 3)
    request = _request(bus, add_family(bus))
    _start(bus, request)
    first = _notes(db_url, "offer", carers[0].phone)[0]
    assert bus.handle(c.DeliverNotification(notification_id=str(first["id"]))) == "sent"
    assert _sms(bus, db_url, carers[0].phone, f"YES {request.code}", "SMq") == "assigned"
    # The other two offers were still queued (rate limit): they go nowhere, and so do the
    # texts that would have withdrawn them.
    assert _deliver(bus, db_url, "offer") == ["closed", "closed"]
    assert _deliver(bus, db_url, "offer_rescinded") == ["closed", "closed"]
    assert [to for to, _ in sms.sent] == [carers[0].phone]


def test_cancelling_rescinds_open_offers_by_sms(db_url: str) -> None:
    bus = _bus(db_url, Clock(), wave_size=2)
    carers = _carers(bus, 3)
    family = add_family(bus)
    request = _request(bus, family)
    _start(bus, request)
    assert _sms(bus, db_url, family.guardian_phone, "취소", "SMc") == "cancelled"
    assert _status(db_url, request) == "cancelled"
    assert sorted(n["recipient"] for n in _notes(db_url, "offer_rescinded")) == sorted(
        [carers[0].phone, carers[1].phone])
    bus.handle(c.CancelRequest(request_id=request.id, reason="again"))
    assert len(_notes(db_url, "offer_rescinded")) == 2


# -- withdrawal -----------------------------------------------------------------------------

def test_withdrawal_rematches_without_that_carer_and_tells_the_parent(db_url: str) -> None:
    clock = Clock()
    bus = _bus(db_url, clock, wave_size=2)
    carers = _carers(bus, 4)
    ids = [k.id for k in carers]
    family = add_family(bus)
    request = _request(bus, family)
    _start(bus, request)
    assert _sms(bus, db_url, carers[0].phone, f"YES {request.code}", "SMw0") == "assigned"
    clock.advance(minutes=5)
    assert _sms(bus, db_url, carers[0].phone, f"거절 {request.code}", "SMw1") == "withdrawn"
    assert _status(db_url, request) == "matching"
    # carer 1 had this job's offer (rescinded at the YES): a new wave is carers 2 and 3.
    assert _offers(db_url, request) == {ids[0]: "withdrawn", ids[1]: "rescinded",
                                        ids[2]: "open", ids[3]: "open"}
    with make_engine(db_url).connect() as conn:
        active = conn.execute(select(orm.assignments.c.carer_id, orm.assignments.c.active)
                              .where(orm.assignments.c.request_id == request.id)).all()
        carer_id = conn.scalar(select(orm.requests.c.carer_id).where(
            orm.requests.c.id == request.id))
    assert active == [(ids[0], False)] and carer_id is None
    assert ("withdrawn", "carer") in [(t, a) for t, a, _ in _timeline(db_url, request)]
    [told] = _notes(db_url, "carer_withdrew")
    assert told["recipient"] == family.guardian_phone
    assert "다시 찾고" in templates.render("carer_withdrew", told["params"])
    assert _notes(db_url, "withdrawn_ack")[0]["recipient"] == carers[0].phone
    # The carer who withdrew can't take it back, and is never offered it again.
    assert _sms(bus, db_url, carers[0].phone, f"YES {request.code}", "SMw2") == "no_open_offer"
    clock.advance(seconds=600)
    bus.handle(c.SweepDeadlines())
    assert ids[0] not in _open(db_url, request)
    assert _status(db_url, request) == "escalated"  # nobody else left
    # Someone new comes on duty; a dispatcher's re-offer reaches them, and their YES assigns.
    late = _carers(bus, 1, first_phone=20_000_000)[0]
    with bus.uow_factory() as uow:
        from dispatch.handlers.matching import offer_next

        req = uow.requests.get(request.id, for_update=True)
        assert req is not None
        offer_next(uow, req, bus.dependencies["policies"]["hospital"], clock(), None)
        uow.commit()
    assert _sms(bus, db_url, late.phone, f"YES {request.code}", "SMw3") == "assigned"
    with make_engine(db_url).connect() as conn:
        assert conn.execute(select(orm.assignments.c.carer_id).where(
            orm.assignments.c.request_id == request.id,
            orm.assignments.c.active.is_(True))).scalars().all() == [late.id]


def test_withdrawal_after_the_sla_escalates_again_and_says_so_again(db_url: str) -> None:
    clock = Clock()
    bus = _bus(db_url, clock, wave_size=1, escalate_after_s=900)
    carers = _carers(bus, 3)
    family = add_family(bus)
    request = _request(bus, family)
    _start(bus, request)
    clock.advance(seconds=900)  # the first offer ran out at 600 s: now carer 1's turn
    assert bus.handle(c.SweepDeadlines())["escalated"] == 1
    assert _sms(bus, db_url, carers[1].phone, f"YES {request.code}", "SMe0") == "assigned"
    assert _sms(bus, db_url, carers[1].phone, f"NO {request.code}", "SMe1") == "withdrawn"
    assert _status(db_url, request) == "matching"
    assert _open(db_url, request) == {carers[2].id}
    assert bus.handle(c.SweepDeadlines())["escalated"] == 1  # long past its SLA
    assert [n["recipient"] for n in _notes(db_url, "escalated")] == [family.guardian_phone] * 2
    assert len(_notes(db_url, "dispatcher_escalation")) == 2


def test_arrived_carer_cannot_withdraw_by_sms(db_url: str) -> None:
    bus = _bus(db_url, Clock(), wave_size=1)
    carers = _carers(bus, 2)
    request = _request(bus, add_family(bus))
    _start(bus, request)
    assert _sms(bus, db_url, carers[0].phone, f"YES {request.code}", "SMa0") == "assigned"
    assert _sms(bus, db_url, carers[0].phone, f"도착 {request.code}", "SMa1") == "arrived"
    assert _sms(bus, db_url, carers[0].phone, f"NO {request.code}", "SMa2") == "no_open_offer"
    assert _status(db_url, request) == "in_progress"


# -- ranking from the previous job ----------------------------------------------------------

def test_a_carer_finishing_nearby_today_is_asked_first(db_url: str) -> None:
    bus = _bus(db_url, Clock(), wave_size=1)
    far = bus.handle(c.RegisterCarer(name="멀리", phone="+821020000001", districts=["광산구"],
                                     skills=["hospital"], home_lat=35.30, home_lon=126.92))
    middle = bus.handle(c.RegisterCarer(name="중간", phone="+821020000002",
                                        districts=["광산구"], skills=["hospital"],
                                        home_lat=35.17, home_lon=126.92))
    for carer in (far, middle):
        bus.handle(c.SetDuty(carer_id=carer.id, on_duty=True))
    morning = _request(bus, add_family(bus, phone="+821099990001"), hours=2)
    bus.handle(c.AssignCarer(request_id=morning.id, carer_id=far.id, dispatcher="test"))
    # The morning job ends at 13:00 next to the hospital; the afternoon one starts at 14:00.
    afternoon = _request(bus, add_family(bus, phone="+821099990002"),
                         start=NOW + timedelta(hours=4), hours=2)
    _start(bus, afternoon)
    assert _open(db_url, afternoon) == {far.id}
    # Without that job (another day), home counts: the middle carer is nearer.
    tomorrow = _request(bus, add_family(bus, phone="+821099990003"),
                        start=NOW + timedelta(days=1, hours=1), hours=2)
    _start(bus, tomorrow)
    assert _open(db_url, tomorrow) == {middle.id}


# -- replays and several sweepers ---------------------------------------------------------

def test_replays_change_nothing_and_send_nothing(db_url: str) -> None:
    clock = Clock()
    bus = _bus(db_url, clock, wave_size=1, escalate_after_s=600)
    carers = _carers(bus, 3)
    request = _request(bus, add_family(bus))
    _start(bus, request)
    clock.advance(seconds=600)
    assert bus.handle(c.SweepDeadlines())["requests"] == 1
    before = _counts(db_url)
    assert bus.handle(c.SweepDeadlines()) == {"requests": 0, "expired": 0, "offered": 0,
                                              "escalated": 0}
    assert _counts(db_url) == before
    # The same NO delivered twice by Kafka: applied once.
    assert _sms(bus, db_url, carers[1].phone, f"NO {request.code}", "SMp0") == "declined"
    before = _counts(db_url)
    with make_engine(db_url).connect() as conn:
        inbound_id = conn.scalar(select(orm.inbound_sms.c.id).where(
            orm.inbound_sms.c.message_sid == "SMp0"))
    assert bus.handle(c.HandleInboundSms(inbound_id=inbound_id, event_id="evt-SMp0")) \
        == "duplicate"
    assert bus.handle(c.HandleInboundSms(inbound_id=inbound_id, event_id="other")) \
        == "duplicate"
    assert _counts(db_url) == before
    # The same YES and the same withdrawal twice: one assignment, one withdrawal, one text.
    assert _sms(bus, db_url, carers[2].phone, f"YES {request.code}", "SMp1") == "assigned"
    assert _sms(bus, db_url, carers[2].phone, f"NO {request.code}", "SMp2") == "withdrawn"
    before = _counts(db_url)
    for sid in ("SMp1", "SMp2"):
        with make_engine(db_url).connect() as conn:
            inbound_id = conn.scalar(select(orm.inbound_sms.c.id).where(
                orm.inbound_sms.c.message_sid == sid))
        assert bus.handle(c.HandleInboundSms(inbound_id=inbound_id, event_id="evt-" + sid)) \
            == "duplicate"
    assert bus.handle(c.SweepDeadlines())["requests"] == 0
    assert _counts(db_url) == before
    assert len(_notes(db_url, "carer_withdrew")) == 1


def test_several_workers_sweeping_at_once_handle_each_deadline_once(db_url: str) -> None:
    clock = Clock()
    buses = [_bus(db_url, clock, wave_size=2, escalate_after_s=600) for _ in range(4)]
    bus = buses[0]
    _carers(bus, 30)
    requests = [_request(bus, add_family(bus, phone=f"+8210999{i:05d}"),
                         start=NOW + timedelta(hours=1, minutes=i)) for i in range(6)]
    for request in requests:
        _start(bus, request)
    clock.advance(seconds=600)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda b: b.handle(c.SweepDeadlines()), buses))
    assert sum(r["expired"] for r in results) == 12
    assert sum(r["escalated"] for r in results) == 6
    assert sum(r["requests"] for r in results) == 6
    for request in requests:
        offers = _offers(db_url, request)
        assert sorted(offers.values()) == ["expired", "expired", "open", "open"]
    assert len(_notes(db_url, "escalated")) == 6
    assert len(_notes(db_url, "dispatcher_escalation")) == 6
    assert len(_notes(db_url, "offer")) == 24
