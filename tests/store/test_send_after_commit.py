"""The worker sends an SMS right after the transaction that queued it commits, and writes no
`sms.requested` message for it: the notification sweep is the backstop. One SMS per
notification, whoever comes first, on both backends; and messages nobody consumes never go
to Kafka."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select

from dispatch import commands as c
from dispatch import orm
from dispatch.bootstrap import bootstrap
from dispatch.db import make_engine
from dispatch.domain.policy import load_policies
from dispatch.handlers.delivery import NEVER_NUDGED_S
from dispatch.unit_of_work import sms_nudge_event_id
from notifiers import templates
from notifiers.gateway import SentSms
from streams.app import Sender, handle_collecting_sms, handle_then_send
from tests.helpers import NOW, Clock, add_carers, add_family, hospital_request, make_bus


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


def _matched(bus: Any) -> tuple[Any, list[str]]:
    """Four carers, a hospital request, matching handled: the request and the ids of the
    SMS it queued (committed, not sent)."""
    add_carers(bus, 4)
    request, _ = bus.handle(hospital_request(add_family(bus)))
    _, queued = handle_collecting_sms(bus, c.StartMatching(request_id=request.id,
                                                           event_id="e-1"))
    return request, queued


def test_offers_go_out_with_the_matching_and_write_no_messages(db_url: str) -> None:
    gateway = SlowGateway()
    bus = make_bus(db_url, sms=gateway)
    carers = add_carers(bus, 4)
    request, _ = bus.handle(hospital_request(add_family(bus)))
    sent = handle_then_send(bus, c.StartMatching(request_id=request.id, event_id="e-1"))
    assert sent == 3
    offered = {to for to, body in gateway.sent}
    assert len(gateway.sent) == 3 and offered <= {cr.phone for cr in carers}

    rows = _outbox(db_url)
    # The offers were sent by the process that queued them: no sms.requested message was
    # written for them, and request.matching is for the console only (settled at once).
    assert [r["type"] for r in rows if r["type"] == "sms.requested"] == ["sms.requested"]
    matching = [r for r in rows if r["type"] == "request.matching"]
    assert len(matching) == 1 and matching[0]["published_at"] == matching[0]["created_at"]
    # What was queued elsewhere (the parent's "received" SMS, queued by the API) still
    # goes through Kafka: a worker sends it on that message.
    unpublished = {r["type"] for r in rows if r["published_at"] is None}
    assert unpublished == {"request.received", "sms.requested", "carer.duty_changed"}

    # A second deliverer (the sweep, a redelivered command) finds the claims, sends nothing.
    n = orm.notifications.c
    with make_engine(db_url).connect() as conn:
        offer_ids = list(conn.scalars(select(n.id).where(n.kind == "offer")))
    for notification_id in offer_ids:
        assert bus.handle(c.DeliverNotification(notification_id=notification_id)) == "duplicate"
    assert len(gateway.sent) == 3


def test_sms_of_a_worker_that_died_before_sending_go_out_with_the_sweep(db_url: str) -> None:
    clock = Clock(NOW)
    gateway = SlowGateway()
    bus = make_bus(db_url, clock, sms=gateway)
    # Committed with their offers, never sent: the process died right after the commit.
    request, queued = _matched(bus)
    assert len(queued) == 3 and gateway.sent == []
    assert bus.handle(c.SweepNotifications())["retried"] == 0  # not given up on yet
    clock.now += timedelta(seconds=NEVER_NUDGED_S + 1)
    bus.handle(c.SweepNotifications())
    assert len(gateway.sent) == 4  # the three offers and the parent's "received"
    assert bus.handle(c.SweepNotifications())["retried"] == 0
    assert len(gateway.sent) == 4


def test_one_transaction_claims_the_sms_of_a_matching_and_one_records_them_sent(
        db_url: str) -> None:
    gateway = SlowGateway()
    bus = make_bus(db_url, sms=gateway)
    request, queued = _matched(bus)
    engine = bus.uow_factory()._session_factory.kw["bind"]
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    outcomes = bus.handle(c.DeliverNotifications(notification_ids=tuple(queued)))
    assert outcomes == dict.fromkeys(queued, "sent")
    assert len(gateway.sent) == 3 and len(commits) == 2
    n = orm.notifications.c
    with make_engine(db_url).connect() as conn:
        assert set(conn.scalars(select(n.status).where(n.id.in_(queued)))) == {"sent"}


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


@dataclass
class CountingBus:
    """The bus, noting each batch the sender hands it."""

    bus: Any
    batches: list[tuple[str, ...]] = field(default_factory=list)

    def handle(self, command: c.Command) -> Any:
        if isinstance(command, c.DeliverNotifications):
            self.batches.append(command.notification_ids)
        return self.bus.handle(command)


def test_the_sender_sends_what_queued_meanwhile_as_one_batch(db_url: str) -> None:
    started = threading.Event()

    class Gate(SlowGateway):
        def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
            started.set()
            return super().send(to, body, validity_period=validity_period)

    gateway = Gate(delay_s=0.3)
    bus = make_bus(db_url, sms=gateway)
    request, offers = _matched(bus)
    counting = CountingBus(bus)
    sender = Sender(counting)  # type: ignore[arg-type]
    sender.submit(offers[:1])
    assert started.wait(10)
    # Queued while the first SMS is with the gateway: they go together, claimed once.
    sender.submit(offers[1:2])
    sender.submit(offers[2:])
    sender.close()
    assert counting.batches == [tuple(offers[:1]), tuple(offers[1:])]
    assert len(gateway.sent) == 3 and len({to for to, _ in gateway.sent}) == 3


def test_a_batch_is_handed_to_the_gateway_several_at_a_time(db_url: str) -> None:
    @dataclass
    class Overlapping(SlowGateway):
        inside: int = 0
        most: int = 0

        def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
            with self.lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
            try:
                time.sleep(self.delay_s)
                with self.lock:
                    self.sent.append((to, body))
                    return SentSms(sid=f"SMpar{len(self.sent):027d}", status="queued")
            finally:
                with self.lock:
                    self.inside -= 1

    gateway = Overlapping(delay_s=0.2)
    bus = bootstrap(make_engine(db_url), load_policies(), sms=gateway,
                    templates=templates.render, clock=Clock(NOW), sms_threads=4)
    request, offers = _matched(bus)
    outcomes = bus.handle(c.DeliverNotifications(notification_ids=tuple(offers)))
    assert outcomes == dict.fromkeys(offers, "sent") and len(gateway.sent) == 3
    assert gateway.most == 3


def test_an_sms_that_cannot_be_written_fails_alone(db_url: str) -> None:
    gateway = SlowGateway()
    bus = make_bus(db_url, sms=gateway)
    request, offers = _matched(bus)
    with bus.uow_factory() as uow:  # a kind no template knows: a bug, in the same batch
        broken = uow.notify(event_id="e-broken", recipient="+821011112222",
                            kind="no_such_template", params={}, now=NOW)
        assert broken is not None
        uow.commit()
    outcomes = bus.handle(c.DeliverNotifications(notification_ids=(*offers, broken.id)))
    assert outcomes == {**dict.fromkeys(offers, "sent"), broken.id: "failed"}
    assert len(gateway.sent) == 3
