"""The worker sends an SMS right after the transaction that queued it commits; the
`sms.requested` message stays the backstop. One SMS per notification, whoever comes first,
on both backends; and messages nobody consumes never go to Kafka."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from dispatch.unit_of_work import sms_nudge_event_id
from notifiers.gateway import SentSms
from streams.app import handle_then_send
from tests.helpers import add_carers, add_family, hospital_request, make_bus


@dataclass
class SlowGateway:
    """Takes its time on every send, so two deliverers overlap."""

    delay_s: float = 0.0
    name: str = "slow"
    sent: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        time.sleep(self.delay_s)
        with self.lock:
            self.sent.append((to, body))
            return SentSms(sid=f"SMslow{len(self.sent):026d}", status="queued")


def _outbox(url: str) -> list[dict[str, object]]:
    o = orm.outbox.c
    with make_engine(url).connect() as conn:
        return [dict(r) for r in conn.execute(
            select(o.event_id, o.type, o.created_at, o.published_at).order_by(o.id)).mappings()]


def test_offers_go_out_with_the_matching_and_their_messages_stay_home(db_url: str) -> None:
    gateway = SlowGateway()
    bus = make_bus(db_url, sms=gateway)
    carers = add_carers(bus, 4)
    request, _ = bus.handle(hospital_request(add_family(bus)))
    sent = handle_then_send(bus, c.StartMatching(request_id=request.id, event_id="e-1"))
    assert sent == 3
    offered = {to for to, body in gateway.sent}
    assert len(gateway.sent) == 3 and offered <= {cr.phone for cr in carers}

    n = orm.notifications.c
    with make_engine(db_url).connect() as conn:
        offer_ids = list(conn.scalars(select(n.id).where(n.kind == "offer")))
    rows = {str(r["event_id"]): r for r in _outbox(db_url)}
    # The three offers' messages were settled by the send (published_at == created_at: they
    # never go to Kafka) ...
    for notification_id in offer_ids:
        row = rows[sms_nudge_event_id(notification_id)]
        assert row["published_at"] == row["created_at"]
    matching = [r for r in rows.values() if r["type"] == "request.matching"]
    assert len(matching) == 1 and matching[0]["published_at"] == matching[0]["created_at"]
    # ... while what was queued elsewhere (the parent's "received" SMS, queued by the API)
    # still waits for the relay.
    unpublished = {r["type"] for r in rows.values() if r["published_at"] is None}
    assert unpublished == {"request.received", "sms.requested", "carer.duty_changed"}

    # The backstop arrives anyway (the relay got there first): it finds the claim, sends nothing.
    for notification_id in offer_ids:
        assert bus.handle(c.DeliverNotification(notification_id=notification_id)) == "duplicate"
    assert len(gateway.sent) == 3


def test_two_deliverers_at_once_send_one_sms(db_url: str) -> None:
    gateway = SlowGateway(delay_s=0.3)
    bus = make_bus(db_url, sms=gateway)
    bus.handle(hospital_request(add_family(bus)))
    n = orm.notifications.c
    with make_engine(db_url).connect() as conn:
        note_id = conn.scalar(select(n.id).where(n.kind == "request_received"))
    assert note_id is not None
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def deliver() -> None:
        start.wait()
        outcomes.append(bus.handle(c.DeliverNotification(notification_id=note_id)))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["duplicate", "duplicate", "duplicate", "sent"]
    assert len(gateway.sent) == 1
    nudge = [r for r in _outbox(db_url) if r["event_id"] == sms_nudge_event_id(note_id)]
    assert len(nudge) == 1 and nudge[0]["published_at"] == nudge[0]["created_at"]


def test_a_failed_send_after_commit_leaves_the_message_to_deliver_it(db_url: str) -> None:
    class Broken:
        name = "broken"

        def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
            raise ConnectionError("gateway unreachable")

    bus = make_bus(db_url, sms=Broken())
    add_carers(bus, 3)
    request, _ = bus.handle(hospital_request(add_family(bus)))
    # The matching itself commits whatever the gateway does.
    assert handle_then_send(bus, c.StartMatching(request_id=request.id, event_id="e-2")) == 3
    n = orm.notifications.c
    with make_engine(db_url).connect() as conn:
        statuses = list(conn.scalars(select(n.status).where(n.kind == "offer")))
    # Not lost: each offer is recorded as an uncertain send, for the sweep to look up.
    assert len(statuses) == 3 and all(s in ("unknown", "pending", "failed") for s in statuses)
