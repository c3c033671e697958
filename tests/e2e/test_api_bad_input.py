"""The HTTP API and the Twilio webhook refuse bad input cleanly, and store nothing for it.

Drives `create_app(settings)` in-process with a fresh, migrated SQLite database per test.
The API never talks to Kafka (it writes outbox rows), so no broker is needed. Handlers use
the real clock, so request times are built from the real date: "tomorrow 10:00 in Seoul".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Table, func, select

from dispatch import commands as c
from dispatch import orm
from infra.twilio_stub import sign
from schemas.config import Settings

SEOUL = ZoneInfo("Asia/Seoul")
PUBLIC_URL = "http://testserver.example"
SMS_PATH = "/webhooks/twilio/sms"
AUTH_TOKEN = "test-auth-token-not-a-secret"
ACCOUNT_SID = "ACdolbomtest"
HOSPITAL_LOCATION = {"hospital": "전남대병원", "ward": "소아병동 5층"}


# -- set-up ---------------------------------------------------------------------------------

def _tomorrow(hour: int) -> datetime:
    """Tomorrow at `hour`:00 in Seoul, from the real date (handlers use the real clock)."""
    day = datetime.now(SEOUL).date() + timedelta(days=1)
    return datetime.combine(day, time(hour), SEOUL)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes to Settings counts, never the developer's shell."""
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER",
                 "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_API_BASE_URL", "DOLBOM_PUBLIC_URL",
                 "DOLBOM_POLICY_DIR", "DOLBOM_DATABASE_URL", "DOLBOM_DISPATCHER_PHONE"):
        monkeypatch.delenv(name, raising=False)


def _settings(url: str, *, twilio: bool = True) -> Settings:
    extra: dict[str, Any] = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                             "TWILIO_ACCOUNT_SID": ACCOUNT_SID} if twilio else {}
    return Settings(database_url=url, public_url=PUBLIC_URL, **extra)


@pytest.fixture
def app(sqlite_url: str) -> FastAPI:
    from api.app import create_app

    return create_app(_settings(sqlite_url))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _token(app: FastAPI, role: str, name: str | None = None) -> dict[str, str]:
    token = app.state.bus.handle(c.CreateToken(name=name or f"test-{role}", role=role))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def dispatcher(app: FastAPI) -> dict[str, str]:
    return _token(app, "dispatcher")


@pytest.fixture
def intake(app: FastAPI) -> dict[str, str]:
    return _token(app, "intake")


def _count(app: FastAPI, table: Table, *where: Any) -> int:
    with app.state.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table).where(*where)))


def _family_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "guardian": {"name": "박보호", "phone": "+821099990000"},
        "children": [{"name": "박아이",
                      "birth_date": _years_before(_tomorrow(10).date(), 5).isoformat()}],
        "district": "광산구",
        "consent": {"child_data": True, "health_data": True},
    }
    body.update(overrides)
    return body


def _carer_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "김돌봄", "phone": "+821012340000", "districts": ["광산구"],
                            "skills": ["hospital"]}
    body.update(overrides)
    return body


