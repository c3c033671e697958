"""The Faust app's consumer fetch wait, and the outbox relay on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import func, select

from dispatch import orm
from dispatch.db import make_engine
from infra.broker import EmbeddedBroker
from infra.topics import ensure_topics
from schemas import topics
from schemas.config import Settings
from schemas.envelope import Envelope
from streams.relay import OutboxRelay
from tests.helpers import add_family, hospital_request, make_bus


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        ensure_topics(running.bootstrap)
        yield running


@pytest.mark.parametrize("wait_ms", [7, 250])
def test_configured_fetch_wait_reaches_the_aiokafka_consumer(wait_ms: int, sqlite_url: str) -> None:
    from streams.app import create_app

    async def build() -> int:
        settings = Settings(database_url=sqlite_url, kafka_bootstrap="127.0.0.1:9",
                            kafka_fetch_wait_ms=wait_ms)
        app = create_app(settings)
        thread = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(build()) == wait_ms


def _read_all(bootstrap: str, topic: topics.Topic, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10,
                             enable_auto_commit=False, consumer_timeout_ms=3000)
    parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning()
    seen: list[tuple[bytes, bytes]] = []
    for record in consumer:
        seen.append((record.key, record.value))
        if len(seen) >= expected:
            break
    consumer.close()
    return seen


def test_relay_publishes_each_outbox_row_and_marks_it(broker: EmbeddedBroker,
                                                      sqlite_url: str) -> None:
    bus = make_bus(sqlite_url)
    family = add_family(bus)
    request, _ = bus.handle(hospital_request(family))
    relay = OutboxRelay(make_engine(sqlite_url), broker.bootstrap)
    try:
        assert relay.publish_batch() == 2
        assert relay.publish_batch() == 0
    finally:
        relay.close()
    with make_engine(sqlite_url).connect() as conn:
        unpublished = conn.scalar(select(func.count()).select_from(orm.outbox).where(
            orm.outbox.c.published_at.is_(None)))
    assert unpublished == 0
    records = _read_all(broker.bootstrap, topics.REQUESTS, 1)
    key, value = records[0]
    envelope = Envelope.from_bytes(value)
    assert key == request.id.encode() and envelope.type == "request.received"
    assert envelope.payload == {"request_id": request.id, "service": "hospital"}
    sms = [Envelope.from_bytes(v) for k, v in _read_all(broker.bootstrap, topics.SMS_OUTBOUND, 1)
           if k == family.guardian_phone.encode()]
    assert [e.type for e in sms] == ["sms.requested"]
    # Personal data stays out of Kafka: no name, no phone in any payload.
    assert family.guardian_name not in value.decode()


def test_relay_keeps_rows_when_the_broker_is_away(sqlite_url: str) -> None:
    bus = make_bus(sqlite_url)
    bus.handle(hospital_request(add_family(bus)))
    with EmbeddedBroker() as lost:
        ensure_topics(lost.bootstrap)
        relay = OutboxRelay(make_engine(sqlite_url), lost.bootstrap, send_timeout_s=2)
        lost.stop()
        with pytest.raises(Exception):  # noqa: B017 - any client error; what matters is below
            relay.publish_batch()
        relay.close()
    with make_engine(sqlite_url).connect() as conn:
        unpublished = conn.scalar(select(func.count()).select_from(orm.outbox).where(
            orm.outbox.c.published_at.is_(None)))
    assert unpublished == 2
