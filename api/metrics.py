"""Prometheus metrics read from the system of record at scrape time.

The database is where requests, the SMS queue and the outbox live, so counting there
gives the same figures whichever API replica is scraped and however many workers run.
"""

from __future__ import annotations

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


def registry_for(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(engine))
    return registry
