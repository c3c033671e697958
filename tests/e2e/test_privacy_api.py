"""Privacy over HTTP: every read of a family's record is audited, naming the reader; only an
admin reads the audit log; health data needs its own consent (422 health_consent_required).

Drives `create_app(settings)` in-process with a fresh, migrated SQLite database per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dispatch import commands as c
from dispatch import orm
from schemas.config import Settings

SEOUL = ZoneInfo("Asia/Seoul")
FAMILY = {"guardian": {"name": "최비밀", "phone": "010-3777-4242"}, "district": "광산구",
          "children": [{"name": "김비밀", "birth_date": "2020-04-17"}],
          "consent": {"child_data": True, "health_data": True}}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "DOLBOM_DATABASE_URL",
                 "DOLBOM_PUBLIC_URL", "DOLBOM_POLICY_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def app(sqlite_url: str) -> FastAPI:
    from api.app import create_app

    return create_app(Settings(database_url=sqlite_url, public_url="http://testserver.example"))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _auth(app: FastAPI, role: str, name: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + app.state.bus.handle(c.CreateToken(name=name, role=role))}


def _audit_rows(app: FastAPI) -> list[Any]:
    a = orm.audit_log.c
    with app.state.engine.connect() as conn:
        return list(conn.execute(select(a.actor, a.role, a.action, a.family_id, a.request_id)
                                 .order_by(a.at)))


def _family(client: TestClient, auth: dict[str, str], body: dict[str, Any] = FAMILY) -> Any:
    resp = client.post("/v1/families", json=body, headers=auth)
    assert resp.status_code == 201, resp.text
    return resp.json()


def _request(client: TestClient, auth: dict[str, str], family: dict[str, Any]) -> Any:
    start = datetime.combine(datetime.now(SEOUL).date() + timedelta(days=1), time(10), SEOUL)
    resp = client.post("/v1/requests", headers=auth, json={
        "service": "hospital", "family_id": family["id"],
        "child_id": family["children"][0]["id"], "start": start.isoformat(),
        "end": (start + timedelta(hours=3)).isoformat(),
        "location": {"hospital": "전남대병원", "ward": "소아병동 5층"}})
    assert resp.status_code == 202, resp.text
    return resp.json()


def test_a_dispatcher_reading_a_family_writes_one_audit_row_naming_them(
        app: FastAPI, client: TestClient) -> None:
    dispatcher = _auth(app, "dispatcher", "야간 상황실 박민수")
    family = _family(client, dispatcher)
    assert _audit_rows(app) == []  # registering is not reading

    resp = client.get(f"/v1/families/{family['id']}", headers=dispatcher)
    assert resp.status_code == 200
    assert resp.json()["children"][0]["name"] == "김비밀"
    assert _audit_rows(app) == [("야간 상황실 박민수", "dispatcher",
                                 "GET /v1/families/{family_id}", family["id"], None)]

    assert client.get("/v1/families/nope", headers=dispatcher).status_code == 404
    assert len(_audit_rows(app)) == 1  # nothing was shown, nothing to audit


def test_who_may_read_a_family_and_the_audit_log(app: FastAPI, client: TestClient) -> None:
    dispatcher = _auth(app, "dispatcher", "상황실")
    intake, admin = _auth(app, "intake", "web"), _auth(app, "admin", "운영")
    family = _family(client, dispatcher)
    url = f"/v1/families/{family['id']}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=intake).status_code == 403
    assert client.get(url, headers=admin).status_code == 403
    assert _audit_rows(app) == []
    client.get(url, headers=dispatcher)

    audit = f"/v1/audit?family_id={family['id']}"
    assert client.get(audit).status_code == 401
    assert client.get(audit, headers=dispatcher).status_code == 403
    assert client.get(audit, headers=intake).status_code == 403
    rows = client.get(audit, headers=admin).json()
    assert [(r["actor"], r["role"], r["family_id"]) for r in rows] == [
        ("상황실", "dispatcher", family["id"])]
    assert client.get("/v1/audit?family_id=other", headers=admin).json() == []


def test_reading_a_request_is_audited_for_the_dispatcher_and_the_parents_app(
        app: FastAPI, client: TestClient) -> None:
    dispatcher, intake = _auth(app, "dispatcher", "상황실 이"), _auth(app, "intake", "부모앱")
    family = _family(client, intake)
    created = _request(client, intake, family)
    url = f"/v1/requests/{created['id']}"

    assert client.get(url, headers=dispatcher).status_code == 200
    assert client.get(url, headers=intake).status_code == 200  # its own request
    other_app = _auth(app, "intake", "다른앱")
    assert client.get(url, headers=other_app).status_code == 404
    assert client.get(url).status_code == 401
    assert _audit_rows(app) == [
        ("상황실 이", "dispatcher", "GET /v1/requests/{request_id}", family["id"], created["id"]),
        ("부모앱", "intake", "GET /v1/requests/{request_id}", family["id"], created["id"])]
    with app.state.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(orm.audit_log)) == 2


def test_health_data_needs_its_own_consent(app: FastAPI, client: TestClient) -> None:
    dispatcher = _auth(app, "dispatcher", "상황실")
    disabled = {**FAMILY, "children": [{"name": "김비밀", "birth_date": "2020-04-17",
                                        "disability": True}],
                "consent": {"child_data": True, "health_data": False}}
    resp = client.post("/v1/families", json=disabled, headers=dispatcher)
    assert resp.status_code == 422
    assert resp.json()["code"] == "health_consent_required"
    assert "consent.health_data" in resp.json()["message"]

    no_health = _family(client, dispatcher, {**FAMILY, "consent": {"child_data": True}})
    start = datetime.combine(datetime.now(SEOUL).date() + timedelta(days=1), time(10), SEOUL)
    resp = client.post("/v1/requests", headers=dispatcher, json={
        "service": "hospital", "family_id": no_health["id"],
        "child_id": no_health["children"][0]["id"], "start": start.isoformat(),
        "end": (start + timedelta(hours=3)).isoformat(),
        "location": {"hospital": "전남대병원", "ward": "소아병동 5층"}})
    assert resp.status_code == 422 and resp.json()["code"] == "health_consent_required"
    with app.state.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(orm.requests)) == 0
        assert conn.scalar(select(func.count()).select_from(orm.children)) == 1