def _register_family(client: TestClient, headers: dict[str, str], **overrides: Any
                     ) -> dict[str, Any]:
    resp = client.post("/v1/families", json=_family_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _request_body(family: dict[str, Any], *, start: Any = None, end: Any = None,
                  **overrides: Any) -> dict[str, Any]:
    start = start if start is not None else _tomorrow(10)
    end = end if end is not None else _tomorrow(14)
    body: dict[str, Any] = {
        "service": "hospital", "family_id": family["id"],
        "child_id": family["children"][0]["id"],
        "start": start.isoformat() if isinstance(start, datetime) else start,
        "end": end.isoformat() if isinstance(end, datetime) else end,
        "location": dict(HOSPITAL_LOCATION),
    }
    body.update(overrides)
    return body


def _assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    payload = resp.json()
    assert payload["code"] == code, payload
    assert isinstance(payload["message"], str) and payload["message"], payload
    return payload  # type: ignore[no-any-return]


def _no_requests(app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    listed = client.get("/v1/requests", headers=dispatcher)
    assert listed.status_code == 200, listed.text
    assert listed.json() == []
    assert _count(app, orm.requests) == 0
    assert _count(app, orm.outbox, orm.outbox.c.type == "request.received") == 0


# -- health ----------------------------------------------------------------------------------

def test_healthz_needs_no_token(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_unknown_route_and_method_use_the_error_shape(client: TestClient,
                                                      dispatcher: dict[str, str]) -> None:
    _assert_error(client.get("/v1/no-such-thing", headers=dispatcher), 404, "not_found")
    _assert_error(client.delete("/healthz"), 405, "method_not_allowed")


# -- body format -------------------------------------------------------------------------------

def test_malformed_json_is_invalid_json(app: FastAPI, client: TestClient,
                                        dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    raw = '{"service": "hospital", "family_id": "' + family["id"] + '", '  # cut short
    resp = client.post("/v1/requests", content=raw.encode(),
                       headers={**dispatcher, "Content-Type": "application/json"})
    _assert_error(resp, 422, "invalid_json")
    _no_requests(app, client, dispatcher)


def test_text_plain_body_is_422_not_500(app: FastAPI, client: TestClient,
                                        dispatcher: dict[str, str]) -> None:
    import json

    family = _register_family(client, dispatcher)
    resp = client.post("/v1/requests", content=json.dumps(_request_body(family)).encode(),
                       headers={**dispatcher, "Content-Type": "text/plain"})
    _assert_error(resp, 422, "invalid_json")
    _no_requests(app, client, dispatcher)


def test_json_array_instead_of_object_is_422(app: FastAPI, client: TestClient,
                                             dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    resp = client.post("/v1/requests", json=[_request_body(family)], headers=dispatcher)
    _assert_error(resp, 422, "invalid_json")
    _no_requests(app, client, dispatcher)
    resp = client.post("/v1/families", json=[_family_body()], headers=dispatcher)
    _assert_error(resp, 422, "invalid_json")
    assert _count(app, orm.families) == 1


# -- times -----------------------------------------------------------------------------------

def test_time_without_offset_is_invalid_time(app: FastAPI, client: TestClient,
                                             dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    naive_start = _tomorrow(10).replace(tzinfo=None).isoformat()  # e.g. 2026-11-27T10:00:00
    naive_end = _tomorrow(14).replace(tzinfo=None).isoformat()
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, start=naive_start, end=naive_end))
    _assert_error(resp, 422, "invalid_time")
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, start="2026-11-27T10:00:00"))
    _assert_error(resp, 422, "invalid_time")
    _no_requests(app, client, dispatcher)


@pytest.mark.parametrize("garbage", ["tomorrow morning", "2026-13-45T99:00:00+09:00", "",
                                     "10:00+09:00"])
def test_garbage_time_is_invalid_time(app: FastAPI, client: TestClient,
                                      dispatcher: dict[str, str], garbage: Any) -> None:
    family = _register_family(client, dispatcher)
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, start=garbage))
    _assert_error(resp, 422, "invalid_time")
    _no_requests(app, client, dispatcher)


def test_end_before_start_is_invalid_time(app: FastAPI, client: TestClient,
                                          dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, start=_tomorrow(14), end=_tomorrow(10)))
    _assert_error(resp, 422, "invalid_time")
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, start=_tomorrow(10), end=_tomorrow(10)))
    _assert_error(resp, 422, "invalid_time")
    _no_requests(app, client, dispatcher)


# -- phone numbers ---------------------------------------------------------------------------

BAD_PHONES = ["12", "010-12", "abc", "+1 555"]


@pytest.mark.parametrize("phone", BAD_PHONES)
def test_invalid_carer_phone(app: FastAPI, client: TestClient, dispatcher: dict[str, str],
                             phone: str) -> None:
    resp = client.post("/v1/carers", json=_carer_body(phone=phone), headers=dispatcher)
    _assert_error(resp, 422, "invalid_phone")
    assert client.get("/v1/carers", headers=dispatcher).json() == []
    assert _count(app, orm.carers) == 0


