"""One-hop produce -> consume latency on the embedded broker.

    python -m infra.bench_broker --messages 500

Tansu does not wake a waiting fetch when data arrives (DESIGN.md section 4), so the
consumer's fetch wait sets the latency floor; this measures that floor for the two
client stacks dolbom uses (kafka-python directly, aiokafka under Faust).

Producer and consumer share one process, so a monotonic clock stamped into the
payload measures the hop without any cross-host clock skew.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition as AIOTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from infra.broker import EmbeddedBroker
from infra.topics import ensure_topics
from schemas.topics import Topic

__all__ = ["Latency", "measure_floor", "measure_floor_aiokafka", "measure_floor_kafka_python"]

Client = Literal["kafka-python", "aiokafka"]

# Payload: a flag (1 = measured, 0 = warm-up) and the send time in perf_counter ns.
_PAYLOAD = struct.Struct(">BQ")
# Warm-up messages make sure the consumer is already fetching when measuring
# starts; otherwise the first samples include connection and offset-lookup time.
_WARMUP = 5
_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Latency:
    client: str
    fetch_wait_ms: int
    samples_ms: tuple[float, ...]
    sent: int

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile, q in [0, 100]."""
        if not self.samples_ms:
            return math.nan
        ordered = sorted(self.samples_ms)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def max(self) -> float:
        return max(self.samples_ms, default=math.nan)

    @property
    def lost(self) -> int:
        return self.sent - len(self.samples_ms)


def _fresh_topic(bootstrap: str) -> str:
    # One partition: the floor is about fetch timing, not partition fan-out, and a
    # fresh topic means no earlier run's messages get counted.
    name = f"bench.floor.{uuid.uuid4().hex[:12]}"
    ensure_topics(bootstrap, [Topic(name, "none", 1, ())])
    return name


