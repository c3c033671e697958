"""Prometheus metrics read from the system of record at scrape time.

The database is where requests, the SMS queue and the outbox live, so counting there
gives the same figures whichever API replica is scraped and however many workers run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, distinct, func, select

from api.auth import Caller, require
from dispatch import orm
from dispatch.db import READ_ONLY

router = APIRouter()
log = logging.getLogger("dolbom.metrics")

# Rows the notifier still owes: waiting, in the gateway's hands, or waiting for a lookup.
SMS_QUEUED = ("pending", "sending", "unknown")

# Timeline entries that mean "the request has its carer": a YES or a centre place
# (`assigned`), or a dispatcher's choice (`dispatcher_assigned`).
ASSIGNED_TYPES = ("assigned", "dispatcher_assigned")
TIME_TO_ASSIGN_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800)
WINDOW = timedelta(hours=24)


class StoreCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        n, r, o = orm.notifications.c, orm.requests.c, orm.outbox.c
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            by_status = conn.execute(select(r.status, func.count()).group_by(r.status)).all()
            sms = conn.execute(select(n.status, func.count()).group_by(n.status)).all()
            failures = conn.execute(select(n.error_code, func.count()).where(
                n.error_code.is_not(None)).group_by(n.error_code)).all()
            outbox = conn.scalar(select(func.count()).where(o.published_at.is_(None)))
            since = datetime.now(UTC) - WINDOW
            filled = _filled_since(conn, since)
            offers = _offers_of(conn, [request_id for request_id, _ in filled])
            escalated = _escalated_since(conn, since)
        requests = GaugeMetricFamily("dolbom_requests", "Requests by status", labels=["status"])
        for status, count in by_status:
            requests.add_metric([status], count)
        yield requests
        notes = GaugeMetricFamily("dolbom_sms", "SMS notifications by status", labels=["status"])
        for status, count in sms:
            notes.add_metric([status], count)
        yield notes
        yield GaugeMetricFamily("dolbom_sms_backlog", "SMS not yet handed over for good",
                                value=sum(count for status, count in sms if status in SMS_QUEUED))
        codes = GaugeMetricFamily("dolbom_sms_failures", "SMS with a provider error, by code",
                                  labels=["code"])
        for code, count in failures:
            codes.add_metric([str(code)], count)
        yield codes
        yield GaugeMetricFamily("dolbom_outbox_backlog", "Outbox rows not yet on Kafka",
                                value=outbox or 0)
        yield _time_to_assign([seconds for _, seconds in filled])
        # Centre places take no offers; a fill through offers has at least one.
        by_offer = [n for n in offers.values() if n > 0]
        yield GaugeMetricFamily(
            "dolbom_offers_per_fill_24h",
            "Mean offers made per request filled through offers in the last 24 h",
            value=sum(by_offer) / len(by_offer) if by_offer else 0)
        yield GaugeMetricFamily("dolbom_requests_escalated_24h",
                                "Requests escalated in the last 24 h", value=escalated)


def _filled_since(conn: Connection, since: datetime) -> list[tuple[str, float]]:
    """(request id, seconds from creation to its first assignment), first assigned since `since`."""
    r, t = orm.requests.c, orm.timeline.c
    first = func.min(t.at).label("first")
    rows = conn.execute(
        select(r.id, r.created_at, first)
        .join(orm.timeline, t.request_id == r.id)
        .where(t.type.in_(ASSIGNED_TYPES))
        .group_by(r.id, r.created_at)
        .having(first >= since)).all()
    return [(rid, max((assigned - created).total_seconds(), 0.0))
            for rid, created, assigned in rows]


def _offers_of(conn: Connection, request_ids: list[str]) -> dict[str, int]:
    if not request_ids:
        return {}
    f = orm.offers.c
    counts = {rid: 0 for rid in request_ids}
    for i in range(0, len(request_ids), 500):
        chunk = request_ids[i:i + 500]
        for rid, count in conn.execute(select(f.request_id, func.count())
                                       .where(f.request_id.in_(chunk))
                                       .group_by(f.request_id)):
            counts[rid] = count
    return counts


def _escalated_since(conn: Connection, since: datetime) -> int:
    t = orm.timeline.c
    return conn.scalar(select(func.count(distinct(t.request_id)))
                       .where(t.type == "escalated", t.at >= since)) or 0


def _time_to_assign(seconds: list[float]) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = [
        (str(float(le)), float(sum(1 for s in seconds if s <= le)))
        for le in TIME_TO_ASSIGN_BUCKETS]
    buckets.append(("+Inf", float(len(seconds))))
    return HistogramMetricFamily(
        "dolbom_time_to_assign_seconds",
        "Seconds from a request's creation to its first assignment, requests assigned in the "
        "last 24 h", buckets=buckets, sum_value=sum(seconds))


@router.get("/v1/sms/backlog")
def sms_backlog(request: Request,
                _: Annotated[Caller, Depends(require("dispatcher"))]) -> dict[str, object]:
    """The SMS queue as the console shows it: how many are owed, and by state."""
    n = orm.notifications.c
    engine: Engine = request.app.state.engine
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        rows = conn.execute(select(n.status, func.count()).group_by(n.status)).all()
    by_status = {status: count for status, count in rows}
    return {"backlog": sum(by_status.get(s, 0) for s in SMS_QUEUED), "by_status": by_status}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def registry_for(engine: Engine, kafka_bootstrap: str | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(engine))
    if kafka_bootstrap:
        lag = KafkaLagCollector(kafka_bootstrap)
        lag.warm_up()
        registry.register(lag)
    return registry


# -- consumer lag, from the broker ------------------------------------------------------

# (group, topic, partition) -> messages on the partition the group has not committed past.
Lag = dict[tuple[str, str, int], int]


def read_offsets(bootstrap: str, timeout_s: float = 2.0, *,
                 partitions: tuple[tuple[str, int], ...] = (),
                 ) -> tuple[dict[tuple[str, str, int], int], dict[tuple[str, int], int]]:
    """Every group's committed offsets, and the end of each partition they (or `partitions`)
    name: `({(group, topic, partition): committed}, {(topic, partition): end})`.

    The end of a partition is the high watermark a fetch reports. Kafka's ListOffsets would
    be the usual way, but the embedded broker (Tansu 0.6.0) answers it with the last batch's
    *base* offset + 1, short by the rest of that batch (measured: 13 records in batches of
    10 and 3 → 11), so it only tells where to fetch from cheaply.
    """
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.admin import OffsetSpec

    timeout_ms = max(500, int(timeout_s * 1000))
    deadline = time.monotonic() + timeout_s
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="dolbom-metrics",
                             request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    try:
        # Offsets a group once committed on a topic deleted since are not lag: skip them
        # (Apache Kafka keeps them for offsets.retention.minutes; Tansu drops them at once).
        exists = {(t["name"], p["partition_index"]) for t in admin.describe_topics()
                  if not t.get("error_code") for p in t.get("partitions") or []}
        committed: dict[tuple[str, str, int], int] = {}
        for group in sorted(g["group_id"] for g in admin.list_groups()):
            for tp, meta in admin.list_group_offsets({group: None}).get(group, {}).items():
                if meta is not None and meta.offset >= 0 and (tp.topic, tp.partition) in exists:
                    committed[(group, tp.topic, tp.partition)] = meta.offset
        wanted = sorted({TopicPartition(t, p) for _, t, p in committed}
                        | {TopicPartition(t, p) for t, p in partitions if (t, p) in exists})
        if not wanted:
            return committed, {}
        latest = {tp: found.offset for tp, found in admin.list_partition_offsets(
            {tp: OffsetSpec.LATEST for tp in wanted}, timeout_ms=timeout_ms).items()}
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="dolbom-metrics",
                             group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10,
                             max_partition_fetch_bytes=1, request_timeout_ms=timeout_ms + 500,
                             bootstrap_timeout_ms=timeout_ms)
    try:
        consumer.assign(wanted)
        for tp in wanted:
            floor = min((o for (_, t, p), o in committed.items()
                         if (t, p) == (tp.topic, tp.partition)), default=0)
            consumer.seek(tp, max(latest.get(tp, 0), floor))
        while any(consumer.highwater(tp) is None for tp in wanted):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no high watermark from {bootstrap} within {timeout_s}s")
            consumer.poll(timeout_ms=50)
        ends = {(tp.topic, tp.partition): int(consumer.highwater(tp) or 0) for tp in wanted}
    finally:
        consumer.close(autocommit=False)
    return committed, ends


def read_consumer_lag(bootstrap: str, timeout_s: float = 2.0) -> Lag:
    """Every consumer group's lag on each partition it has committed on.

    A partition a group has never committed on has no lag figure: the group has not read
    it yet, or does not read it at all, and the broker cannot say which.
    """
    committed, ends = read_offsets(bootstrap, timeout_s)
    return {(group, topic, partition): max(ends[(topic, partition)] - offset, 0)
            for (group, topic, partition), offset in committed.items()}


class KafkaLagCollector(Collector):
    """`dolbom_consumer_lag{group,topic,partition}` and `dolbom_kafka_up`.

    A scrape must answer even when the broker is slow or gone: the broker is read at most
    every `ttl_s` on a background thread, a scrape waits for it at most `wait_s`, and
    without a fresh answer the lag is left out and `dolbom_kafka_up` is 0.
    """

    def __init__(self, bootstrap: str, *, ttl_s: float = 5.0, wait_s: float = 1.5,
                 timeout_s: float = 2.0) -> None:
        self.bootstrap = bootstrap
        self.ttl_s, self.wait_s, self.timeout_s = ttl_s, wait_s, timeout_s
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._lag: Lag | None = None
        self._reading: threading.Thread | None = None

    def _read(self) -> None:
        try:
            lag: Lag | None = read_consumer_lag(self.bootstrap, self.timeout_s)
        except Exception as exc:  # any broker trouble only means "no figure now"
            if self._lag is not None or self._read_at == -float("inf"):
                # Once per outage, not once per scrape.
                log.warning("consumer lag unavailable from %s: %s: %s", self.bootstrap,
                            type(exc).__name__, exc)
            lag = None
        with self._lock:
            self._lag, self._read_at = lag, time.monotonic()

    def _start_read(self) -> threading.Thread:
        """The read in flight, or a new one (call with the lock held)."""
        reading = self._reading
        if reading is None or not reading.is_alive():
            reading = self._reading = threading.Thread(
                target=self._read, name="dolbom-consumer-lag", daemon=True)
            reading.start()
        return reading

    def warm_up(self) -> None:
        """Start the first read now, so the first scrape finds a figure ready."""
        with self._lock:
            self._start_read()

    def current(self) -> Lag | None:
        with self._lock:
            if time.monotonic() - self._read_at < self.ttl_s:
                return self._lag
            reading = self._start_read()
        reading.join(self.wait_s)
        with self._lock:
            # A figure older than two reads is too old to show as the present.
            fresh = time.monotonic() - self._read_at < 2 * self.ttl_s + self.wait_s
            return self._lag if fresh else None

    def collect(self) -> Iterator[Metric]:
        lag = self.current()
        yield GaugeMetricFamily("dolbom_kafka_up",
                                "1 if the broker answered the last consumer-lag read",
                                value=0 if lag is None else 1)
        if lag is None:
            return
        family = GaugeMetricFamily(
            "dolbom_consumer_lag", "Messages a consumer group has not committed past",
            labels=["group", "topic", "partition"])
        for (group, topic, partition), behind in sorted(lag.items()):
            family.add_metric([group, topic, str(partition)], behind)
        yield family