@pytest.mark.parametrize("phone", BAD_PHONES)
def test_invalid_guardian_phone(app: FastAPI, client: TestClient, dispatcher: dict[str, str],
                                phone: str) -> None:
    resp = client.post("/v1/families", headers=dispatcher,
                       json=_family_body(guardian={"name": "박보호", "phone": phone}))
    _assert_error(resp, 422, "invalid_phone")
    assert _count(app, orm.families) == 0


def test_local_phone_is_stored_as_e164(app: FastAPI, client: TestClient,
                                       dispatcher: dict[str, str]) -> None:
    resp = client.post("/v1/carers", json=_carer_body(phone="010-1234-5678"), headers=dispatcher)
    assert resp.status_code == 201, resp.text
    carer = resp.json()
    assert carer["phone"] == "+821012345678"
    assert client.get(f"/v1/carers/{carer['id']}", headers=dispatcher).json()["phone"] == \
        "+821012345678"
    with app.state.engine.connect() as conn:
        assert conn.scalar(select(orm.carers.c.phone)) == "+821012345678"

    family = _register_family(client, dispatcher,
                              guardian={"name": "박보호", "phone": "010-1234-5679"})
    assert family["guardian"]["phone"] == "+821012345679"
    with app.state.engine.connect() as conn:
        assert conn.scalar(select(orm.families.c.guardian_phone)) == "+821012345679"


# -- unknown things --------------------------------------------------------------------------

def test_unknown_district(app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    resp = client.post("/v1/families", json=_family_body(district="강남구"), headers=dispatcher)
    _assert_error(resp, 422, "unknown_district")
    assert _count(app, orm.families) == 0
    resp = client.post("/v1/carers", json=_carer_body(districts=["광산구", "Gwangsan"]),
                       headers=dispatcher)
    _assert_error(resp, 422, "unknown_district")
    assert _count(app, orm.carers) == 0


def test_unknown_service(app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, service="space-daycare"))
    _assert_error(resp, 422, "unknown_service")
    _no_requests(app, client, dispatcher)


def test_unknown_family_is_404(app: FastAPI, client: TestClient,
                               dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, family_id="no-such-family"))
    _assert_error(resp, 404, "not_found")
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, child_id="no-such-child"))
    _assert_error(resp, 404, "not_found")
    _no_requests(app, client, dispatcher)


# -- eligibility -----------------------------------------------------------------------------

def test_fifteen_year_old_is_out_of_range_for_hospital(app: FastAPI, client: TestClient,
                                                       dispatcher: dict[str, str]) -> None:
    teen = _years_before(_tomorrow(10).date(), 15).isoformat()
    family = _register_family(client, dispatcher,
                              children=[{"name": "박청소년", "birth_date": teen}])
    resp = client.post("/v1/requests", headers=dispatcher, json=_request_body(family))
    _assert_error(resp, 422, "age_out_of_range")
    _no_requests(app, client, dispatcher)


def test_request_outside_service_hours(app: FastAPI, client: TestClient,
                                       dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, start=_tomorrow(21), end=_tomorrow(23)))
    _assert_error(resp, 422, "outside_service_hours")
    # Starts inside the hours but runs past 20:00.
    resp = client.post("/v1/requests", headers=dispatcher,
                       json=_request_body(family, start=_tomorrow(18), end=_tomorrow(21)))
    _assert_error(resp, 422, "outside_service_hours")
    _no_requests(app, client, dispatcher)


def test_hospital_care_needs_health_consent(app: FastAPI, client: TestClient,
                                            dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher,
                              consent={"child_data": True, "health_data": False})
    assert family["consent"]["health_data"] is False
    resp = client.post("/v1/requests", headers=dispatcher, json=_request_body(family))
    _assert_error(resp, 422, "health_consent_required")
    _no_requests(app, client, dispatcher)


