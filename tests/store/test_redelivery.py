"""Every message and every webhook delivered twice and out of order: the end state is the same.

No broker: a simulated one holds everything a flow puts on the wire -- the outbox rows the
handlers write (request.received, sms.received, sms.requested, ...), the inbound SMS
webhooks the carers' and parents' phones send when an SMS reaches them, and Twilio's status
callbacks -- and delivers it through the worker's own path (`Envelope.from_bytes` →
`streams.routing.command_for` → `streams.app.handle_then_send`, or the plain bus as when
the immediate send fails and the `sms.requested` message is the backstop).

In order, once each, is the reference. Then, for several seeds, in a shuffled order with
about a third of the deliveries repeated (at-least-once), on SQLite and PostgreSQL. The
flow: carers A and B answer YES to every offer, C answers NO; R1 and R2 overlap in time
(so one carer could be double-booked), R3 and R4 are on other days, and R4's parent texts
취소 as soon as the "received" SMS arrives. Status callbacks come as `sent` then a final
`delivered` (or `undelivered`, for one parent's phone), shuffled so a `delivered` can come
before its `sent`. Counted and asserted each time: requests that end in a final state (4 of
4), overlapping assignments per carer (0), SMS per (event, recipient, kind) (1), SMS sent
twice (0), inbound SMS applied twice (0).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from dispatch.messagebus import MessageBus
from infra.db import upgrade
from notifiers.gateway import SentSms
from schemas.envelope import Envelope
from streams.app import handle_then_send
from streams.routing import command_for
from tests.helpers import NOW, Clock, add_carers, add_family, hospital_request, make_bus

OFFER = re.compile(r"답장:네 (\d{4})/")
PARENTS = ["+821070000001", "+821070000002", "+821070000003", "+821070000004"]
UNDELIVERABLE = PARENTS[2]  # R3's parent: every SMS to this phone comes back `undelivered`
FINAL = {"assigned", "completed", "cancelled"}

Delivery = tuple[str, Any]


class Phones:
    """The SMS gateway, and the people holding the phones it sends to: when an SMS lands,
    its recipient may answer (a webhook) and Twilio reports on it (status callbacks)."""

    name = "recording"

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.sent: list[tuple[str, str, str]] = []  # (sid, to, body)

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        sid = f"SMout{len(self.sent):05d}"
        self.sent.append((sid, to, body))
        sim = self.sim
        offer = OFFER.search(body)
        if offer and to in sim.answers:
            word = sim.answers[to]
            # One MessageSid per (carer, job): a repeated webhook is the same message.
            sim.push(("sms", c.ReceiveSms(message_sid=f"SMin{to[-4:]}{offer.group(1)}",
                                          from_phone=to, to_phone="+15005550006",
                                          body=f"{word} {offer.group(1)}")))
        if to == PARENTS[3] and sim.codes[3] in body:
            sim.push(("sms", c.ReceiveSms(message_sid="SMcancel4", from_phone=to,
                                          to_phone="+15005550006", body=f"취소 {sim.codes[3]}")))
        final = "undelivered" if to == UNDELIVERABLE else "delivered"
        sim.push(("status", c.RecordDeliveryStatus(sid=sid, status="sent")))
        sim.push(("status", c.RecordDeliveryStatus(
            sid=sid, status=final, error_code=30003 if final == "undelivered" else None)))
        return SentSms(sid=sid, status="queued")


class Simulation:
    """A broker that delivers at least once, in order (seed None) or shuffled."""

    def __init__(self, url: str, seed: int | None, *, immediate_send: bool = True,
                 repeat: float = 0.35) -> None:
        self.url = url
        self.rng = random.Random(seed) if seed is not None else None
        self.repeat = repeat
        self.immediate_send = immediate_send
        self.phones = Phones(self)
        self.bus: MessageBus = make_bus(url, Clock(NOW), sms=self.phones)
        self.engine = make_engine(url)
        self.pool: list[Delivery] = []
        self.last_outbox = 0
        self.delivered = 0
        self.repeated = 0
        self.answers: dict[str, str] = {}
        self.codes: list[str] = []

    def push(self, item: Delivery) -> None:
        self.pool.append(item)

    def collect_outbox(self) -> None:
        o = orm.outbox.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(o.id, o.body).where(o.id > self.last_outbox)
                                .order_by(o.id)).all()
        for row_id, body in rows:
            self.push(("envelope", bytes(body)))
            self.last_outbox = max(self.last_outbox, row_id)

    def deliver(self, item: Delivery) -> None:
        kind, what = item
        if kind == "envelope":
            envelope = Envelope.from_bytes(what)
            command = command_for(envelope)
            if command is not None:
                if self.immediate_send:
                    handle_then_send(self.bus, command)
                else:
                    self.bus.handle(command)
        else:  # a webhook: the API hands it to the bus as it is
            self.bus.handle(what)
        self.delivered += 1
        self.collect_outbox()

    def run(self) -> None:
        self.collect_outbox()
        while self.pool:
            if self.rng is None:
                item = self.pool.pop(0)
            else:
                item = self.pool.pop(self.rng.randrange(len(self.pool)))
                if self.rng.random() < self.repeat:  # redelivered later, at a random point
                    self.pool.insert(self.rng.randrange(len(self.pool) + 1), item)
                    self.repeated += 1
            self.deliver(item)

    # -- the flow -----------------------------------------------------------------------
    def play(self) -> list[Any]:
        a, b, no = add_carers(self.bus, 3)
        self.answers = {a.phone: "YES", b.phone: "YES", no.phone: "NO"}
        families = [add_family(self.bus, phone=p) for p in PARENTS]
        starts = [NOW + timedelta(hours=1), NOW + timedelta(hours=2), NOW + timedelta(days=1),
                  NOW + timedelta(days=2)]
        requests = []
        for family, start in zip(families, starts, strict=True):
            request, _ = self.bus.handle(hospital_request(family, start=start, hours=3))
            requests.append(request)
        self.codes = [r.code for r in requests]
        self.carers = {a.id: "A", b.id: "B", no.id: "C"}
        self.run()
        return requests


def _scalar(sim: Simulation, stmt: Any) -> Any:
    with sim.engine.connect() as conn:
        return conn.scalar(stmt)


def outcome(sim: Simulation, requests: list[Any]) -> dict[str, Any]:
    """What must not depend on the order of delivery (carers' names, not ids or codes)."""
    r, a, n, i, t = (orm.requests.c, orm.assignments.c, orm.notifications.c,
                     orm.inbound_sms.c, orm.timeline.c)
    index = {req.id: k for k, req in enumerate(requests)}
    with sim.engine.connect() as conn:
        statuses = dict(conn.execute(select(r.id, r.status)).all())
        active = conn.execute(select(a.request_id, a.carer_id, a.start, a.end)
                              .where(a.active)).all()
        notes = conn.execute(select(n.event_id, n.recipient, n.kind, n.status, n.sid,
                                    n.provider_status)).all()
        inbound = conn.execute(select(i.message_sid, i.handled_at)).all()
        problems = conn.scalar(select(func.count()).select_from(orm.timeline)
                               .where(t.type == "sms_problem"))
    per_request = Counter(index[req] for req, *_ in active)
    by_carer: dict[str, list[tuple[Any, Any]]] = {}
    for _, carer, start, end in active:
        by_carer.setdefault(carer, []).append((start, end))
    overlapping = sum(1 for spans in by_carer.values() for x in spans for y in spans
                      if x < y and y[0] < x[1])
    carer_of = {index[req]: sim.carers[carer] for req, carer, *_ in active}
    keys = Counter((e, rcp, k) for e, rcp, k, *_ in notes)
    replies = Counter(e for e, *_ in notes if e.startswith("reply:"))
    sids = [sid for *_, sid, _ in notes if sid]
    parent_kinds = {p: sorted(k for _, rcp, k, *_ in notes if rcp == p) for p in PARENTS[:3]}
    wrong_final = [(k, rcp, ps) for _, rcp, k, _, sid, ps in notes if sid and ps != (
        "undelivered" if rcp == UNDELIVERABLE else "delivered")]
    return {
        "statuses": [statuses[req.id] for req in requests],
        "lost": sum(statuses[req.id] not in FINAL for req in requests),
        "assignments_per_request": [per_request[k] for k in range(4)][:3],
        "r1_r2_carers_differ": carer_of.get(0) != carer_of.get(1),
        "carers_of_r1_r3": sorted({carer_of.get(k, "-") for k in range(3)} - {"A", "B"}),
        "overlapping_assignments": overlapping,
        "sms_per_key_over_one": sum(v - 1 for v in keys.values() if v > 1),
        "inbound_applied_twice": sum(v - 1 for v in replies.values() if v > 1),
        "sms_sent_twice": len(sim.phones.sent) - len(set(sids)),
        "sent_without_row": len({s for s, *_ in sim.phones.sent} - set(sids)),
        "stuck_sms": sum(status in ("pending", "sending", "unknown") for *_, status, _, _ in notes),
        "unhandled_inbound": sum(h is None for _, h in inbound),
        "parents_r1_r3": parent_kinds,
        "parent_r4": Counter(k for _, rcp, k, *_ in notes if rcp == PARENTS[3]
                             and k in ("request_received", "cancelled")),
        "wrong_final_provider_status": wrong_final,
        "undelivered_reported_once": problems == sum(
            1 for _, rcp, *_rest in notes if rcp == UNDELIVERABLE and _rest[2]),
    }


EXPECTED = {
    "statuses": ["assigned", "assigned", "assigned", "cancelled"],
    "lost": 0,
    "assignments_per_request": [1, 1, 1],
    "r1_r2_carers_differ": True,
    "carers_of_r1_r3": [],  # every one of R1-R3 went to A or B, never to C who said NO
    "overlapping_assignments": 0,
    "sms_per_key_over_one": 0,
    "inbound_applied_twice": 0,
    "sms_sent_twice": 0,
    "sent_without_row": 0,
    "stuck_sms": 0,
    "unhandled_inbound": 0,
    "parents_r1_r3": {p: ["assigned", "request_received"] for p in PARENTS[:3]},
    "parent_r4": Counter({"request_received": 1, "cancelled": 1}),
    "wrong_final_provider_status": [],
    "undelivered_reported_once": True,
}


def _fresh_sqlite(tmp_path: Any, name: str) -> str:
    url = f"sqlite:///{tmp_path / name}"
    upgrade(url)
    return url


@pytest.fixture
def reference(tmp_path: Any) -> dict[str, Any]:
    sim = Simulation(_fresh_sqlite(tmp_path, "in-order.db"), seed=None)
    requests = sim.play()
    found = outcome(sim, requests)
    # The reference itself: everything filled once, R4 cancelled, nothing sent twice.
    assert found == EXPECTED
    assert sim.repeated == 0
    return found


def _report(label: str, sim: Simulation, found: dict[str, Any]) -> None:
    print(f"\n{label}: submitted 4, final {4 - found['lost']}, lost {found['lost']}, "
          f"overlapping assignments {found['overlapping_assignments']}, SMS twice per "
          f"(event, recipient, kind) {found['sms_per_key_over_one']}, sent twice "
          f"{found['sms_sent_twice']}, inbound applied twice {found['inbound_applied_twice']}; "
          f"deliveries {sim.delivered} of which repeated {sim.repeated}")


def _shuffled(url: str, reference: dict[str, Any], seed: int, immediate_send: bool) -> None:
    sim = Simulation(url, seed=seed, immediate_send=immediate_send)
    requests = sim.play()
    found = outcome(sim, requests)
    _report(f"seed {seed}", sim, found)
    assert sim.repeated > 0  # the run did repeat deliveries
    assert found == reference


SEND = pytest.mark.parametrize("immediate_send", [True, False], ids=["send-at-once", "via-kafka"])


@SEND
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_shuffled_and_repeated_delivery_ends_as_in_order_delivery(
        sqlite_url: str, reference: dict[str, Any], seed: int, immediate_send: bool) -> None:
    _shuffled(sqlite_url, reference, seed, immediate_send)


@pytest.mark.postgres
@SEND
@pytest.mark.parametrize("seed", [7, 8])
def test_shuffled_and_repeated_delivery_on_postgresql(
        pg_url: str, reference: dict[str, Any], seed: int, immediate_send: bool) -> None:
    _shuffled(pg_url, reference, seed, immediate_send)


def test_every_delivery_repeated_three_times_changes_nothing(tmp_path: Any) -> None:
    """The worst at-least-once: everything comes three times, each copy at a random point."""
    sim = Simulation(_fresh_sqlite(tmp_path, "triple.db"), seed=99)
    original_push = sim.push

    def thrice(item: Delivery) -> None:
        for _ in range(3):
            original_push(item)

    sim.push = thrice  # type: ignore[method-assign]
    requests = sim.play()
    found = outcome(sim, requests)
    _report("three copies", sim, found)
    assert found == EXPECTED


def test_status_callbacks_in_any_order_and_repeated_move_only_forward(db_url: str) -> None:
    """delivered before sent, sent twice, queued last: the status ends at the furthest one,
    and an `undelivered` parent SMS is reported to the dispatcher's timeline once."""
    sim = Simulation(db_url, seed=None)
    family = add_family(sim.bus, phone=UNDELIVERABLE)
    request, _ = sim.bus.handle(hospital_request(family))
    n = orm.notifications.c
    note_id = _scalar(sim, select(n.id).where(n.kind == "request_received"))
    sim.bus.handle(c.DeliverNotification(notification_id=note_id))
    sid = _scalar(sim, select(n.sid).where(n.id == note_id))
    assert sid is not None
    for status in ("delivered", "sent", "sent", "queued", "delivered", "sending"):
        sim.bus.handle(c.RecordDeliveryStatus(sid=sid, status=status))
    assert _scalar(sim, select(n.provider_status).where(n.id == note_id)) == "delivered"
    assert _scalar(sim, select(n.status).where(n.id == note_id)) == "delivered"

    request2, _ = sim.bus.handle(hospital_request(family, start=NOW + timedelta(days=1)))
    note2 = _scalar(sim, select(n.id).where(n.kind == "request_received",
                                            n.request_id == request2.id))
    sim.bus.handle(c.DeliverNotification(notification_id=note2))
    sid2 = _scalar(sim, select(n.sid).where(n.id == note2))
    for status in ("undelivered", "sent", "undelivered", "delivered", "queued"):
        sim.bus.handle(c.RecordDeliveryStatus(sid=sid2, status=status, error_code=30003))
    assert _scalar(sim, select(n.status).where(n.id == note2)) == "undelivered"
    t = orm.timeline.c
    assert _scalar(sim, select(func.count()).select_from(orm.timeline).where(
        t.request_id == request2.id, t.type == "sms_problem")) == 1


def test_the_same_inbound_sms_twice_is_stored_and_applied_once(db_url: str) -> None:
    """Twilio retries a webhook with the same MessageSid; Kafka redelivers sms.received."""
    sim = Simulation(db_url, seed=None)
    (carer,) = add_carers(sim.bus, 1)
    family = add_family(sim.bus, phone=PARENTS[0])
    request, _ = sim.bus.handle(hospital_request(family))
    sim.bus.handle(c.StartMatching(request_id=request.id, event_id="m1"))
    webhook = c.ReceiveSms(message_sid="SMsame", from_phone=carer.phone, to_phone="x",
                           body=f"YES {request.code}")
    assert sim.bus.handle(webhook) is True
    assert sim.bus.handle(webhook) is False  # the second is recognised, not stored
    o = orm.outbox.c
    raw = _scalar(sim, select(o.body).where(o.type == "sms.received"))
    command = command_for(Envelope.from_bytes(bytes(raw)))
    assert isinstance(command, c.HandleInboundSms)
    assert [sim.bus.handle(command) for _ in range(3)] == ["assigned", "duplicate", "duplicate"]
    # Even a copy under another event id (re-published by a relay that crashed before
    # marking it) finds the message already handled.
    assert sim.bus.handle(c.HandleInboundSms(inbound_id=command.inbound_id,
                                             event_id="another")) == "duplicate"
    n = orm.notifications.c
    assert _scalar(sim, select(func.count()).select_from(orm.notifications).where(
        n.kind == "assigned")) == 1
    assert _scalar(sim, select(func.count()).select_from(orm.inbound_sms)) == 1
