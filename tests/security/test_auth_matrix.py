"""Who may call what: every route of the app against every kind of caller.

The routes come from `app.routes`, so a new endpoint is checked as soon as it exists, and the
test fails if it is not in EXPECTED: nobody adds an endpoint without deciding who may call it.
Roles (CONTRACT.md): `dispatcher` everything; `intake` creates families and requests and
reads/cancels what it created; `admin` tokens and policies. Twilio webhooks are authenticated
by X-Twilio-Signature.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from infra.db import upgrade
from infra.twilio_stub import sign
from tests.security.conftest import AUTH_TOKEN, PUBLIC_URL, make_app, token

D, IN, A = "dispatcher", "intake", "admin"
ROLES = (D, IN, A)
PUBLIC = "public"          # no token needed, on purpose
TWILIO = "twilio"          # X-Twilio-Signature instead of a token
SIGN_IN = "sign-in"        # the console's token → cookie exchange: the token is the body

EXPECTED: dict[tuple[str, str], Any] = {
    # deliberately public
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/console"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("POST", "/v1/session"): SIGN_IN,
    ("DELETE", "/v1/session"): PUBLIC,  # sign-out only clears the caller's own cookie
    # Twilio
    ("POST", "/webhooks/twilio/sms"): TWILIO,
    ("POST", "/webhooks/twilio/status"): TWILIO,
    ("POST", "/webhooks/twilio/voice"): TWILIO,
    ("POST", "/webhooks/twilio/voice/step"): TWILIO,
    # carers and centres: dispatcher
    ("POST", "/v1/carers"): {D},
    ("GET", "/v1/carers"): {D},
    ("GET", "/v1/carers/{carer_id}"): {D},
    ("PUT", "/v1/carers/{carer_id}/duty"): {D},
    ("POST", "/v1/shifts"): {D},
    ("GET", "/v1/centers/{center_id}/groups"): {D},
    # families and requests: intake too (reads and cancels only its own: see below)
    ("POST", "/v1/families"): {D, IN},
    ("GET", "/v1/families/{family_id}"): {D},  # audited read (개인정보보호법)
    ("GET", "/v1/audit"): {A},
    ("POST", "/v1/requests"): {D, IN},
    ("GET", "/v1/requests"): {D, IN},
    ("GET", "/v1/requests/{request_id}"): {D, IN},
    ("POST", "/v1/requests/{request_id}/cancel"): {D, IN},
    ("POST", "/v1/requests/{request_id}/assign"): {D},
    ("POST", "/v1/requests/{request_id}/reoffer"): {D},
    ("POST", "/v1/requests/{request_id}/notes"): {D},
    ("POST", "/v1/requests/{request_id}/confirm"): {D},
    ("POST", "/v1/requests/{request_id}/acknowledge"): {D},
    ("GET", "/v1/requests/{request_id}/candidates"): {D},
    ("GET", "/v1/console/board"): {D},
    ("GET", "/v1/console/phones"): {D},
    # operations
    ("POST", "/v1/tokens"): {A},
    ("GET", "/v1/policies"): {A, D},
    ("POST", "/v1/console/sms"): {D},
    ("GET", "/v1/sms/unmatched"): {D},
    ("GET", "/v1/sms/backlog"): {D},
    ("GET", "/v1/sms/outbox"): {D},
    ("GET", "/v1/stream"): {D},
}
# Endless responses: only the refusals are called (an allowed call would never finish).
ENDLESS = {("GET", "/v1/stream")}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route, through included routers (FastAPI ≥ 0.165 keeps
    them as one entry per router in `app.routes`; `iter_route_contexts` flattens them)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined]
    except ImportError:  # older FastAPI: app.routes is already flat
        routes: Any = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    found = set()
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        for method in methods or ():
            if path and method != "HEAD":
                found.add((method, path))
    assert len(found) > 20, found  # the walk above found the routers' routes
    return found


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('auth')) / 'dolbom.db'}"
    upgrade(url)
    return make_app(url)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def callers(app: FastAPI) -> dict[str, dict[str, str]]:
    return {"none": {}, "bad": {"Authorization": "Bearer not-a-real-token-0123456789"},
            "malformed": {"Authorization": "Basic dXNlcjpwYXNz"},
            **{role: token(app, role) for role in ROLES}}


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    concrete = re.sub(r"\{[^}]+\}", "no-such-id", path)
    body: dict[str, Any] | None = None if method in ("GET", "DELETE") else {}
    return client.request(method, concrete, json=body, headers=headers)


def test_every_route_has_an_expectation(app: FastAPI) -> None:
    routes = app_routes(app)
    missing = routes - set(EXPECTED)
    assert not missing, f"routes with no auth expectation (add them to EXPECTED): {missing}"
    stale = set(EXPECTED) - routes
    assert not stale, f"EXPECTED lists routes the app no longer has: {stale}"


def test_every_v1_route_needs_a_token_and_the_right_role(
        app: FastAPI, client: TestClient, callers: dict[str, dict[str, str]]) -> None:
    checked = 0
    for method, path in sorted(app_routes(app)):
        allowed = EXPECTED.get((method, path))
        if not isinstance(allowed, set):
            continue
        for who in ("none", "bad", "malformed"):
            resp = _call(client, method, path, callers[who])
            assert resp.status_code == 401, (method, path, who, resp.status_code, resp.text)
            assert resp.json()["code"] == "unauthorized"
        for role in ROLES:
            if role in allowed and (method, path) in ENDLESS:
                continue
            resp = _call(client, method, path, callers[role])
            if role in allowed:
                assert resp.status_code not in (401, 403), (method, path, role, resp.text)
                assert resp.status_code < 500, (method, path, role, resp.text)
            else:
                assert resp.status_code == 403, (method, path, role, resp.status_code,
                                                  resp.text)
                assert resp.json()["code"] == "forbidden"
            checked += 1
    guarded = [key for key, kind in EXPECTED.items() if isinstance(kind, set)]
    assert len(guarded) >= 20 and checked == 3 * len(guarded) - len(ENDLESS)


def test_public_routes_answer_without_a_token(app: FastAPI, client: TestClient) -> None:
    for method, path in sorted(app_routes(app)):
        if EXPECTED.get((method, path)) == PUBLIC:
            resp = client.request(method, path)
            assert 200 <= resp.status_code < 300, (method, path, resp.status_code)


def test_sign_in_refuses_a_bad_token_and_accepts_a_good_one(
        client: TestClient, app: FastAPI) -> None:
    assert client.post("/v1/session", json={}).status_code == 401
    assert client.post("/v1/session", json={"token": "made-up"}).status_code == 401
    raw = token(app, IN, "console")["Authorization"].removeprefix("Bearer ")
    resp = client.post("/v1/session", json={"token": raw})
    assert resp.status_code == 200 and resp.json()["role"] == IN
    client.cookies.clear()


def test_a_session_cookie_carries_its_role_not_more(client: TestClient, app: FastAPI) -> None:
    raw = token(app, IN, "console-intake")["Authorization"].removeprefix("Bearer ")
    with TestClient(app) as own:
        assert own.post("/v1/session", json={"token": raw}).status_code == 200
        assert own.get("/v1/carers").status_code == 403
        assert own.post("/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 403
        assert own.get("/v1/requests").status_code == 200
        own.cookies.set("dolbom_session", "forged.0000")
        assert own.get("/v1/requests").status_code == 401


def test_a_session_lasts_one_shift_whatever_the_browser_keeps(app: FastAPI) -> None:
    """A signed cookie older than 12 h (or dated ahead) is refused: copied off a shared
    console PC, it stops working when the shift ends."""
    import time

    from api.session import MAX_AGE_S, cookie_value
    from dispatch.handlers import hash_token

    raw = token(app, D, "console-shift")["Authorization"].removeprefix("Bearer ")
    with TestClient(app) as own:
        assert own.post("/v1/session", json={"token": raw}).status_code == 200
        token_id, issued, _ = own.cookies["dolbom_session"].split(".")
        assert abs(int(issued) - time.time()) < 60
        assert own.get("/v1/carers").status_code == 200
        secret = app.state.session_secret
        for age, answer in ((MAX_AGE_S - 60, 200), (MAX_AGE_S + 1, 401), (-3600, 401)):
            signed = cookie_value(secret, token_id, hash_token(raw), int(time.time()) - age)
            own.cookies.set("dolbom_session", signed)
            assert own.get("/v1/carers").status_code == answer, age
        # The old two-part form (no issue time) is not accepted either.
        own.cookies.set("dolbom_session", f"{token_id}.{'0' * 64}")
        assert own.get("/v1/carers").status_code == 401


# -- intake sees only what it created ----------------------------------------------------------

def _family(client: TestClient, headers: dict[str, str], phone: str) -> dict[str, Any]:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    born = (datetime.now(ZoneInfo("Asia/Seoul")).date() - timedelta(days=5 * 365)).isoformat()
    resp = client.post("/v1/families", headers=headers, json={
        "guardian": {"name": "박보호", "phone": phone},
        "children": [{"name": "박아이", "birth_date": born}], "district": "광산구",
        "consent": {"child_data": True, "health_data": True}})
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _request(client: TestClient, headers: dict[str, str], family: dict[str, Any]) -> str:
    from datetime import datetime, time, timedelta
    from zoneinfo import ZoneInfo

    seoul = ZoneInfo("Asia/Seoul")
    day = datetime.now(seoul).date() + timedelta(days=1)
    resp = client.post("/v1/requests", headers=headers, json={
        "service": "hospital", "family_id": family["id"],
        "child_id": family["children"][0]["id"],
        "start": datetime.combine(day, time(10), seoul).isoformat(),
        "end": datetime.combine(day, time(14), seoul).isoformat(),
        "location": {"hospital": "전남대병원", "ward": "소아병동 5층"}})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def test_intake_reads_and_cancels_only_its_own(
        client: TestClient, app: FastAPI, callers: dict[str, dict[str, str]]) -> None:
    other_intake = token(app, IN, "other-intake")
    theirs = _request(client, callers[D], _family(client, callers[D], "+821077770001"))
    mine = _request(client, other_intake, _family(client, other_intake, "+821077770002"))
    assert client.get(f"/v1/requests/{theirs}", headers=other_intake).status_code == 404
    listed = client.get("/v1/requests", headers=other_intake).json()
    assert [r["id"] for r in listed] == [mine]
    assert client.post(f"/v1/requests/{theirs}/cancel", json={"reason": "x"},
                       headers=other_intake).status_code == 404
    assert client.get(f"/v1/requests/{theirs}", headers=callers[D]).json()["status"] \
        != "cancelled"
    assert client.get(f"/v1/requests/{mine}", headers=other_intake).status_code == 200
    assert client.post(f"/v1/requests/{mine}/cancel", json={"reason": "아이가 나았어요"},
                       headers=other_intake).status_code == 200


# -- Twilio webhooks -------------------------------------------------------------------------

WEBHOOKS = {
    "/webhooks/twilio/sms": {"MessageSid": "SM" + "a" * 32, "From": "+821012345678",
                             "To": "+821000000000", "Body": "YES 4821"},
    "/webhooks/twilio/status": {"MessageSid": "SM" + "b" * 32, "MessageStatus": "delivered"},
    "/webhooks/twilio/voice": {"CallSid": "CA" + "c" * 32, "From": "+821012345678"},
    "/webhooks/twilio/voice/step": {"CallSid": "CA" + "d" * 32, "From": "+821012345678",
                                    "Digits": "1"},
}


def test_webhook_table_covers_every_twilio_route(app: FastAPI) -> None:
    twilio = {path for (method, path), kind in EXPECTED.items() if kind == TWILIO}
    assert twilio == set(WEBHOOKS)


@pytest.mark.parametrize("path", sorted(WEBHOOKS))
def test_webhook_refuses_forged_missing_and_tampered_signatures(
        client: TestClient, path: str, callers: dict[str, dict[str, str]]) -> None:
    params = WEBHOOKS[path]
    url = PUBLIC_URL + path
    good = sign(url, params, AUTH_TOKEN)
    tampered = {**params, next(iter(params)): params[next(iter(params))][:-1] + "9"}
    attempts = {
        "missing": (params, {}),
        "empty": (params, {"X-Twilio-Signature": ""}),
        "forged": (params, {"X-Twilio-Signature": sign(url, params, "not-the-auth-token")}),
        "garbage": (params, {"X-Twilio-Signature": "AAAA"}),
        "replayed with a changed param": (tampered, {"X-Twilio-Signature": good}),
        "replayed with an added param": ({**params, "Extra": "1"},
                                         {"X-Twilio-Signature": good}),
        "bearer token instead": (params, callers[D]),
    }
    for what, (form, headers) in attempts.items():
        resp = client.post(path, data=form, headers=headers)
        assert resp.status_code == 403, (path, what, resp.status_code, resp.text)
    # The genuine signature over the same params passes (so the refusals above mean something).
    resp = client.post(path, data=params, headers={"X-Twilio-Signature": good})
    assert resp.status_code < 300, (path, resp.status_code, resp.text)