def test_family_without_child_data_consent_is_refused(app: FastAPI, client: TestClient,
                                                      dispatcher: dict[str, str]) -> None:
    resp = client.post("/v1/families", headers=dispatcher,
                       json=_family_body(consent={"child_data": False, "health_data": True}))
    _assert_error(resp, 422, "consent_required")
    assert _count(app, orm.families) == 0
    assert _count(app, orm.children) == 0


# -- auth ------------------------------------------------------------------------------------

def test_missing_token_is_401(app: FastAPI, client: TestClient,
                              dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    resp = client.post("/v1/requests", json=_request_body(family))
    _assert_error(resp, 401, "unauthorized")
    _assert_error(client.get("/v1/requests"), 401, "unauthorized")
    resp = client.post("/v1/requests", json=_request_body(family),
                       headers={"Authorization": "Basic dXNlcjpwYXNz"})
    _assert_error(resp, 401, "unauthorized")
    _no_requests(app, client, dispatcher)


def test_made_up_token_is_401(app: FastAPI, client: TestClient,
                              dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    forged = {"Authorization": "Bearer dlb_" + "x" * 43}
    resp = client.post("/v1/requests", json=_request_body(family), headers=forged)
    _assert_error(resp, 401, "unauthorized")
    resp = client.post("/v1/carers", json=_carer_body(), headers=forged)
    _assert_error(resp, 401, "unauthorized")
    _no_requests(app, client, dispatcher)
    assert _count(app, orm.carers) == 0


def test_intake_token_cannot_register_carers(app: FastAPI, client: TestClient,
                                             intake: dict[str, str]) -> None:
    resp = client.post("/v1/carers", json=_carer_body(), headers=intake)
    _assert_error(resp, 403, "forbidden")
    _assert_error(client.get("/v1/carers", headers=intake), 403, "forbidden")
    assert _count(app, orm.carers) == 0


def test_intake_reads_only_its_own_requests(app: FastAPI, client: TestClient,
                                            dispatcher: dict[str, str],
                                            intake: dict[str, str]) -> None:
    other_intake = _token(app, "intake", "other-intake")
    family = _register_family(client, intake)

    theirs = client.post("/v1/requests", json=_request_body(family), headers=other_intake)
    assert theirs.status_code == 202, theirs.text
    mine = client.post("/v1/requests", headers=intake,
                       json=_request_body(family, start=_tomorrow(15), end=_tomorrow(17)))
    assert mine.status_code == 202, mine.text
    theirs_id, mine_id = theirs.json()["id"], mine.json()["id"]

    _assert_error(client.get(f"/v1/requests/{theirs_id}", headers=intake), 404, "not_found")
    own = client.get(f"/v1/requests/{mine_id}", headers=intake)
    assert own.status_code == 200, own.text
    assert own.json()["id"] == mine_id
    assert [r["id"] for r in client.get("/v1/requests", headers=intake).json()] == [mine_id]
    # A dispatcher sees both.
    assert client.get(f"/v1/requests/{theirs_id}", headers=dispatcher).status_code == 200
    assert {r["id"] for r in client.get("/v1/requests", headers=dispatcher).json()} == \
        {mine_id, theirs_id}


# -- idempotency -----------------------------------------------------------------------------

def test_repeated_idempotency_key_gives_the_same_request(app: FastAPI, client: TestClient,
                                                         dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    headers = {**dispatcher, "Idempotency-Key": "intake-form-7f3a"}
    first = client.post("/v1/requests", json=_request_body(family), headers=headers)
    second = client.post("/v1/requests", json=_request_body(family), headers=headers)
    assert first.status_code == 202, first.text
    assert second.status_code == 202, second.text
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["code"] == second.json()["code"]
    assert len(client.get("/v1/requests", headers=dispatcher).json()) == 1
    assert _count(app, orm.requests) == 1
    assert _count(app, orm.outbox, orm.outbox.c.type == "request.received") == 1


def test_different_idempotency_keys_give_two_requests(app: FastAPI, client: TestClient,
                                                      dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    ids = set()
    for key, hours in (("key-one", (10, 12)), ("key-two", (14, 16))):
        resp = client.post("/v1/requests", headers={**dispatcher, "Idempotency-Key": key},
                           json=_request_body(family, start=_tomorrow(hours[0]),
                                              end=_tomorrow(hours[1])))
        assert resp.status_code == 202, resp.text
        ids.add(resp.json()["id"])
    assert len(ids) == 2
    assert _count(app, orm.requests) == 2


def test_same_idempotency_key_from_two_tokens_gives_two_requests(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str],
        intake: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    key = {"Idempotency-Key": "shared-key-1"}
    a = client.post("/v1/requests", json=_request_body(family), headers={**dispatcher, **key})
    b = client.post("/v1/requests", headers={**intake, **key},
                    json=_request_body(family, start=_tomorrow(15), end=_tomorrow(17)))
    assert a.status_code == 202, a.text
    assert b.status_code == 202, b.text
    assert a.json()["id"] != b.json()["id"]
    assert _count(app, orm.requests) == 2
    # Each token still gets its own request back on a retry.
    again = client.post("/v1/requests", json=_request_body(family), headers={**intake, **key})
    assert again.status_code == 202, again.text
    assert again.json()["id"] == b.json()["id"]
    assert _count(app, orm.requests) == 2


# -- size ------------------------------------------------------------------------------------

def test_oversized_body_is_413(app: FastAPI, client: TestClient,
                               dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    body = _request_body(family, notes="가" * 30_000)  # ~90 KB of UTF-8
    resp = client.post("/v1/requests", json=body, headers=dispatcher)
    _assert_error(resp, 413, "body_too_large")
    _no_requests(app, client, dispatcher)


def test_oversized_chunked_body_is_413(app: FastAPI, client: TestClient,
                                       dispatcher: dict[str, str]) -> None:
    """No Content-Length: the limit must still hold while the body streams in."""
    import json

    family = _register_family(client, dispatcher)
    raw = json.dumps(_request_body(family, notes="x" * 70_000)).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 8192):
            yield raw[i:i + 8192]

    resp = client.post("/v1/requests", content=chunks(),
                       headers={**dispatcher, "Content-Type": "application/json"})
    _assert_error(resp, 413, "body_too_large")
    _no_requests(app, client, dispatcher)


# -- the happy path --------------------------------------------------------------------------

def test_valid_request_is_accepted_with_a_timeline(app: FastAPI, client: TestClient,
                                                   dispatcher: dict[str, str]) -> None:
    family = _register_family(client, dispatcher)
    resp = client.post("/v1/requests", json=_request_body(family), headers=dispatcher)
    assert resp.status_code == 202, resp.text
    created = resp.json()
    assert created["id"]
    assert isinstance(created["code"], str) and len(created["code"]) == 4 and \
        created["code"].isdigit(), created
    assert created["status"] == "received"
    assert resp.headers["location"] == f"/v1/requests/{created['id']}"

    detail = client.get(f"/v1/requests/{created['id']}", headers=dispatcher)
    assert detail.status_code == 200, detail.text
    shown = detail.json()
    assert shown["id"] == created["id"] and shown["code"] == created["code"]
    assert shown["status"] == "received"
    assert shown["timeline"], shown
    assert shown["timeline"][0]["type"] == "received"
    assert datetime.fromisoformat(shown["start"]) == _tomorrow(10)
    assert _count(app, orm.requests) == 1
    assert _count(app, orm.outbox, orm.outbox.c.type == "request.received") == 1


# -- Twilio webhook --------------------------------------------------------------------------

def _sms_params(sid: str = "SM0123456789abcdef0123456789abcdef", body: str = "YES 4821"
                ) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT_SID,
            "From": "+821012345678", "To": "+15005550006", "Body": body, "NumMedia": "0"}


def _post_sms(client: TestClient, params: dict[str, str], signature: str | None) -> Any:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    return client.post(SMS_PATH, data=params, headers=headers)


def _nothing_stored(app: FastAPI) -> None:
    assert _count(app, orm.inbound_sms) == 0
    assert _count(app, orm.outbox, orm.outbox.c.type == "sms.received") == 0


def test_forged_signature_is_403(app: FastAPI, client: TestClient) -> None:
    params = _sms_params()
    forged = sign(PUBLIC_URL + SMS_PATH, params, "not-the-auth-token")
    _assert_error(_post_sms(client, params, forged), 403, "forbidden")
    # A genuine signature over other parameters doesn't cover these.
    other = sign(PUBLIC_URL + SMS_PATH, _sms_params(body="NO 4821"), AUTH_TOKEN)
    _assert_error(_post_sms(client, params, other), 403, "forbidden")
    _nothing_stored(app)


def test_missing_signature_is_403(app: FastAPI, client: TestClient) -> None:
    _assert_error(_post_sms(client, _sms_params(), None), 403, "forbidden")
    _assert_error(_post_sms(client, _sms_params(), ""), 403, "forbidden")
    _nothing_stored(app)


def test_signature_for_another_url_is_403(app: FastAPI, client: TestClient) -> None:
    params = _sms_params()
    # The socket's URL, not DOLBOM_PUBLIC_URL: what a proxy-confused server would check.
    for url in ("http://testserver" + SMS_PATH, PUBLIC_URL + "/webhooks/twilio/status",
                "https://testserver.example" + SMS_PATH):
        _assert_error(_post_sms(client, params, sign(url, params, AUTH_TOKEN)), 403, "forbidden")
    _nothing_stored(app)


def test_webhook_without_auth_token_configured_is_403(sqlite_url: str) -> None:
    from api.app import create_app

    settings = _settings(sqlite_url, twilio=False)
    assert settings.twilio_auth_token is None
    app = create_app(settings)
    params = _sms_params()
    with TestClient(app) as client:
        for signature in (sign(PUBLIC_URL + SMS_PATH, params, ""), "", None,
                          sign(PUBLIC_URL + SMS_PATH, params, AUTH_TOKEN)):
            _assert_error(_post_sms(client, params, signature), 403, "forbidden")
    _nothing_stored(app)


def test_signed_inbound_sms_is_stored_once(app: FastAPI, client: TestClient) -> None:
    params = _sms_params(body="네 4821")
    resp = _post_sms(client, params, sign(PUBLIC_URL + SMS_PATH, params, AUTH_TOKEN))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/xml")
    assert "<Response" in resp.text
    with app.state.engine.connect() as conn:
        rows = conn.execute(select(orm.inbound_sms)).mappings().all()
    assert len(rows) == 1
    assert rows[0]["message_sid"] == params["MessageSid"]
    assert rows[0]["from_phone"] == "+821012345678"
    assert rows[0]["body"] == "네 4821"
    assert _count(app, orm.outbox, orm.outbox.c.type == "sms.received") == 1


def test_same_message_sid_twice_is_stored_once(app: FastAPI, client: TestClient) -> None:
    params = _sms_params()
    signature = sign(PUBLIC_URL + SMS_PATH, params, AUTH_TOKEN)
    for _ in range(2):
        resp = _post_sms(client, params, signature)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/xml")
    assert _count(app, orm.inbound_sms) == 1
    assert _count(app, orm.outbox, orm.outbox.c.type == "sms.received") == 1
    # A different message is a different row.
    other = _sms_params(sid="SMfedcba9876543210fedcba9876543210")
    resp = _post_sms(client, other, sign(PUBLIC_URL + SMS_PATH, other, AUTH_TOKEN))
    assert resp.status_code == 200, resp.text
    assert _count(app, orm.inbound_sms) == 2
    assert _count(app, orm.outbox, orm.outbox.c.type == "sms.received") == 2
