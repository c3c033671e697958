"""Hostile input: deep nesting, odd Unicode and injection strings never cause a 5xx.

Odd text is either stored and echoed back exactly, or refused with a 422; the checks that
touch the database run on SQLite and (marked `postgres`) PostgreSQL, whose text type has
its own rules (no NUL).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dispatch import orm
from infra.twilio_stub import sign
from tests.security.conftest import AUTH_TOKEN, PUBLIC_URL, make_app, token

ODD = {
    "rtl override": "abc\u202edef\u202c",
    "rtl mark": "\u05e9\u05dc\u05d5\u05dd\u200f 김",
    "zero-width joiner": "a\u200db\u200cc\u200bd",
    "combining marks": "e\u0301\u0302\u0323 Z\u0351\u0352\u0353",
    "emoji family": "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f1f0\U0001f1f7",
    "decomposed hangul": "\u1100\u1161\u11a8 \uac00",
    "bom and noncharacter": "x\ufeffy\uffffz",
    "nul": "a\x00b",
    "control chars": "a\x07b\x1bc",
}
INJECTION = ["<script>alert(1)</script>", "' OR 1=1 --", "Robert'); DROP TABLE families;--",
             "{{7*7}} ${7*7} %s%n", "\"; DROP TABLE requests; --"]


@pytest.fixture
def app(db_url: str) -> FastAPI:
    return make_app(db_url)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def dispatcher(app: FastAPI) -> dict[str, str]:
    return token(app, "dispatcher")


def _count(app: FastAPI, table: Any) -> int:
    with app.state.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)))


def _refused(resp: Any) -> bool:
    if resp.status_code != 422:
        return False
    assert resp.json()["code"] in ("invalid_input", "invalid_json"), resp.text
    return True


# -- deep nesting ----------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [10_000, 30_000])
def test_deeply_nested_json_is_4xx_and_the_server_stays_up(
        sqlite_url: str, depth: int) -> None:
    app = make_app(sqlite_url)
    auth = token(app, "dispatcher")
    with TestClient(app, raise_server_exceptions=False) as client:
        bodies = {"array": "[" * depth + "]" * depth,
                  "object": '{"a":' * depth + "1" + "}" * depth,
                  "in a field": '{"name": ' + "[" * depth + "]" * depth + "}"}
        for path in ("/v1/families", "/v1/requests", "/v1/carers", "/v1/console/sms"):
            for what, raw in bodies.items():
                resp = client.post(path, content=raw.encode(),
                                   headers={**auth, "Content-Type": "application/json"})
                assert 400 <= resp.status_code < 500, (path, what, resp.status_code, resp.text)
                assert resp.headers["content-type"].startswith("application/json")
        assert client.get("/healthz").json() == {"status": "ok"}
        ok = client.post("/v1/carers", headers=auth, json={
            "name": "김돌봄", "phone": "+821012340000", "districts": ["광산구"]})
        assert ok.status_code == 201, ok.text
    assert _count(app, orm.families) == 0 and _count(app, orm.requests) == 0


# -- odd Unicode -----------------------------------------------------------------------------

def test_odd_unicode_in_names_is_kept_exactly_or_refused(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    stored = 0
    for i, (what, text) in enumerate(ODD.items()):
        resp = client.post("/v1/carers", headers=dispatcher, json={
            "name": text, "phone": f"+8210555500{i:02d}", "districts": ["서구"]})
        assert resp.status_code < 500, (what, resp.status_code, resp.text)
        if _refused(resp):
            continue
        assert resp.status_code == 201, (what, resp.text)
        assert resp.json()["name"] == text, what
        again = client.get(f"/v1/carers/{resp.json()['id']}", headers=dispatcher)
        assert again.json()["name"] == text, what
        stored += 1
        fam = client.post("/v1/families", headers=dispatcher, json={
            "guardian": {"name": text, "phone": f"+8210666600{i:02d}"},
            "children": [{"name": text, "birth_date": "2021-03-04"}], "district": "북구",
            "address": text, "consent": {"child_data": True}})
        assert fam.status_code == 201, (what, fam.text)
        assert fam.json()["guardian"]["name"] == text, what
        assert fam.json()["children"][0]["name"] == text, what
    assert stored >= len(ODD) - 2  # only NUL and control characters may be refused


def test_lone_surrogates_escaped_in_json_are_refused(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    for escaped in ("\\ud800", "x\\udfffy", "\\udc00\\ud800"):
        raw = ('{"name": "' + escaped + '", "phone": "+821012349999", "districts": ["동구"]}')
        resp = client.post("/v1/carers", content=raw.encode(),
                           headers={**dispatcher, "Content-Type": "application/json"})
        assert _refused(resp), (escaped, resp.status_code, resp.text)
    assert _count(app, orm.carers) == 0
    assert client.get("/healthz").status_code == 200


def _signed_sms(client: TestClient, sid: str, body: str) -> Any:
    params = {"MessageSid": sid, "From": "+821098765432", "To": "+821000000000", "Body": body}
    return client.post("/webhooks/twilio/sms", data=params, headers={
        "X-Twilio-Signature": sign(PUBLIC_URL + "/webhooks/twilio/sms", params, AUTH_TOKEN)})


def test_odd_unicode_sms_bodies_are_stored_exactly(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    sent = {}
    for i, (what, text) in enumerate(ODD.items()):
        resp = _signed_sms(client, f"SM{i:032d}", text)
        assert resp.status_code == 200, (what, resp.status_code, resp.text)
        sent[what] = text
    bodies = [m["body"] for m in client.get("/v1/sms/unmatched", headers=dispatcher).json()]
    for what, text in sent.items():
        # A message is never dropped; PostgreSQL text cannot hold NUL, so NUL becomes U+FFFD.
        assert text in bodies or text.replace("\x00", "\ufffd") in bodies, (what, bodies)
    assert len(bodies) == len(sent)


def test_invalid_utf8_in_a_form_body_is_not_a_server_error(client: TestClient) -> None:
    raw = b"MessageSid=SM1&From=%2B821012345678&Body=%ED%A0%80%FF"
    resp = client.post("/webhooks/twilio/sms", content=raw, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"})
    assert resp.status_code == 403, resp.text


# -- injection strings ---------------------------------------------------------------------------

def test_injection_strings_are_stored_inertly(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    script, sql = INJECTION[0], INJECTION[1]
    fam = client.post("/v1/families", headers=dispatcher, json={
        "guardian": {"name": script, "phone": "+821011112222"},
        "children": [{"name": sql, "birth_date": "2021-03-04"}], "district": "남구",
        "address": INJECTION[2], "pickup_guardians": INJECTION[3:],
        "consent": {"child_data": True, "health_data": True}})
    assert fam.status_code == 201, fam.text
    assert fam.headers["content-type"].startswith("application/json")
    data = fam.json()
    assert data["guardian"]["name"] == script
    assert data["children"][0]["name"] == sql
    assert script in fam.text.replace("\\/", "/")  # a JSON string, not HTML-escaped or run
    assert _count(app, orm.families) == 1 and _count(app, orm.children) == 1
    with app.state.engine.connect() as conn:
        names = conn.execute(select(orm.children.c.name)).scalars().all()
    assert names == [sql]

    for i, text in enumerate(INJECTION):
        carer = client.post("/v1/carers", headers=dispatcher, json={
            "name": text, "phone": f"+8210777700{i:02d}", "districts": ["남구"]})
        assert carer.status_code == 201 and carer.json()["name"] == text, carer.text
        resp = _signed_sms(client, f"SMinj{i:029d}", text)
        assert resp.status_code == 200, resp.text
    listed = client.get("/v1/carers", headers=dispatcher).json()
    assert sorted(c["name"] for c in listed) == sorted(INJECTION)
    unmatched = client.get("/v1/sms/unmatched", headers=dispatcher).json()
    assert sorted(m["body"] for m in unmatched) == sorted(INJECTION)
    assert _count(app, orm.families) == 1
    # The query-string side: a filter made of SQL matches nothing and breaks nothing.
    for text in INJECTION:
        resp = client.get("/v1/requests", params={"status": text[:20], "service": text},
                          headers=dispatcher)
        assert resp.status_code == 200 and resp.json() == [], resp.text
    assert json.loads(client.get("/healthz").text) == {"status": "ok"}