def _pace(start: float, i: int, rate_per_s: float) -> None:
    # Absolute schedule, so a slow send does not push every later send back.
    delay = start + i / rate_per_s - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def measure_floor_kafka_python(
    bootstrap: str, n: int, fetch_wait_ms: int, *, rate_per_s: float = 200.0
) -> Latency:
    """kafka-python producer (acks=all, idempotent, linger 0) -> kafka-python consumer."""
    topic = _fresh_topic(bootstrap)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        fetch_max_wait_ms=fetch_wait_ms,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    # Manual assignment: a group join on Tansu takes seconds and tells us nothing
    # about the per-message hop.
    consumer.assign([TopicPartition(topic, 0)])
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    samples: list[float] = []
    warm = threading.Event()
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                now = time.perf_counter_ns()
                for record in records:
                    assert record.value is not None
                    measured, sent_ns = _PAYLOAD.unpack(record.value)
                    if measured:
                        samples.append((now - sent_ns) / 1e6)
                    else:
                        warm.set()

    reader = threading.Thread(target=consume, name="bench-consumer", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + _TIMEOUT_S
        while not warm.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("consumer never received the warm-up messages")
            producer.send(topic, _PAYLOAD.pack(0, time.perf_counter_ns()))
            producer.flush()
            warm.wait(0.2)
        start = time.perf_counter()
        for i in range(n):
            _pace(start, i, rate_per_s)
            producer.send(topic, _PAYLOAD.pack(1, time.perf_counter_ns()))
        producer.flush()
        deadline = time.monotonic() + _TIMEOUT_S
        while len(samples) < n and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        reader.join(timeout=5)
        producer.close(timeout=5)
        consumer.close()
    return Latency("kafka-python", fetch_wait_ms, tuple(samples), n)


async def measure_floor_aiokafka(
    bootstrap: str,
    n: int,
    fetch_wait_ms: int,
    *,
    rate_per_s: float = 200.0,
    idempotent: bool = True,
) -> Latency:
    """aiokafka producer (acks=all, linger 0, idempotent unless told) -> aiokafka consumer.

    Tansu 0.6.0 fails aiokafka's idempotent producer at start (UnknownError on
    InitProducerId: aiokafka only speaks v0 of that request, which Tansu mishandles),
    so on the embedded broker pass ``idempotent=False``.
    """
    topic = await asyncio.to_thread(_fresh_topic, bootstrap)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent, linger_ms=0
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        fetch_max_wait_ms=fetch_wait_ms,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        await producer.stop()
        raise
    consumer.assign([AIOTopicPartition(topic, 0)])
    samples: list[float] = []
    warm = asyncio.Event()

    async def consume() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter_ns()
            for records in batches.values():
                for record in records:
                    assert record.value is not None
                    measured, sent_ns = _PAYLOAD.unpack(record.value)
                    if measured:
                        samples.append((now - sent_ns) / 1e6)
                    else:
                        warm.set()

    reader = asyncio.create_task(consume())
    try:
        async with asyncio.timeout(_TIMEOUT_S):
            while not warm.is_set():
                await producer.send_and_wait(topic, _PAYLOAD.pack(0, time.perf_counter_ns()))
                try:
                    async with asyncio.timeout(0.2):
                        await warm.wait()
                except TimeoutError:
                    continue
        loop = asyncio.get_running_loop()
        start = loop.time()
        deliveries = []
        for i in range(n):
            delay = start + i / rate_per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            deliveries.append(await producer.send(topic, _PAYLOAD.pack(1, time.perf_counter_ns())))
        await asyncio.gather(*deliveries)
        deadline = loop.time() + _TIMEOUT_S
        while len(samples) < n and loop.time() < deadline:
            await asyncio.sleep(0.02)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    label = "aiokafka" if idempotent else "aiokafka*"
    return Latency(label, fetch_wait_ms, tuple(samples), n)


def measure_floor(
    bootstrap: str,
    n: int,
    fetch_wait_ms: int,
    *,
    client: Client = "kafka-python",
    rate_per_s: float = 200.0,
    idempotent: bool = True,
) -> Latency:
    """Measure one-hop latency of ``n`` paced messages on a fresh one-partition topic.

    Blocking; for aiokafka it runs its own event loop, so from async code await
    :func:`measure_floor_aiokafka` instead.
    """
    if client == "kafka-python":
        return measure_floor_kafka_python(bootstrap, n, fetch_wait_ms, rate_per_s=rate_per_s)
    if client == "aiokafka":
        return asyncio.run(
            measure_floor_aiokafka(
                bootstrap, n, fetch_wait_ms, rate_per_s=rate_per_s, idempotent=idempotent
            )
        )
    raise ValueError(f"unknown client {client!r}")


def format_table(results: list[Latency]) -> str:
    header = (
        f"{'client':<14}{'fetch_wait':>11}{'n':>6}{'lost':>6}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        rows.append(
            f"{r.client:<14}{r.fetch_wait_ms:>11}{len(r.samples_ms):>6}{r.lost:>6}"
            f"{r.p50:>9.1f}{r.p95:>9.1f}{r.p99:>9.1f}{r.max:>9.1f}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200.0, help="sends per second")
    parser.add_argument(
        "--fetch-wait-ms", type=int, nargs="+", default=[10],
        help="consumer fetch_max_wait_ms values to try",
    )
    parser.add_argument(
        "--bootstrap", default=None,
        help="measure an existing cluster instead of starting an embedded broker",
    )
    args = parser.parse_args(argv)

    notes: list[str] = []

    def run(bootstrap: str) -> list[Latency]:
        results = []
        for wait in args.fetch_wait_ms:
            results.append(
                measure_floor(bootstrap, args.messages, wait, rate_per_s=args.rate)
            )
            try:
                results.append(
                    measure_floor(bootstrap, args.messages, wait, client="aiokafka",
                                  rate_per_s=args.rate)
                )
            except KafkaError as exc:
                # Measure the hop anyway; the table marks the row so nobody mistakes
                # it for the idempotent configuration production uses.
                notes.append(
                    f"* aiokafka idempotent producer failed to start ({exc!r}); "
                    "row measured with enable_idempotence=False, acks=all"
                )
                results.append(
                    measure_floor(bootstrap, args.messages, wait, client="aiokafka",
                                  rate_per_s=args.rate, idempotent=False)
                )
        return results

    if args.bootstrap:
        results = run(args.bootstrap)
        where = args.bootstrap
    else:
        with EmbeddedBroker() as broker:
            results = run(broker.bootstrap)
            where = f"embedded Tansu at {broker.bootstrap}"
    print(f"one-hop produce->consume latency, {args.messages} msgs at {args.rate:g}/s, {where}")
    print(format_table(results))
    for note in dict.fromkeys(notes):
        print(note)
    return 0 if all(r.lost == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
