"""Several relays and several sweepers on one PostgreSQL database, all at once.

Relays: each takes outbox rows `FOR UPDATE SKIP LOCKED`, publishes them and marks them in the
same transaction, so a row is on Kafka exactly once however many relays run (a crash between
publish and commit would make it twice, which the consumers' event_id dedupe absorbs; no crash
here, so exactly once is what must be seen). Sweepers: each request is swept under its row
lock and re-checked after it, so an offer past its answer window expires once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer
from sqlalchemy import func, select

from dispatch import commands as c
from dispatch import orm
from dispatch.db import make_engine
from infra.broker import EmbeddedBroker
from infra.topics import ensure_topics
from schemas.envelope import Envelope
from streams.relay import OutboxRelay
from tests.helpers import NOW, Clock, add_carers, add_family, hospital_request, make_bus

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        ensure_topics(running.bootstrap)
        yield running


class SlowRelay(OutboxRelay):
    """A relay whose broker round trip takes a while, so two relays' batches overlap."""

    def _send(self, rows: list) -> None:  # type: ignore[type-arg]
        time.sleep(0.05)
        super()._send(rows)


def test_two_relays_publish_each_outbox_row_once(pg_url: str, broker: EmbeddedBroker) -> None:
    bus = make_bus(pg_url)
    family = add_family(bus, phone=f"+82109{uuid.uuid4().int % 10**7:07d}")
    for i in range(120):
        bus.handle(hospital_request(family, start=NOW + timedelta(days=1 + i)))
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        rows = dict(conn.execute(select(orm.outbox.c.event_id, orm.outbox.c.topic)).all())
    assert len(rows) >= 120

    relays = [SlowRelay(make_engine(pg_url), broker.bootstrap, batch_size=10) for _ in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=relay.run, args=(stop,)) for relay in relays]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if not conn.scalar(select(func.count()).where(
                        orm.outbox.c.published_at.is_(None))):
                    break
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for relay in relays:
            relay.close()
    published = [relay.published for relay in relays]
    print(f"\noutbox rows {len(rows)}; published by each relay {published}")
    assert sum(published) == len(rows)
    assert all(n > 0 for n in published), "both relays should have taken a share"

    seen = Counter(_event_ids_on(broker.bootstrap, set(rows.values()), set(rows)))
    assert set(seen) == set(rows), "every row reached Kafka"
    assert [e for e, n in seen.items() if n > 1] == []


def _event_ids_on(bootstrap: str, topic_names: set[str], wanted: set[str]) -> list[str]:
    """Every event id of ours on those topics (other tests' messages are skipped)."""
    consumer = KafkaConsumer(*sorted(topic_names), bootstrap_servers=bootstrap,
                             group_id=f"check-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_poll_interval_ms=3000, session_timeout_ms=6000,
                             heartbeat_interval_ms=1000)
    found: list[str] = []
    deadline = time.monotonic() + 60
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(200)
            for records in batch.values():
                for record in records:
                    event_id = Envelope.from_bytes(record.value).event_id
                    if event_id in wanted:
                        found.append(event_id)
            if batch:
                quiet_since = time.monotonic()
            # All found, and nothing more for a while: a duplicate would have shown by now.
            if set(found) >= wanted and time.monotonic() - quiet_since > 2:
                break
    finally:
        consumer.close()
    return found


def test_two_sweepers_expire_each_offer_once(pg_url: str) -> None:
    clock = Clock()
    bus = make_bus(pg_url, clock=clock)
    add_carers(bus, 9)
    requests = []
    for i in range(8):
        family = add_family(bus, phone=f"+8210888{i:05d}")
        request, _ = bus.handle(hospital_request(
            family, start=NOW + timedelta(days=i, hours=1)))
        bus.handle(c.StartMatching(request_id=request.id, event_id=f"sweep-m{i}"))
        requests.append(request)
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        first_wave = conn.scalar(select(func.count()).select_from(orm.offers))
    assert first_wave == 8 * 3  # hospital: waves of 3

    # Past the answer window (600 s), before the SLA (900 s): every first offer is due.
    clock.advance(seconds=601)
    sweepers = [make_bus(pg_url, clock=clock) for _ in range(2)]
    barrier = threading.Barrier(len(sweepers))

    def sweep(bus_: Any) -> dict[str, int]:
        barrier.wait()
        result: dict[str, int] = bus_.handle(c.SweepDeadlines())
        return result

    with ThreadPoolExecutor(max_workers=len(sweepers)) as pool:
        outcomes = list(pool.map(sweep, sweepers))
    expired = sum(o["expired"] for o in outcomes)
    offered = sum(o["offered"] for o in outcomes)
    with engine.connect() as conn:
        statuses: Counter[str] = Counter(dict(conn.execute(
            select(orm.offers.c.status, func.count()).group_by(orm.offers.c.status)).all()))
        second_wave = (conn.scalar(select(func.count()).select_from(orm.offers)) or 0) \
            - (first_wave or 0)
    print(f"\nsweeps {outcomes}; offers by status {dict(statuses)}")
    assert expired == first_wave, outcomes          # each expired once, by one sweeper
    assert statuses["expired"] == first_wave
    assert second_wave == offered == 8 * 3           # the next wave went out once
    # A second round changes nothing: what was due has been handled.
    assert [s.handle(c.SweepDeadlines())["expired"] for s in sweepers] == [0, 0]
