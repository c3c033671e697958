"""Status callbacks (signed, duplicated, out of order), signatures behind a proxy, /metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from dispatch import commands as c
from dispatch import orm
from infra.twilio_stub import sign
from schemas.config import Settings
from tests.helpers import add_family, hospital_request

PUBLIC = "https://dolbom.example.org"
TOKEN = "status-test-token"


@pytest.fixture
def app(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "DOLBOM_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    return create_app(Settings(database_url=sqlite_url, public_url=PUBLIC,
                               TWILIO_AUTH_TOKEN=TOKEN, TWILIO_ACCOUNT_SID="ACdolbomtest"))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://internal:8000") as test_client:
        yield test_client


def _sent_notification(app: FastAPI, sid: str) -> str:
    bus = app.state.bus
    family = add_family(bus)
    bus.handle(hospital_request(family, start=_tomorrow_10()))
    with app.state.engine.begin() as conn:
        note_id = conn.scalar(select(orm.notifications.c.id))
        conn.execute(orm.notifications.update().values(status="sent", sid=sid,
                                                       provider_status="queued"))
    return str(note_id)


def _tomorrow_10() -> Any:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    day = datetime.now(ZoneInfo("Asia/Seoul")).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, 10, tzinfo=ZoneInfo("Asia/Seoul"))


def _callback(client: TestClient, sid: str, status: str, *, url: str | None = None,
              headers: dict[str, str] | None = None, code: str | None = None) -> int:
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "ACdolbomtest"}
    if code:
        params["ErrorCode"] = code
    signed_for = url or PUBLIC + "/webhooks/twilio/status"
    return client.post("/webhooks/twilio/status", data=params, headers={
        "X-Twilio-Signature": sign(signed_for, params, TOKEN), **(headers or {})}).status_code


def _status(app: FastAPI, note_id: str) -> tuple[str, str]:
    with app.state.engine.connect() as conn:
        row = conn.execute(select(orm.notifications.c.status, orm.notifications.c.provider_status)
                           .where(orm.notifications.c.id == note_id)).one()
    return row[0], row[1]


def test_status_callbacks_move_forward_whatever_their_order(app: FastAPI,
                                                            client: TestClient) -> None:
    note_id = _sent_notification(app, "SMstatus1")
    assert _callback(client, "SMstatus1", "delivered") == 204
    assert _callback(client, "SMstatus1", "sent") == 204      # late, older news
    assert _callback(client, "SMstatus1", "delivered") == 204  # duplicate
    assert _status(app, note_id) == ("delivered", "delivered")


def test_a_status_callback_that_beats_its_sid_waits_for_it(app: FastAPI,
                                                           client: TestClient) -> None:
    """Twilio may call back before the worker has recorded the SID it was given."""
    note_id = _sent_notification(app, "SMstatus9")
    with app.state.engine.begin() as conn:  # handed to Twilio, SID not stored yet
        conn.execute(orm.notifications.update().values(status="sending", sid=None,
                                                       provider_status=None))

    def record_the_sid() -> None:
        time.sleep(0.5)
        with app.state.engine.begin() as conn:
            conn.execute(orm.notifications.update().values(status="sent", sid="SMstatus9",
                                                           provider_status="queued"))

    late = threading.Thread(target=record_the_sid)
    late.start()
    assert _callback(client, "SMstatus9", "delivered") == 204
    late.join()
    assert _status(app, note_id) == ("delivered", "delivered")


def test_status_callback_with_a_bad_signature_is_refused(app: FastAPI, client: TestClient) -> None:
    note_id = _sent_notification(app, "SMstatus2")
    assert _callback(client, "SMstatus2", "failed", url="https://evil.example/x") == 403
    assert _status(app, note_id) == ("sent", "queued")


def test_signature_over_the_forwarded_url_is_accepted_behind_a_proxy(
        app: FastAPI, client: TestClient) -> None:
    note_id = _sent_notification(app, "SMstatus3")
    proxied = "https://sms.gwangju.example/webhooks/twilio/status"
    assert _callback(client, "SMstatus3", "delivered", url=proxied, headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.gwangju.example"}) == 204
    assert _status(app, note_id)[0] == "delivered"
    # Without the proxy's headers the same signature covers no URL we answer on.
    assert _callback(client, "SMstatus3", "read", url=proxied) == 403


def test_metrics_count_requests_and_the_sms_backlog(app: FastAPI, client: TestClient) -> None:
    bus = app.state.bus
    bus.handle(hospital_request(add_family(bus), start=_tomorrow_10()))
    bus.handle(c.ReceiveSms(message_sid="SMm", from_phone="+821012345678", to_phone="x",
                            body="hi"))
    body = client.get("/metrics").text
    assert 'dolbom_requests{status="received"} 1.0' in body
    assert "dolbom_sms_backlog 1.0" in body          # the parent's "received" SMS
    assert "dolbom_outbox_backlog 3.0" in body       # request.received, sms.requested, sms.received


def test_sms_backlog_for_the_console_needs_a_dispatcher(app: FastAPI, client: TestClient) -> None:
    bus = app.state.bus
    bus.handle(hospital_request(add_family(bus), start=_tomorrow_10()))
    assert client.get("/v1/sms/backlog").status_code == 401
    token = bus.handle(c.CreateToken(name="board", role="dispatcher"))
    body = client.get("/v1/sms/backlog", headers={"Authorization": f"Bearer {token}"}).json()
    assert body == {"backlog": 1, "by_status": {"pending": 1}}
