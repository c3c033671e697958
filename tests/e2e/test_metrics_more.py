"""/metrics read from the database at scrape time: time to assign, offers per fill, escalations.

The app runs in-process on a fresh SQLite database; requests are made and moved through
`app.state.bus` (what the API and the worker call). Timestamps are then set in the database
so each request falls in a known histogram bucket or outside the 24 h window.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from dispatch import commands as c
from dispatch import orm
from schemas.config import Settings
from tests.helpers import add_carers, add_family, hospital_request

SEOUL = ZoneInfo("Asia/Seoul")


@pytest.fixture
def app(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "DOLBOM_PUBLIC_URL",
                 "DOLBOM_DISPATCHER_PHONE", "DOLBOM_POLICY_DIR"):
        monkeypatch.delenv(name, raising=False)
    return create_app(Settings(database_url=sqlite_url, public_url="http://testserver.example"))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _tomorrow_10() -> datetime:
    day = datetime.now(SEOUL).date() + timedelta(days=1)
    return datetime.combine(day, time(10), SEOUL)


def _request(app: FastAPI, phone: str, district: str = "광산구") -> Any:
    bus = app.state.bus
    family = add_family(bus, phone=phone, district=district)
    request, _ = bus.handle(hospital_request(family, start=_tomorrow_10()))
    bus.handle(c.StartMatching(request_id=request.id, event_id=f"m:{request.id}"))
    return request


def _assign(app: FastAPI, request_id: str, carer_id: str, *, took_s: float,
            days_ago: float = 0) -> None:
    """A dispatcher assigns; then the request is made `took_s` older than its assignment."""
    app.state.bus.handle(c.AssignCarer(request_id=request_id, carer_id=carer_id,
                                       dispatcher="상황실"))
    assigned_at = datetime.now(UTC) - timedelta(days=days_ago)
    t = orm.timeline.c
    with app.state.engine.begin() as conn:
        conn.execute(update(orm.timeline).where(t.request_id == request_id,
                                                t.type.in_(["assigned", "dispatcher_assigned"]))
                     .values(at=assigned_at))
        conn.execute(update(orm.requests).where(orm.requests.c.id == request_id)
                     .values(created_at=assigned_at - timedelta(seconds=took_s)))


def _samples(body: str, name: str) -> dict[str, float]:
    """`name{labels} value` lines of one family, keyed by their label text."""
    found = {}
    for line in body.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(\{{.*\}})? (\S+)", line)
        if m:
            found[m.group(1) or ""] = float(m.group(2))
    return found


def test_time_to_assign_offers_per_fill_and_escalations(app: FastAPI,
                                                        client: TestClient) -> None:
    carers = add_carers(app.state.bus, 3)
    quick = _request(app, "+821099990001")        # a wave of 3 offers
    slow = _request(app, "+821099990002")         # a wave of 3 offers
    old = _request(app, "+821099990003")          # assigned two days ago: outside the window
    _assign(app, quick.id, carers[0].id, took_s=10)
    _assign(app, slow.id, carers[1].id, took_s=100)
    _assign(app, old.id, carers[2].id, took_s=3, days_ago=2)
    escalated = _request(app, "+821099990004", district="북구")  # nobody there: escalated
    assert escalated is not None

    body = client.get("/metrics").text
    assert "# TYPE dolbom_time_to_assign_seconds histogram" in body
    buckets = _samples(body, "dolbom_time_to_assign_seconds_bucket")
    assert buckets == {'{le="5.0"}': 0, '{le="15.0"}': 1, '{le="30.0"}': 1, '{le="60.0"}': 1,
                       '{le="120.0"}': 2, '{le="300.0"}': 2, '{le="600.0"}': 2,
                       '{le="1800.0"}': 2, '{le="+Inf"}': 2}
    assert _samples(body, "dolbom_time_to_assign_seconds_count") == {"": 2}
    assert _samples(body, "dolbom_time_to_assign_seconds_sum")[""] == pytest.approx(110)
    assert _samples(body, "dolbom_offers_per_fill_24h") == {"": 3.0}
    assert _samples(body, "dolbom_requests_escalated_24h") == {"": 1.0}


def test_the_new_metrics_are_zero_on_an_empty_store(client: TestClient) -> None:
    body = client.get("/metrics").text
    assert _samples(body, "dolbom_time_to_assign_seconds_count") == {"": 0}
    assert _samples(body, "dolbom_time_to_assign_seconds_bucket")['{le="+Inf"}'] == 0
    assert _samples(body, "dolbom_offers_per_fill_24h") == {"": 0}
    assert _samples(body, "dolbom_requests_escalated_24h") == {"": 0}
