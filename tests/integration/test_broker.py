"""The embedded Tansu broker and topic setup, against a real broker process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from infra.broker import EmbeddedBroker, free_port, wait_for_kafka
from infra.topics import describe, ensure_topics
from schemas.topics import CATALOGUE, Topic
from streams.lease import process_alive

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_until_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return not process_alive(pid)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as b:
        yield b


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_broker_starts_on_free_port_and_answers(broker: EmbeddedBroker) -> None:
    assert broker.running
    assert broker.pid is not None and process_alive(broker.pid)
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.port != 19092
    wait_for_kafka(broker.bootstrap, timeout=5.0)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
    try:
        assert not [t for t in admin.list_topics() if t.startswith("dolbom.")]
    finally:
        admin.close()


def test_wait_for_kafka_times_out_when_nothing_listens() -> None:
    with pytest.raises(TimeoutError):
        wait_for_kafka(f"127.0.0.1:{free_port()}", timeout=0.5)


def test_start_fails_clearly_when_broker_cannot_bind(tmp_path: Path) -> None:
    # Bound but not listening: Tansu gets EADDRINUSE and exits, and no probe can
    # connect, so only noticing the dead child can end the wait early.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        b = EmbeddedBroker(port, log_path=tmp_path / "tansu.log")
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="exited") as info:
            b.start(timeout=10.0)
        assert time.monotonic() - started < 8.0
        assert "Address in use" in str(info.value)
        assert not b.running


def test_ensure_topics_creates_catalogue_and_is_idempotent(broker: EmbeddedBroker) -> None:
    created = ensure_topics(broker.bootstrap)
    assert sorted(created) == sorted(t.name for t in CATALOGUE)
    listing = describe(broker.bootstrap)
    for topic in CATALOGUE:
        assert listing.get(topic.name) == topic.partitions, topic.name

    assert ensure_topics(broker.bootstrap) == []
    assert describe(broker.bootstrap) == listing


def test_ensure_topics_tolerates_losing_a_creation_race(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_topics(broker.bootstrap)
    # Pretend the topics were missing when we looked, as when another process creates
    # them between our metadata read and our CreateTopics: that must not be an error.
    monkeypatch.setattr("infra.topics._partition_counts", lambda admin, names: {})
    assert ensure_topics(broker.bootstrap) == []


def test_ensure_topics_refuses_partition_mismatch(broker: EmbeddedBroker) -> None:
    ensure_topics(broker.bootstrap, [Topic("t.mismatch", "k", 2, ())])
    with pytest.raises(RuntimeError, match="differ from the catalogue"):
        ensure_topics(broker.bootstrap, [Topic("t.mismatch", "k", 4, ())])


def test_keyed_messages_round_trip_in_per_key_order(broker: EmbeddedBroker) -> None:
    topic = Topic("t.roundtrip", "key", 3, ())
    ensure_topics(broker.bootstrap, [topic])
    keys = [f"req-{i}" for i in range(7)]
    sent: dict[str, list[int]] = defaultdict(list)

    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
    )
    try:
        for n in range(100):
            key = keys[n % len(keys)]
            sent[key].append(n)
            producer.send(topic.name, key=key.encode(), value=str(n).encode())
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)

    consumer = KafkaConsumer(
        topic.name,
        bootstrap_servers=broker.bootstrap,
        group_id="t-roundtrip",
        auto_offset_reset="earliest",
        max_poll_interval_ms=3000,
        # Measured on Tansu with kafka-python 3.x: JoinGroup is answered after about
        # half the *session* timeout (default 45 s -> a 23 s join), whatever the
        # rebalance timeout, so the session timeout must be short too.
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=10,
        enable_auto_commit=False,
    )
    received: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    count = 0
    try:
        deadline = time.monotonic() + 30
        while count < 100 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    assert record.key is not None and record.value is not None
                    key = record.key.decode()
                    received[key].append(int(record.value))
                    partitions[key].add(record.partition)
                    count += 1
    finally:
        consumer.close()

    assert count == 100
    assert received == sent
    assert all(len(p) == 1 for p in partitions.values())
    # Keys landed on more than one partition, so ordering was checked across partitions.
    assert len(set().union(*partitions.values())) > 1


def test_stop_leaves_no_process_and_is_idempotent(tmp_path: Path) -> None:
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    pid = b.pid
    assert pid is not None and process_alive(pid)
    b.stop()
    assert not process_alive(pid)
    assert not b.running and b.pid is None
    b.stop()


def test_broker_started_from_short_lived_thread_survives_it() -> None:
    # PR_SET_PDEATHSIG tracks the forking *thread*; this fails if the broker is
    # spawned from the caller's thread instead of the long-lived spawner.
    holder: list[EmbeddedBroker] = []
    thread = threading.Thread(target=lambda: holder.append(EmbeddedBroker().start()))
    thread.start()
    thread.join(timeout=30)
    assert holder, "broker did not start"
    b = holder[0]
    try:
        time.sleep(0.5)
        assert b.running
        wait_for_kafka(b.bootstrap, timeout=2.0)
    finally:
        b.stop()


CHILD_SCRIPT = """
import sys, time
from infra.broker import EmbeddedBroker
b = EmbeddedBroker(die_with_parent=sys.argv[1] == "1").start()
print(b.pid, flush=True)
time.sleep(120)
"""


def _start_broker_in_child_then_sigkill_it(die_with_parent: bool) -> int:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, "1" if die_with_parent else "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), f"child did not report a broker pid: {line!r}"
        broker_pid = int(line)
        assert process_alive(broker_pid)
    finally:
        child.kill()
        child.wait(timeout=10)
    return broker_pid


def test_broker_dies_when_parent_is_sigkilled() -> None:
    broker_pid = _start_broker_in_child_then_sigkill_it(die_with_parent=True)
    try:
        assert wait_until_dead(broker_pid, timeout=5.0), "orphaned tansu process survived"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker_pid, signal.SIGKILL)


def test_orphan_check_detects_a_surviving_broker() -> None:
    # Control for the test above: without the death signal the same check must see
    # the orphan, or a pass above would prove nothing.
    broker_pid = _start_broker_in_child_then_sigkill_it(die_with_parent=False)
    try:
        assert not wait_until_dead(broker_pid, timeout=1.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker_pid, signal.SIGKILL)
