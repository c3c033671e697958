"""Prometheus metrics read from the system of record at scrape time.

The database is where requests, the SMS queue and the outbox live, so counting there
gives the same figures whichever API replica is scraped and however many workers run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from api.auth import Caller, require
from dispatch import orm
from dispatch.db import READ_ONLY

router = APIRouter()

# Rows the notifier still owes: waiting, in the gateway's hands, or waiting for a lookup.
SMS_QUEUED = ("pending", "sending", "unknown")


class StoreCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        n, r, o = orm.notifications.c, orm.requests.c, orm.outbox.c
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            by_status = conn.execute(select(r.status, func.count()).group_by(r.status)).all()
            sms = conn.execute(select(n.status, func.count()).group_by(n.status)).all()
            failures = conn.execute(select(n.error_code, func.count()).where(
                n.error_code.is_not(None)).group_by(n.error_code)).all()
            outbox = conn.scalar(select(func.count()).where(o.published_at.is_(None)))
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
