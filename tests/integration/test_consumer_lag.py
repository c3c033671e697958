"""Consumer lag on /metrics, read from the real (embedded) broker.

Lag is end offset (a fetch's high watermark) minus the group's committed offset: it rises
while a group stops consuming and falls back to 0 once it has caught up and committed. A
broker that is gone makes `dolbom_kafka_up` 0 and leaves the lag out, without failing or
holding up the scrape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from api.app import create_app
from api.metrics import KafkaLagCollector, read_consumer_lag
from infra.broker import EmbeddedBroker, free_port
from schemas.config import Settings


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def topic(broker: EmbeddedBroker) -> str:
    name = f"dolbom.lagtest.{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(name, 2, 1)])
    admin.close()
    return name


def produce(bootstrap: str, topic: str, count: int) -> None:
    # Batched on purpose (linger): the embedded broker's ListOffsets is short by the rest of
    # the last batch, which is exactly what the lag must not inherit.
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, acks="all")
    for i in range(count):
        producer.send(topic, key=f"k{i}".encode(), value=b"x" * 100)
    producer.flush()
    producer.close()


def consume_all(consumer: KafkaConsumer, expected: int, timeout: float = 30) -> None:
    got = 0
    deadline = time.monotonic() + timeout
    while got < expected:
        assert time.monotonic() < deadline, f"consumed {got} of {expected}"
        got += sum(len(batch) for batch in consumer.poll(200).values())
    consumer.commit()


def group_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    return {p: n for (g, t, p), n in read_consumer_lag(bootstrap).items()
            if g == group and t == topic}


def commit_at_zero(bootstrap: str, topic: str) -> str:
    """A group that has committed offset 0 on partition 0 and nothing on partition 1."""
    group = f"lag-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)})
    consumer.close()
    return group


def test_lag_rises_while_a_group_stops_and_falls_to_zero_when_it_catches_up(
        broker: EmbeddedBroker, topic: str) -> None:
    group = f"lag-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, topic, 10)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    consume_all(consumer, 10)
    assert sum(group_lag(broker.bootstrap, group, topic).values()) == 0

    produce(broker.bootstrap, topic, 13)  # the group is not polling: these wait
    lag = group_lag(broker.bootstrap, group, topic)
    assert set(lag) == {0, 1}
    assert sum(lag.values()) == 13

    consume_all(consumer, 13)
    assert group_lag(broker.bootstrap, group, topic) == {0: 0, 1: 0}
    consumer.close()


def test_the_collector_reports_lag_and_kafka_up(broker: EmbeddedBroker, topic: str) -> None:
    produce(broker.bootstrap, topic, 20)
    group = commit_at_zero(broker.bootstrap, topic)
    families = {f.name: f for f in KafkaLagCollector(broker.bootstrap, wait_s=10).collect()}
    assert [s.value for s in families["dolbom_kafka_up"].samples] == [1]
    ours = [s for s in families["dolbom_consumer_lag"].samples if s.labels["group"] == group]
    # Only where the group has committed; all of partition 0 is behind an offset of 0.
    assert [(s.labels["topic"], s.labels["partition"]) for s in ours] == [(topic, "0")]
    assert ours[0].value == group_lag(broker.bootstrap, group, topic)[0] > 0


def test_an_absent_broker_gives_kafka_up_0_and_no_lag_without_blocking() -> None:
    collector = KafkaLagCollector(f"127.0.0.1:{free_port()}", wait_s=1.0, timeout_s=1.0)
    started = time.monotonic()
    families = {f.name: f for f in collector.collect()}
    assert time.monotonic() - started < 3
    assert [s.value for s in families["dolbom_kafka_up"].samples] == [0]
    assert "dolbom_consumer_lag" not in families
    # Cached: the next scrape within the TTL does not go to the broker again.
    started = time.monotonic()
    list(collector.collect())
    assert time.monotonic() - started < 0.5


def test_metrics_exports_every_family_the_issue_lists(
        broker: EmbeddedBroker, topic: str, sqlite_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    commit_at_zero(broker.bootstrap, topic)
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "DOLBOM_POLICY_DIR"):
        monkeypatch.delenv(name, raising=False)
    app = create_app(Settings(database_url=sqlite_url, kafka_bootstrap=broker.bootstrap))
    with TestClient(app) as client:
        text = client.get("/metrics").text
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    for family in ("dolbom_requests",                 # requests by status
                   "dolbom_time_to_assign_seconds",   # time-to-assign histogram
                   "dolbom_offers_per_fill_24h",      # offers per fill
                   "dolbom_sms_failures",             # SMS failures by code
                   "dolbom_consumer_lag",             # consumer lag
                   "dolbom_kafka_up",
                   "dolbom_outbox_backlog"):          # outbox backlog
        assert family in declared, f"{family} missing from /metrics"
    assert "dolbom_kafka_up 1.0" in text


