"""Sending at most once, retrying what is safe, following delivery status (both backends)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from notifiers.gateway import SentSms, SmsSendError
from tests.helpers import Clock, add_carers, add_family, hospital_request, make_bus


@dataclass
class ScriptedGateway:
    """Answers each send with the next scripted outcome (an exception or 'ok')."""

    script: list[object] = field(default_factory=list)
    name: str = "scripted"
    sent: list[tuple[str, str]] = field(default_factory=list)
    provider_has: list[tuple[str, str, str]] = field(default_factory=list)  # (sid, to, body)

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        outcome = self.script.pop(0) if self.script else "ok"
        sid = f"SM{len(self.sent) + len(self.provider_has):032d}"
        if outcome == "taken-then-timeout":  # Twilio took it, the answer was lost
            self.provider_has.append((sid, to, body))
            raise SmsSendError("read timeout", retryable=True, outcome_unknown=True)
        if isinstance(outcome, Exception):
            raise outcome
        self.sent.append((to, body))
        self.provider_has.append((sid, to, body))
        return SentSms(sid=sid, status="queued")

    def find_sent(self, to: str, body: str, exclude: set[str]) -> SentSms | None:
        for sid, sent_to, sent_body in reversed(self.provider_has):
            if sent_to == to and sent_body == body and sid not in exclude:
                return SentSms(sid=sid, status="sent")
        return None


def _row(url: str, **where: str) -> dict[str, object]:
    n = orm.notifications.c
    with make_engine(url).connect() as conn:
        stmt = select(orm.notifications)
        for key, value in where.items():
            stmt = stmt.where(getattr(n, key) == value)
        return dict(conn.execute(stmt).mappings().one())


def _setup(db_url: str, gateway: ScriptedGateway, clock: Clock):  # type: ignore[no-untyped-def]
    bus = make_bus(db_url, sms=gateway, clock=clock)
    family = add_family(bus)
    request, _ = bus.handle(hospital_request(family))
    note = _row(db_url, kind="request_received")
    return bus, family, request, str(note["id"])


def test_retryable_error_is_retried_after_backoff_and_sent_once(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway([SmsSendError("busy", http_status=503, retryable=True,
                                            code=20503), "ok"])
    # A 503 that Twilio says was refused (not outcome_unknown) is safe to resend.
    bus, _, _, note_id = _setup(db_url, gateway, clock)
    assert bus.handle(c.DeliverNotification(notification_id=note_id)) == "retry"
    assert bus.handle(c.SweepNotifications()) == {"retried": 0, "looked_up": 0}  # not due yet
    clock.advance(seconds=6)
    assert bus.handle(c.SweepNotifications())["retried"] == 1
    row = _row(db_url, id=note_id)
    assert row["status"] == "sent" and row["attempts"] == 2 and len(gateway.sent) == 1
    # A redelivered Kafka message after that changes nothing.
    assert bus.handle(c.DeliverNotification(notification_id=note_id)) == "duplicate"
    assert len(gateway.sent) == 1


def test_permanent_errors_are_not_retried(db_url: str) -> None:
    for code in (21211, 21614, 30006):
        clock = Clock()
        gateway = ScriptedGateway([SmsSendError("no", code=code, http_status=400)])
        bus, family, _, note_id = _setup(db_url, gateway, clock)
        assert bus.handle(c.DeliverNotification(notification_id=note_id)) == "failed"
        clock.advance(seconds=600)
        assert bus.handle(c.SweepNotifications())["retried"] == 0
        assert _row(db_url, id=note_id)["error_code"] == code
        with make_engine(db_url).begin() as conn:  # next loop gets a fresh family
            conn.execute(orm.notifications.delete())
            conn.execute(orm.timeline.delete())
            conn.execute(orm.requests.delete())
            conn.execute(orm.children.delete())
            conn.execute(orm.families.delete())


def test_opted_out_with_the_carrier_marks_the_person_and_tells_the_dispatcher(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway()
    bus = make_bus(db_url, sms=gateway, clock=clock)
    bus.dependencies["dispatcher_phone"] = "+821000000000"
    carer = add_carers(bus, 1)[0]
    request, _ = bus.handle(hospital_request(add_family(bus)))
    bus.handle(c.StartMatching(request_id=request.id, event_id="m"))
    offer = _row(db_url, kind="offer")
    gateway.script.append(SmsSendError("opted out", code=21610, http_status=400))
    assert bus.handle(c.DeliverNotification(notification_id=str(offer["id"]))) == "failed"
    with make_engine(db_url).connect() as conn:
        assert conn.scalar(select(orm.carers.c.opted_out).where(
            orm.carers.c.id == carer.id)) is True
    told = _row(db_url, kind="dispatcher_escalation")
    assert told["recipient"] == "+821000000000" and told["params"]["reason"] == "opted_out"


def test_uncertain_send_is_looked_up_not_resent(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway(["taken-then-timeout"])
    bus, _, _, note_id = _setup(db_url, gateway, clock)
    assert bus.handle(c.DeliverNotification(notification_id=note_id)) == "unknown"
    clock.advance(seconds=30)
    counts = bus.handle(c.SweepNotifications())
    assert counts == {"retried": 0, "looked_up": 1}
    row = _row(db_url, id=note_id)
    assert row["status"] == "sent" and row["sid"] == gateway.provider_has[0][0]
    assert gateway.sent == []  # never sent a second time


def test_uncertain_send_that_never_arrived_is_sent_again(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway([SmsSendError("timeout", retryable=True, outcome_unknown=True)])
    bus, family, _, note_id = _setup(db_url, gateway, clock)
    assert bus.handle(c.DeliverNotification(notification_id=note_id)) == "unknown"
    clock.advance(seconds=30)
    assert bus.handle(c.SweepNotifications()) == {"retried": 1, "looked_up": 1}
    assert [to for to, _ in gateway.sent] == [family.guardian_phone]
    assert _row(db_url, id=note_id)["status"] == "sent"


def test_a_sender_that_died_mid_send_is_resolved_by_lookup(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway()
    bus, family, _, note_id = _setup(db_url, gateway, clock)
    # Simulate a crash after 'sending' committed and Twilio took the message.
    with make_engine(db_url).begin() as conn:
        conn.execute(orm.notifications.update().where(orm.notifications.c.id == note_id)
                     .values(status="sending", status_at=clock.now, body="본문", attempts=1))
    gateway.provider_has.append(("SM" + "7" * 32, family.guardian_phone, "본문"))
    clock.advance(seconds=61)
    assert bus.handle(c.SweepNotifications())["looked_up"] == 1
    assert _row(db_url, id=note_id)["sid"] == "SM" + "7" * 32
    assert gateway.sent == []


def test_stale_offer_is_never_sent(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway()
    bus = make_bus(db_url, sms=gateway, clock=clock)
    add_carers(bus, 1)
    request, _ = bus.handle(hospital_request(add_family(bus)))
    bus.handle(c.StartMatching(request_id=request.id, event_id="m"))
    offer = _row(db_url, kind="offer")
    clock.advance(seconds=601)
    assert bus.handle(c.DeliverNotification(notification_id=str(offer["id"]))) == "stale"
    assert gateway.sent == []


def test_status_callbacks_only_move_forward(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway()
    bus, _, _, note_id = _setup(db_url, gateway, clock)
    bus.handle(c.DeliverNotification(notification_id=note_id))
    sid = str(_row(db_url, id=note_id)["sid"])
    assert bus.handle(c.RecordDeliveryStatus(sid=sid, status="delivered")) == "delivered"
    assert bus.handle(c.RecordDeliveryStatus(sid=sid, status="sent")) == "stale"
    assert bus.handle(c.RecordDeliveryStatus(sid=sid, status="delivered")) == "stale"
    assert bus.handle(c.RecordDeliveryStatus(sid=sid, status="undelivered",
                                             error_code=30003)) == "stale"
    row = _row(db_url, id=note_id)
    assert row["status"] == "delivered" and row["provider_status"] == "delivered"
    assert bus.handle(c.RecordDeliveryStatus(sid="SMnope", status="sent")) == "unknown_sid"


def test_undelivered_offer_moves_on_to_the_next_carer(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway()
    bus = make_bus(db_url, sms=gateway, clock=clock, wave_size=1)
    carers = add_carers(bus, 2)
    request, _ = bus.handle(hospital_request(add_family(bus)))
    bus.handle(c.StartMatching(request_id=request.id, event_id="m"))
    first = _row(db_url, kind="offer")
    bus.handle(c.DeliverNotification(notification_id=str(first["id"])))
    sid = str(_row(db_url, id=str(first["id"]))["sid"])
    bus.handle(c.RecordDeliveryStatus(sid=sid, status="undelivered", error_code=30003))
    with make_engine(db_url).connect() as conn:
        offers = dict(conn.execute(select(orm.offers.c.carer_id, orm.offers.c.status)).all())
    assert offers == {first_carer: "declined" for first_carer in [_carer_of(carers, first)]} | {
        next(k.id for k in carers if k.phone != first["recipient"]): "open"}
    # The same callback again offers nobody else.
    bus.handle(c.RecordDeliveryStatus(sid=sid, status="undelivered", error_code=30003))
    with make_engine(db_url).connect() as conn:
        assert len(conn.execute(select(orm.offers)).all()) == 2


def _carer_of(carers: list, note: dict[str, object]) -> str:  # type: ignore[type-arg]
    return next(k.id for k in carers if k.phone == note["recipient"])


def test_undelivered_parent_sms_is_escalated_to_the_dispatcher(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway()
    bus, _, request, note_id = _setup(db_url, gateway, clock)
    bus.dependencies["dispatcher_phone"] = "+821000000000"
    bus.handle(c.DeliverNotification(notification_id=note_id))
    sid = str(_row(db_url, id=note_id)["sid"])
    clock.advance(seconds=5)
    bus.handle(c.RecordDeliveryStatus(sid=sid, status="undelivered", error_code=30005))
    told = _row(db_url, kind="dispatcher_escalation")
    assert told["params"]["reason"] == "sms_undelivered_30005"
    with make_engine(db_url).connect() as conn:
        types = list(conn.scalars(select(orm.timeline.c.type).where(
            orm.timeline.c.request_id == request.id)))
    assert "sms_problem" in types


def test_a_notification_whose_kafka_message_was_lost_is_sent_by_the_sweep(db_url: str) -> None:
    clock = Clock()
    gateway = ScriptedGateway()
    bus, family, _, note_id = _setup(db_url, gateway, clock)
    # No DeliverNotification ever arrives (the broker restarted empty).
    assert bus.handle(c.SweepNotifications())["retried"] == 0  # too early to call it lost
    clock.advance(seconds=61)
    assert bus.handle(c.SweepNotifications())["retried"] == 1
    assert _row(db_url, id=note_id)["status"] == "sent"
    assert [to for to, _ in gateway.sent] == [family.guardian_phone]
    # The late Kafka message, if it ever comes, sends nothing more.
    assert bus.handle(c.DeliverNotification(notification_id=note_id)) == "duplicate"
