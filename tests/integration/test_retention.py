"""Bounding the embedded broker's memory (infra/retention.py), on the real broker.

The broker (Tansu, memory storage) cannot delete records, so `dolbom up` recycles it: once
the workers' group has committed everything, a fresh broker takes the old one's port. The
invariants: its memory drops; nothing is lost or sent twice across the swap; with unread
messages in the broker, no swap happens at all. `dolbom broker trim` plans per partition
below what every reading group has committed, and says clearly that Tansu can't do it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from infra.broker import EmbeddedBroker
from infra.harness import Running, running_system, wait_for
from infra.retention import BrokerRecycler, TrimUnsupported, behind, rss_mb, trim, trim_plan
from schemas import topics
from tests.faults._flow import (
    carers_answering_yes,
    diagnose,
    duplicate_sms,
    kill,
    overlapping_assignments,
    population,
    restart,
    wait_all,
)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Running]:
    with running_system(tmp_path, sweep_interval_s=0.5, sms_rate_per_s=50) as running:
        yield running


def fill(bootstrap: str, topic: str, count: int, size: int = 1000) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    for i in range(count):
        producer.send(topic, key=str(i).encode(), value=b"x" * size)
    producer.flush()
    producer.close()


@pytest.mark.e2e
def test_the_broker_is_recycled_when_drained_and_nothing_is_lost(system: Running) -> None:
    local = system.system
    assert local.broker is not None and local.broker.pid is not None
    carers, families = population(system, carers=3, families=3, tag="400")
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        ids = [system.request(families[i], day_offset=1 + i)["id"] for i in range(3)]
        wait_all(system, ids, "assigned", timeout=60)
        # Bulk no worker reads (as a long run's history would be), to make memory visible.
        fill(local.bootstrap, topics.CARERS.name, 20_000)
        old_pid, port = local.broker.pid, local.broker.port
        recycled = BrokerRecycler(local, max_mb=1, drain_timeout_s=60).recycle()
        assert recycled is not None, "the workers had read everything: it should recycle"
        print(f"\nbroker RSS {recycled.rss_before_mb:.1f} MB -> {recycled.rss_after_mb:.1f} MB, "
              f"paused {recycled.paused_s:.1f}s")
        assert local.broker.pid != old_pid and local.broker.port == port
        assert recycled.rss_after_mb < recycled.rss_before_mb - 15
        assert all(child.alive for child in local.children.values())
        # The system works on the fresh broker.
        ids += [system.request(families[i], day_offset=10 + i)["id"] for i in range(3)]
        statuses = wait_all(system, ids, "assigned", timeout=90)
    lost = {i: s for i, s in statuses.items() if s != "assigned"}
    assert lost == {}, diagnose(system, lost)
    assert overlapping_assignments(system, ids) == 0
    assert duplicate_sms(system) == {"same_text_twice": 0, "notification_key_twice": 0,
                                     "row_sent_twice": 0, "sends_without_row": 0}


@pytest.mark.e2e
def test_with_unread_messages_the_broker_is_not_recycled(system: Running) -> None:
    local = system.system
    assert local.broker is not None
    carers, families = population(system, carers=2, families=1, tag="500")
    kill(local.children["worker"])
    request = system.request(families[0])["id"]
    group = local.settings.worker_id
    # Published (the relay is running), and nobody has read it.
    wait_for(lambda: behind(local.bootstrap, group), 30, "the request to reach the broker")
    old_pid = local.broker.pid
    assert BrokerRecycler(local, max_mb=1, drain_timeout_s=3).recycle() is None
    assert local.broker.pid == old_pid
    assert local.children["relay"].alive, "the relay must be started again"
    restart(system, "worker")
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        system.wait_status(request, "assigned", timeout=60)


def test_tick_recycles_only_above_the_limit_and_only_every_check(
        system_free_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    class Local:  # what the recycler looks at before deciding
        broker = system_free_broker

    now = [0.0]
    calls: list[float] = []

    def make(max_mb: float) -> BrokerRecycler:
        recycler = BrokerRecycler(Local(), max_mb, check_every_s=30,  # type: ignore[arg-type]
                                  clock=lambda: now[0])
        monkeypatch.setattr(recycler, "recycle", lambda: calls.append(now[0]))
        return recycler

    assert system_free_broker.pid is not None
    idle = rss_mb(system_free_broker.pid)
    small, large, off = make(idle / 2), make(idle * 4), make(0)
    now[0] = 10
    for recycler in (small, large, off):
        recycler.tick()
    assert calls == []                      # not yet time to look
    now[0] = 31
    for recycler in (small, large, off):
        recycler.tick()
    assert calls == [31]                    # only the one whose limit the broker is over


@pytest.fixture(scope="module")
def system_free_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


def test_trim_plan_never_passes_an_offset_some_group_has_not_committed(
        system_free_broker: EmbeddedBroker) -> None:
    bootstrap = system_free_broker.bootstrap
    topic = f"dolbom.trimtest.{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(10):
        producer.send(topic, value=b"v", partition=i % 2)
    producer.flush()
    producer.close()
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    def commit(group: str, offsets: dict[TopicPartition, int]) -> None:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                 enable_auto_commit=False)
        consumer.assign(list(offsets))
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        consumer.close()

    fast, slow = f"fast-{uuid.uuid4().hex[:4]}", f"slow-{uuid.uuid4().hex[:4]}"
    commit(fast, {p0: 5, p1: 5})   # read everything
    commit(slow, {p0: 2})          # two of partition 0, nothing of partition 1 yet
    plan = {p.partition: p for p in trim_plan(bootstrap) if p.topic == topic}
    assert plan[0].safe == 2 and plan[0].start == 0
    assert plan[1].safe is None and plan[1].blocked_by == (slow,)

    with pytest.raises(TrimUnsupported, match="does not implement"):
        trim(bootstrap, list(plan.values()))

    # The operator's command: the plan, then a clear refusal (exit 1), not a trace.
    env = {**os.environ, "DOLBOM_KAFKA_BOOTSTRAP": bootstrap}
    shown = subprocess.run([sys.executable, "-m", "infra.cli", "broker", "trim", "--dry-run"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert f"{topic}[0] starts at 0: every group has read below 2" in shown.stdout
    assert f"{topic}[1] starts at 0: kept ({slow} has not committed here)" in shown.stdout
    done = subprocess.run([sys.executable, "-m", "infra.cli", "broker", "trim"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "does not implement it" in done.stderr and "Traceback" not in done.stderr
    # The broker survives the refusal and still answers.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    assert consumer.beginning_offsets([p0]) == {p0: 0}
    consumer.close()


def test_nothing_to_trim_sends_nothing(system_free_broker: EmbeddedBroker) -> None:
    started = time.monotonic()
    assert trim("127.0.0.1:1", []) == 0  # no request at all, so no broker needed
    assert time.monotonic() - started < 1
