"""Focused regressions for the faults the security tests found (each failed before its fix)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from dispatch import orm
from infra.twilio_stub import sign
from tests.security.conftest import AUTH_TOKEN, PUBLIC_URL, make_app, token


@pytest.fixture
def app(db_url: str) -> FastAPI:
    return make_app(db_url)


def _signed(client: TestClient, path: str, params: dict[str, str]) -> Any:
    return client.post(path, data=params, headers={
        "X-Twilio-Signature": sign(PUBLIC_URL + path, params, AUTH_TOKEN)})


def test_status_callback_with_a_unicode_digit_error_code_is_not_a_500(app: FastAPI) -> None:
    """`"²".isdigit()` is True but `int("²")` raises: was a 500 on every retry from Twilio."""
    with TestClient(app, raise_server_exceptions=False) as client:
        for code in ("²", "٣٠٠٠٧", "①"):
            resp = _signed(client, "/webhooks/twilio/status", {
                "MessageSid": "SM" + "e" * 32, "MessageStatus": "failed", "ErrorCode": code})
            assert resp.status_code == 204, (code, resp.status_code, resp.text)


def test_nul_in_a_body_is_422_on_every_backend(app: FastAPI) -> None:
    """NUL in a name was stored on SQLite and a 500 on PostgreSQL."""
    auth = token(app, "dispatcher")
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.post("/v1/carers", headers=auth, json={
            "name": "a\x00b", "phone": "+821012340000", "districts": ["동구"]})
        assert resp.status_code == 422 and resp.json()["code"] == "invalid_input", resp.text
        resp = client.post("/v1/families", headers=auth, json={
            "guardian": {"name": "박", "phone": "+821012340001"},
            "children": [{"name": "아이", "birth_date": "2021-01-01"}], "district": "동구",
            "pickup_guardians": ["ok", "b\x00"], "consent": {"child_data": True}})
        assert resp.status_code == 422 and resp.json()["code"] == "invalid_input", resp.text


def test_nul_in_a_path_or_query_parameter_is_not_a_500(app: FastAPI) -> None:
    """On PostgreSQL a NUL in an id or a filter reached the query: psycopg.DataError, a 500."""
    auth = token(app, "dispatcher")
    with TestClient(app, raise_server_exceptions=False) as client:
        for url in ("/v1/carers/a%00b", "/v1/requests/a%00b", "/v1/requests?status=a%00b",
                    "/v1/requests?service=%00"):
            resp = client.get(url, headers=auth)
            assert resp.status_code in (200, 404, 422), (url, resp.status_code, resp.text)
            assert resp.status_code != 200 or resp.json() == []


def test_nul_in_an_inbound_sms_is_stored_not_a_500(app: FastAPI) -> None:
    """A NUL in a Twilio SMS was a 500 on PostgreSQL (Twilio retries, the message is lost)."""
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = _signed(client, "/webhooks/twilio/sms", {
            "MessageSid": "SM" + "f" * 32, "From": "+821012345678", "To": "+82100",
            "Body": "YES\x00 4821"})
        assert resp.status_code == 200, resp.text
    with app.state.engine.connect() as conn:
        bodies = conn.execute(select(orm.inbound_sms.c.body)).scalars().all()
    assert bodies == ["YES\ufffd 4821"]


def test_stream_with_a_unicode_digit_last_event_id_opens(sqlite_url: str) -> None:
    """`Last-Event-ID: ²` passed isdigit() and int() raised: a 500 instead of the stream."""
    app = make_app(sqlite_url)
    auth = token(app, "dispatcher")["Authorization"].encode()
    started: dict[str, Any] = {}

    async def run() -> None:
        disconnect = asyncio.Event()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started["status"] = message["status"]
                disconnect.set()  # the client goes away once it sees the answer

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": "/v1/stream", "raw_path":
                 b"/v1/stream", "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"testserver"), (b"authorization", auth),
                             (b"last-event-id", "²".encode("latin-1"))],
                 "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {}}
        await asyncio.wait_for(app(scope, receive, send), timeout=10)

    asyncio.run(run())
    assert started.get("status") == 200, started
