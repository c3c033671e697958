"""The store on SQLite and PostgreSQL: handlers, unit of work, outbox, inbox, constraints."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from dispatch.domain.errors import Ineligible
from tests.helpers import (
    NOW,
    Clock,
    RecordingSms,
    add_carers,
    add_family,
    hospital_request,
    make_bus,
)


def _count(url: str, table: object, *where: object) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _outbox_types(url: str) -> list[str]:
    with make_engine(url).connect() as conn:
        return list(conn.scalars(select(orm.outbox.c.type).order_by(orm.outbox.c.id)))


def test_submitted_request_is_stored_with_its_event_and_parent_sms(db_url: str) -> None:
    bus = make_bus(db_url)
    family = add_family(bus)
    request, created = bus.handle(hospital_request(family))
    assert created and request.status == "received" and len(request.code) == 4
    assert _outbox_types(db_url) == ["request.received", "sms.requested"]
    assert _count(db_url, orm.notifications, orm.notifications.c.kind == "request_received") == 1


def test_idempotency_key_returns_the_first_request(db_url: str) -> None:
    bus = make_bus(db_url)
    family = add_family(bus)
    first, created = bus.handle(hospital_request(family, idempotency_key="tok:abc"))
    again, created_again = bus.handle(hospital_request(family, idempotency_key="tok:abc"))
    assert created and not created_again and again.id == first.id
    assert _count(db_url, orm.requests) == 1


def test_ineligible_request_stores_nothing(db_url: str) -> None:
    bus = make_bus(db_url)
    family = add_family(bus, birth_date=NOW.date().replace(year=NOW.year - 15))
    with pytest.raises(Ineligible) as err:
        bus.handle(hospital_request(family))
    assert err.value.code == "age_out_of_range"
    assert _count(db_url, orm.requests) == 0 and _count(db_url, orm.outbox) == 0


def test_matching_offers_qualified_carers_once_even_when_replayed(db_url: str) -> None:
    bus = make_bus(db_url)
    qualified = add_carers(bus, 3)
    add_carers(bus, 2, district="동구", first_phone=20_000_000)
    add_carers(bus, 2, skills=(), first_phone=30_000_000)
    add_carers(bus, 1, on_duty=False, first_phone=40_000_000)
    family = add_family(bus)
    request, _ = bus.handle(hospital_request(family))
    assert bus.handle(c.StartMatching(request_id=request.id, event_id="evt-1")) == 3
    assert bus.handle(c.StartMatching(request_id=request.id, event_id="evt-1")) == 0
    assert bus.handle(c.StartMatching(request_id=request.id, event_id="evt-2")) == 0
    offered = {r for r in _offer_carers(db_url)}
    assert offered == {carer.id for carer in qualified}
    assert _count(db_url, orm.notifications, orm.notifications.c.kind == "offer") == 3


def _offer_carers(url: str) -> list[str]:
    with make_engine(url).connect() as conn:
        return list(conn.scalars(select(orm.offers.c.carer_id)))


def _sms(bus, url: str, phone: str, body: str, sid: str) -> str:  # type: ignore[no-untyped-def]
    bus.handle(c.ReceiveSms(message_sid=sid, from_phone=phone, to_phone="+15005550006",
                            body=body))
    with make_engine(url).connect() as conn:
        inbound_id = conn.scalar(select(orm.inbound_sms.c.id).where(
            orm.inbound_sms.c.message_sid == sid))
    return str(bus.handle(c.HandleInboundSms(inbound_id=inbound_id, event_id="evt-" + sid)))


def test_first_yes_wins_and_a_late_yes_is_told_politely(db_url: str) -> None:
    bus = make_bus(db_url)
    carers = add_carers(bus, 3)
    family = add_family(bus)
    request, _ = bus.handle(hospital_request(family))
    bus.handle(c.StartMatching(request_id=request.id, event_id="e1"))
    assert _sms(bus, db_url, carers[0].phone, f"YES {request.code}", "SM1") == "assigned"
    assert _sms(bus, db_url, carers[1].phone, f"네 {request.code}", "SM2") == "already_filled"
    assert _count(db_url, orm.assignments, orm.assignments.c.active.is_(True)) == 1
    assert _count(db_url, orm.notifications, orm.notifications.c.kind == "assigned") == 1
    assert _count(db_url, orm.notifications, orm.notifications.c.kind == "already_filled") == 1
    # The same SMS delivered again (Kafka redelivery) is absorbed by the inbox.
    with make_engine(db_url).connect() as conn:
        inbound_id = conn.scalar(select(orm.inbound_sms.c.id).where(
            orm.inbound_sms.c.message_sid == "SM2"))
    assert bus.handle(c.HandleInboundSms(inbound_id=inbound_id, event_id="evt-SM2")) == "duplicate"


def test_duplicate_message_sid_is_stored_once(db_url: str) -> None:
    bus = make_bus(db_url)
    assert bus.handle(c.ReceiveSms(message_sid="SMdup", from_phone="+821012345678",
                                   to_phone="x", body="안녕")) is True
    assert bus.handle(c.ReceiveSms(message_sid="SMdup", from_phone="+821012345678",
                                   to_phone="x", body="안녕")) is False
    assert _count(db_url, orm.inbound_sms) == 1
    assert _outbox_types(db_url) == ["sms.received"]


def test_bare_yes_with_two_open_offers_asks_which(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1)[0]
    first, _ = bus.handle(hospital_request(add_family(bus, phone="+821099990001")))
    second, _ = bus.handle(hospital_request(add_family(bus, phone="+821099990002"),
                                            start=NOW + timedelta(hours=6), hours=2))
    for r in (first, second):
        bus.handle(c.StartMatching(request_id=r.id, event_id="m-" + r.id))
    assert _sms(bus, db_url, carer.phone, "네", "SMbare") == "ambiguous"
    assert _count(db_url, orm.assignments) == 0
    assert _count(db_url, orm.notifications, orm.notifications.c.kind == "which_code") == 1


def test_a_carer_cannot_take_two_overlapping_jobs(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1)[0]
    first, _ = bus.handle(hospital_request(add_family(bus, phone="+821099990001")))
    second, _ = bus.handle(hospital_request(add_family(bus, phone="+821099990002"),
                                            start=NOW + timedelta(hours=2)))
    for r in (first, second):
        bus.handle(c.StartMatching(request_id=r.id, event_id="m-" + r.id))
    assert _sms(bus, db_url, carer.phone, f"YES {first.code}", "SMa") == "assigned"
    assert _sms(bus, db_url, carer.phone, f"YES {second.code}", "SMb") == "busy"
    assert _count(db_url, orm.assignments) == 1


def test_database_refuses_overlapping_assignments_and_two_active_per_request(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1)[0]
    family = add_family(bus)
    r1, _ = bus.handle(hospital_request(family))
    # Another child (one child's overlapping requests are refused at intake).
    r2, _ = bus.handle(hospital_request(add_family(bus, phone="+821099990001"),
                                        start=NOW + timedelta(hours=3)))
    engine = make_engine(db_url)
    row = {"carer_id": carer.id, "active": True, "created_at": NOW}
    with engine.begin() as conn:
        conn.execute(insert(orm.assignments).values(id="a1", request_id=r1.id, start=r1.start,
                                                    end=r1.end, **row))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(orm.assignments).values(id="a2", request_id=r2.id, start=r2.start,
                                                    end=r2.end, **row))
    other = add_carers(bus, 1, first_phone=50_000_000)[0]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(orm.assignments).values(
            id="a3", request_id=r1.id, start=r1.start, end=r1.end,
            **{**row, "carer_id": other.id}))
    # Back to back is not an overlap.
    with engine.begin() as conn:
        conn.execute(insert(orm.assignments).values(id="a4", request_id=r2.id, start=r1.end,
                                                    end=r1.end + timedelta(hours=1), **row))
    assert _count(db_url, orm.assignments) == 2


def test_notification_unique_per_event_recipient_kind(db_url: str) -> None:
    engine = make_engine(db_url)
    row = {"event_id": "e", "recipient": "+821012345678", "kind": "offer", "params": {},
           "lang": "ko", "status": "pending", "created_at": NOW}
    with engine.begin() as conn:
        conn.execute(insert(orm.notifications).values(id="n1", **row))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(orm.notifications).values(id="n2", **row))


def test_delivery_sends_once_and_never_resends_an_uncertain_send(db_url: str) -> None:
    sms = RecordingSms()
    bus = make_bus(db_url, sms=sms)
    family = add_family(bus)
    bus.handle(hospital_request(family))
    with make_engine(db_url).connect() as conn:
        note_id = conn.scalar(select(orm.notifications.c.id))
    assert bus.handle(c.DeliverNotification(notification_id=note_id)) == "sent"
    assert bus.handle(c.DeliverNotification(notification_id=note_id)) == "duplicate"
    assert len(sms.sent) == 1 and sms.sent[0][0] == family.guardian_phone

    class Dies:
        name = "dies"

        def send(self, to: str, body: str, *, validity_period: int | None = None) -> None:
            raise TimeoutError("no answer")

    bus2 = make_bus(db_url, sms=Dies(), clock=Clock(NOW + timedelta(minutes=1)))
    request, _ = bus2.handle(hospital_request(add_family(bus2, phone="+821099990003")))
    with make_engine(db_url).connect() as conn:
        note2 = conn.scalar(select(orm.notifications.c.id).where(
            orm.notifications.c.request_id == request.id))
    # A timeout leaves the outcome unknown: a redelivery must not send it again.
    assert bus2.handle(c.DeliverNotification(notification_id=note2)) == "unknown"
    assert bus.handle(c.DeliverNotification(notification_id=note2)) == "duplicate"
    assert len(sms.sent) == 1


def test_opted_out_recipient_is_skipped(db_url: str) -> None:
    sms = RecordingSms()
    bus = make_bus(db_url, sms=sms)
    carer = add_carers(bus, 1)[0]
    assert _sms(bus, db_url, carer.phone, "STOP", "SMstop") == "opted_out"
    family = add_family(bus)
    request, _ = bus.handle(hospital_request(family))
    # An opted-out carer is not offered anything: the request escalates instead.
    bus.handle(c.StartMatching(request_id=request.id, event_id="m1"))
    assert _count(db_url, orm.offers) == 0
    with make_engine(db_url).connect() as conn:
        status = conn.scalar(select(orm.requests.c.status))
    assert status == "escalated"


def test_start_opts_back_in_and_the_carer_is_offered_again(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1)[0]
    assert _sms(bus, db_url, carer.phone, "STOP", "SMstop") == "opted_out"
    assert _sms(bus, db_url, carer.phone, "START", "SMstart") == "opted_in"
    request, _ = bus.handle(hospital_request(add_family(bus)))
    assert bus.handle(c.StartMatching(request_id=request.id, event_id="m1")) == 1
    # Twilio answers STOP and START itself: we send nothing back.
    assert _count(db_url, orm.notifications, orm.notifications.c.recipient == carer.phone,
                  orm.notifications.c.kind != "offer") == 0


def test_a_dispatcher_assignment_tells_the_other_offered_carers(db_url: str) -> None:
    bus = make_bus(db_url, wave_size=3)
    carers = add_carers(bus, 3)
    request, _ = bus.handle(hospital_request(add_family(bus)))
    bus.handle(c.StartMatching(request_id=request.id, event_id="m"))
    bus.handle(c.AssignCarer(request_id=request.id, carer_id=carers[2].id, dispatcher="김상황"))
    n = orm.notifications.c
    told = {phone for phone in _recipients(db_url, "offer_rescinded")}
    assert told == {carers[0].phone, carers[1].phone}
    assert _count(db_url, orm.notifications, n.kind == "accepted_ack",
                  n.recipient == carers[2].phone) == 1


def _recipients(url: str, kind: str) -> list[str]:
    with make_engine(url).connect() as conn:
        return list(conn.scalars(select(orm.notifications.c.recipient).where(
            orm.notifications.c.kind == kind)))


def test_a_home_address_goes_only_to_the_carer_who_took_the_job(db_url: str) -> None:
    bus = make_bus(db_url, wave_size=3)
    carers = add_carers(bus, 3, skills=())
    family = add_family(bus)
    start = NOW + timedelta(hours=3)
    request, _ = bus.handle(c.SubmitRequest(
        service="home-emergency", family_id=family.id, child_id=family.children[0].id,
        start=start, end=start + timedelta(hours=2),
        location={"address": "광주 광산구 수완로 123, 101동 1001호"}))
    bus.handle(c.StartMatching(request_id=request.id, event_id="m"))
    with make_engine(db_url).connect() as conn:
        offers = list(conn.execute(select(orm.notifications.c.params).where(
            orm.notifications.c.kind == "offer")).scalars())
    assert len(offers) == 3 and all("수완로" not in str(p) for p in offers)
    assert _sms(bus, db_url, carers[1].phone, f"네 {request.code}", "SMaddr") == "assigned"
    assert _recipients(db_url, "job_address") == [carers[1].phone]


def test_a_centre_place_asked_for_by_sms_goes_to_the_centre_open_then(db_url: str) -> None:
    bus = make_bus(db_url)
    family = add_family(bus, birth_date=date(2023, 3, 15), health=False)
    # Thursday: tomorrow is Friday, the main centre is open from 18:00.
    assert _sms(bus, db_url, family.guardian_phone, "센터 내일 19-23", "SMc1") != "help"
    _sms(bus, db_url, family.guardian_phone, "네", "SMc2")
    with make_engine(db_url).connect() as conn:
        rows = conn.execute(select(orm.requests.c.service, orm.requests.c.location,
                                   orm.requests.c.channel)).all()
    assert len(rows) == 1
    service, location, channel = rows[0]
    assert (service, location["center_id"], channel) == ("emergency-center", "gwangju-main",
                                                         "sms")
