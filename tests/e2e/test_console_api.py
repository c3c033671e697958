"""The dispatcher's live board over HTTP (issue 5): acknowledging an escalation, the assign
picker's ranked candidates, the board's list fields and the console gateway's simulated phones.

Drives `create_app(settings)` in-process on a fresh, migrated SQLite database per test (no
broker: the API writes outbox rows); the worker's "start matching" step is played by handing
`StartMatching` to the app's bus, as in test_dispatcher_actions.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from dispatch import commands as c
from dispatch import orm
from dispatch.domain.policy import load_policies
from dispatch.handlers.dispatcher import escalation_state
from dispatch.views import child_age_label
from schemas.config import Settings

SEOUL = ZoneInfo("Asia/Seoul")
DISPATCHER_NAME = "상황실 이하늘"
WARD = {"hospital": "전남대병원", "ward": "소아병동 5층"}
ENV = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER",
       "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_API_BASE_URL", "DOLBOM_PUBLIC_URL",
       "DOLBOM_POLICY_DIR", "DOLBOM_DATABASE_URL", "DOLBOM_DISPATCHER_PHONE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def _make_app(url: str, **settings: Any) -> FastAPI:
    from api.app import create_app

    return create_app(Settings(database_url=url, public_url="http://testserver.example",
                               **settings))


@pytest.fixture
def app(sqlite_url: str) -> FastAPI:
    return _make_app(sqlite_url)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _token(app: FastAPI, role: str, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.state.bus.handle(c.CreateToken(name=name, role=role))}"}


@pytest.fixture
def dispatcher(app: FastAPI) -> dict[str, str]:
    return _token(app, "dispatcher", DISPATCHER_NAME)


@pytest.fixture
def intake(app: FastAPI) -> dict[str, str]:
    return _token(app, "intake", "parent-app")


def _next_weekday(hour: int) -> datetime:
    """Tomorrow or later, Monday to Friday, at `hour` in Seoul (the centres' weekday nights)."""
    day = datetime.now(SEOUL).date() + timedelta(days=1)
    while day.weekday() > 4:
        day += timedelta(days=1)
    return datetime.combine(day, time(hour), SEOUL)


def _months_before(day: date, months: int) -> date:
    total = day.year * 12 + day.month - 1 - months
    return date(total // 12, total % 12 + 1, min(day.day, 28))


def _family(client: TestClient, headers: dict[str, str], phone: str, born: date,
            district: str = "광산구") -> dict[str, Any]:
    resp = client.post("/v1/families", headers=headers, json={
        "guardian": {"name": "박보호", "phone": phone}, "district": district,
        "children": [{"name": "박아이", "birth_date": born.isoformat()}],
        "consent": {"child_data": True, "health_data": True}})
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _carer(client: TestClient, headers: dict[str, str], name: str, phone: str, *,
           district: str = "광산구", skills: tuple[str, ...] = ("hospital",),
           home: tuple[float, float] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "phone": phone, "districts": [district],
                            "skills": list(skills)}
    if home:
        data["home"] = {"lat": home[0], "lon": home[1]}
    resp = client.post("/v1/carers", headers=headers, json=data)
    assert resp.status_code == 201, resp.text
    carer = resp.json()
    assert client.put(f"/v1/carers/{carer['id']}/duty", headers=headers,
                      json={"on_duty": True}).status_code == 200
    return carer  # type: ignore[no-any-return]


def _hospital(client: TestClient, headers: dict[str, str], family: dict[str, Any], *,
              start: datetime | None = None, **location: Any) -> dict[str, Any]:
    start = start or _next_weekday(10)
    resp = client.post("/v1/requests", headers=headers, json={
        "service": "hospital", "family_id": family["id"],
        "child_id": family["children"][0]["id"], "start": start.isoformat(),
        "end": (start + timedelta(hours=3)).isoformat(), "location": {**WARD, **location}})
    assert resp.status_code == 202, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _start_matching(app: FastAPI, request_id: str) -> None:
    app.state.bus.handle(c.StartMatching(request_id=request_id, event_id=f"m:{request_id}"))


def _outbox_types(app: FastAPI, request_id: str) -> list[str]:
    o = orm.outbox.c
    with app.state.engine.connect() as conn:
        return list(conn.scalars(select(o.type).where(o.key == request_id).order_by(o.id)))


def _board(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    resp = client.get("/v1/console/board", headers=headers)
    assert resp.status_code == 200, resp.text
    return {r["id"]: r for r in resp.json()["requests"]}


# -- acknowledging an escalation ---------------------------------------------------------------

def test_acknowledge_records_the_dispatcher_and_announces_it_once(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    fam = _family(client, dispatcher, "+821099990001", date(2019, 5, 5))
    request = _hospital(client, dispatcher, fam)
    _start_matching(app, request["id"])  # nobody on duty: escalated at once
    before = _board(client, dispatcher)[request["id"]]
    assert before["status"] == "escalated"
    assert before["escalation"]["reason"] == "no_candidates"
    assert before["escalation"]["acknowledged"] is False

    path = f"/v1/requests/{request['id']}/acknowledge"
    resp = client.post(path, headers=dispatcher)
    assert resp.status_code == 200, resp.text
    ack = resp.json()["escalation"]
    assert ack["acknowledged"] is True and ack["acknowledged_by"] == DISPATCHER_NAME
    assert resp.json()["status"] == "escalated"  # still needs a carer; only the alarm stops

    again = client.post(path, headers=dispatcher)  # a second click, another board
    assert again.status_code == 200 and again.json()["escalation"] == ack
    detail = client.get(f"/v1/requests/{request['id']}", headers=dispatcher).json()
    entries = [e for e in detail["timeline"] if e["type"] == "escalation_acknowledged"]
    assert [(e["actor"], e["detail"]["dispatcher"]) for e in entries] == [
        ("dispatcher", DISPATCHER_NAME)]
    assert _outbox_types(app, request["id"]).count("request.escalation_acknowledged") == 1
    assert _board(client, dispatcher)[request["id"]]["escalation"]["acknowledged"] is True


def test_acknowledge_is_409_unless_escalated_and_404_for_an_unknown_request(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    _carer(client, dispatcher, "김민지", "+821055550001")
    request = _hospital(client, dispatcher,
                        _family(client, dispatcher, "+821099990002", date(2019, 5, 5)))
    _start_matching(app, request["id"])
    resp = client.post(f"/v1/requests/{request['id']}/acknowledge", headers=dispatcher)
    assert resp.status_code == 409 and resp.json()["code"] == "not_escalated", resp.text
    assert "request.escalation_acknowledged" not in _outbox_types(app, request["id"])
    resp = client.post("/v1/requests/no-such-id/acknowledge", headers=dispatcher)
    assert resp.status_code == 404


def test_new_endpoints_need_a_dispatcher(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str],
        intake: dict[str, str]) -> None:
    request = _hospital(client, intake, _family(client, intake, "+821099990003",
                                                date(2019, 5, 5)))
    _start_matching(app, request["id"])
    calls = [("POST", f"/v1/requests/{request['id']}/acknowledge"),
             ("GET", f"/v1/requests/{request['id']}/candidates"),
             ("GET", "/v1/console/board"), ("GET", "/v1/console/phones")]
    for method, path in calls:
        assert client.request(method, path).status_code == 401, path
        resp = client.request(method, path, headers=intake)  # even for its own request
        assert resp.status_code == 403 and resp.json()["code"] == "forbidden", path
        assert client.request(method, path, headers=dispatcher).status_code == 200, path
    # The refused acknowledgement left nothing behind; the dispatcher's is the only one.
    assert _outbox_types(app, request["id"]).count("request.escalation_acknowledged") == 1


def test_escalation_state_follows_the_latest_escalation() -> None:
    t0 = datetime(2026, 11, 26, 1, 0)
    assert escalation_state([]) is None
    first = escalation_state([("escalated", t0, {"reason": "no_candidates"}),
                              ("escalation_acknowledged", t0 + timedelta(minutes=1),
                               {"dispatcher": "가"})])
    assert first is not None and first["acknowledged_by"] == "가"
    # Assigned, then the carer withdrew and nobody was left: a new alarm, not acknowledged.
    again = escalation_state([("escalated", t0, {"reason": "no_candidates"}),
                              ("escalation_acknowledged", t0, {"dispatcher": "가"}),
                              ("escalated", t0 + timedelta(hours=1), {"reason": "sla"})])
    assert again is not None and again["reason"] == "sla"
    assert again["acknowledged_at"] is None


# -- the board's list fields -------------------------------------------------------------------

def test_child_age_label() -> None:
    assert [child_age_label(m) for m in (0, 8, 13, 23, 24, 36, 71, 150)] == [
        "0개월", "8개월", "13개월", "23개월", "2세", "3세", "5세", "12세"]


def test_board_rows_carry_age_offer_clock_label_and_centre(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    policies = load_policies()
    _carer(client, dispatcher, "김민지", "+821055550001")
    start = _next_weekday(10)
    three = _family(client, dispatcher, "+821099990004", _months_before(start.date(), 3 * 12 + 2))
    offered = _hospital(client, dispatcher, three, start=start)
    _start_matching(app, offered["id"])

    staff = _carer(client, dispatcher, "최센터", "+821055550009", district="서구",
                   skills=("infant",))
    night = _next_weekday(19)
    assert client.post("/v1/shifts", headers=dispatcher, json={
        "carer_id": staff["id"], "center_id": "gwangju-main",
        "start": (night - timedelta(hours=1)).isoformat(),
        "end": (night + timedelta(hours=5)).isoformat()}).status_code == 201
    infant = _family(client, dispatcher, "+821099990005", _months_before(night.date(), 8))
    resp = client.post("/v1/requests", headers=dispatcher, json={
        "service": "emergency-center", "family_id": infant["id"],
        "child_id": infant["children"][0]["id"], "start": night.isoformat(),
        "end": (night + timedelta(hours=2)).isoformat(),
        "location": {"center_id": "gwangju-main"}})
    assert resp.status_code == 202, resp.text
    booked = resp.json()
    _start_matching(app, booked["id"])

    rows = _board(client, dispatcher)
    row = rows[offered["id"]]
    assert row["status"] == "matching"
    assert row["child_age"] == "3세" and row["child_age_months"] == 38
    assert row["service_label"] == policies["hospital"].label
    detail = client.get(f"/v1/requests/{offered['id']}", headers=dispatcher).json()
    [offer] = detail["offers"]
    assert offer["carer_name"] == "김민지"
    assert row["offer_expires_at"] == offer["expires_at"]
    assert row["offer_counts"] == {"open": 1}
    assert row["escalation"] is None
    created = datetime.fromisoformat(row["created_at"])
    assert datetime.fromisoformat(row["sla_due_at"]) - created == timedelta(
        seconds=policies["hospital"].escalate_after_s)

    centre = rows[booked["id"]]
    assert centre["status"] == "assigned" and centre["provisional"] is True
    assert centre["child_age"] == "8개월"
    assert centre["center_name"] == "광주긴급아이돌봄센터"
    assert centre["service_label"] == policies["emergency-center"].label
    assert centre["carer"] == {"id": staff["id"], "name": "최센터"}
    assert centre["offer_expires_at"] is None
    # The public list carries the same fields.
    listed = {r["id"]: r for r in client.get("/v1/requests?open=true", headers=dispatcher).json()}
    assert listed[offered["id"]]["child_age"] == "3세"
    assert listed[booked["id"]]["center_name"] == "광주긴급아이돌봄센터"


def test_the_board_reads_in_the_same_number_of_queries_for_2_or_8_requests(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    def queries() -> int:
        seen: list[str] = []

        def count(*args: Any) -> None:
            seen.append(args[2])

        event.listen(app.state.engine, "before_cursor_execute", count)
        try:
            assert client.get("/v1/console/board", headers=dispatcher).status_code == 200
        finally:
            event.remove(app.state.engine, "before_cursor_execute", count)
        assert any("FROM requests" in s for s in seen)  # the counter does see the board
        return sum(1 for s in seen if s.lstrip().upper().startswith("SELECT"))

    _carer(client, dispatcher, "김민지", "+821055550001")
    for i in range(2):
        fam = _family(client, dispatcher, f"+82109999100{i}", date(2019, 5, 5))
        _start_matching(app, _hospital(client, dispatcher, fam, start=_next_weekday(8 + i))["id"])
    few = queries()
    for i in range(2, 8):
        fam = _family(client, dispatcher, f"+82109999100{i}", date(2019, 5, 5))
        _start_matching(app, _hospital(client, dispatcher, fam, start=_next_weekday(8 + i))["id"])
    assert len(_board(client, dispatcher)) == 8
    assert queries() == few


# -- the assign picker's candidates ------------------------------------------------------------

def test_candidates_come_in_the_engines_rank_order_with_why(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    # 남구 around 35.13N 126.90E: the request at the ward, carers 1, 3 and 6 km away.
    far = _carer(client, dispatcher, "박먼곳", "+821055550011", district="남구",
                 home=(35.13 + 0.054, 126.90))
    near = _carer(client, dispatcher, "김가까", "+821055550012", district="남구",
                  home=(35.13 + 0.009, 126.90))
    middle = _carer(client, dispatcher, "이중간", "+821055550013", district="남구",
                    home=(35.13 + 0.027, 126.90))
    nowhere = _carer(client, dispatcher, "정주소", "+821055550014", district="남구")
    busy = _carer(client, dispatcher, "최바쁨", "+821055550015", district="남구",
                  home=(35.13, 126.90))
    elsewhere = _carer(client, dispatcher, "한북구", "+821055550016", district="북구")
    unskilled = _carer(client, dispatcher, "오영아", "+821055550017", district="남구",
                       skills=("infant",))
    start = _next_weekday(10)
    # The nearest carer already has a job that overlaps the new one.
    other = _hospital(client, dispatcher,
                      _family(client, dispatcher, "+821099990020", date(2019, 5, 5)),
                      start=start, district="남구", lat=35.13, lon=126.90)
    assert client.post(f"/v1/requests/{other['id']}/assign", headers=dispatcher,
                       json={"carer_id": busy["id"]}).status_code == 200
    request = _hospital(client, dispatcher,
                        _family(client, dispatcher, "+821099990021", date(2019, 5, 5)),
                        start=start + timedelta(hours=1), district="남구", lat=35.13,
                        lon=126.90)

    resp = client.get(f"/v1/requests/{request['id']}/candidates", headers=dispatcher)
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["mode"] == "visit"
    ranked = [(cand["rank"], cand["carer"]["id"]) for cand in got["candidates"]]
    # Nearest first; unknown distance last (policy: distance, then fewest jobs today).
    assert ranked == [(1, near["id"]), (2, middle["id"]), (3, far["id"]), (4, nowhere["id"])]
    km = [cand["distance_km"] for cand in got["candidates"]]
    assert km[0] == pytest.approx(1.0, abs=0.1) and km[2] == pytest.approx(6.0, abs=0.1)
    assert km[3] is None
    assert all(cand["jobs_today"] == 0 for cand in got["candidates"])
    assert [(b["carer"]["id"], b["reason"], b["current_job"]) for b in got["busy"]] == [
        (busy["id"], "busy", other["id"])]
    assert {(o["carer"]["id"], o["reason"]) for o in got["others"]} == {
        (elsewhere["id"], "district"), (unskilled["id"], "skills")}

    # Once offers went out the engine offered in that order too, and the picker says so.
    _start_matching(app, request["id"])
    got = client.get(f"/v1/requests/{request['id']}/candidates", headers=dispatcher).json()
    offered = [cand["carer"]["id"] for cand in got["candidates"] if cand["offer"] == "open"]
    assert offered == [near["id"], middle["id"], far["id"]]  # the hospital policy's wave of 3
    assert client.get("/v1/requests/nope/candidates", headers=dispatcher).status_code == 404
    # On the request it was assigned to, the busy carer is "this request's", not "busy".
    got = client.get(f"/v1/requests/{other['id']}/candidates", headers=dispatcher).json()
    assert [(b["carer"]["id"], b["reason"]) for b in got["busy"]] == [(busy["id"], "this_request")]


def test_centre_candidates_are_the_groups_the_child_would_join_in_order(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    night = _next_weekday(19)
    shift = {"center_id": "gwangju-main", "start": (night - timedelta(hours=1)).isoformat(),
             "end": (night + timedelta(hours=5)).isoformat()}
    staff = []
    for i, name in enumerate(("가센터", "나센터", "다센터")):
        carer = _carer(client, dispatcher, name, f"+82105555010{i}", district="서구",
                       skills=("infant",))
        assert client.post("/v1/shifts", headers=dispatcher,
                           json={"carer_id": carer["id"], **shift}).status_code == 201
        staff.append(carer)

    def book(phone: str, months: int, carer: dict[str, Any] | None = None) -> dict[str, Any]:
        fam = _family(client, dispatcher, phone, _months_before(night.date(), months))
        resp = client.post("/v1/requests", headers=dispatcher, json={
            "service": "emergency-center", "family_id": fam["id"],
            "child_id": fam["children"][0]["id"], "start": night.isoformat(),
            "end": (night + timedelta(hours=2)).isoformat(),
            "location": {"center_id": "gwangju-main"}})
        assert resp.status_code == 202, resp.text
        if carer is None:
            _start_matching(app, resp.json()["id"])
        return resp.json()  # type: ignore[no-any-return]

    # 가: two children; 나: one infant (a 1:3 group, with room for two); 다: five (full).
    for i in range(2):
        r = book(f"+8210999902{i:02d}", 30, staff[0])
        assert client.post(f"/v1/requests/{r['id']}/assign", headers=dispatcher,
                           json={"carer_id": staff[0]["id"]}).status_code == 200
    r = book("+821099990230", 8, staff[1])
    assert client.post(f"/v1/requests/{r['id']}/assign", headers=dispatcher,
                       json={"carer_id": staff[1]["id"]}).status_code == 200
    for i in range(5):
        r = book(f"+8210999902{40 + i}", 30, staff[2])
        assert client.post(f"/v1/requests/{r['id']}/assign", headers=dispatcher,
                           json={"carer_id": staff[2]["id"]}).status_code == 200

    waiting = book("+821099990250", 40, staff[0])  # not yet placed: the dispatcher chooses
    got = client.get(f"/v1/requests/{waiting['id']}/candidates", headers=dispatcher).json()
    assert got["mode"] == "center" and got["sensitive"] is False
    # The fullest group with room first (place_booking's rule), then the next.
    assert [(cand["rank"], cand["carer"]["id"], cand["children"], cand["capacity"])
            for cand in got["candidates"]] == [(1, staff[0]["id"], 2, 5),
                                               (2, staff[1]["id"], 1, 3)]
    assert [(b["carer"]["id"], b["reason"], b["children"]) for b in got["busy"]] == [
        (staff[2]["id"], "group_full", 5)]


# -- simulated phones --------------------------------------------------------------------------

def test_phones_show_each_persons_sms_in_and_out(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    carer = _carer(client, dispatcher, "김민지", "010-5555-0001")
    idle = _carer(client, dispatcher, "이서연", "010-5555-0002", district="동구")
    fam = _family(client, dispatcher, "010-9999-0006", date(2019, 5, 5))
    request = _hospital(client, dispatcher, fam)
    _start_matching(app, request["id"])
    resp = client.post("/v1/console/sms", headers=dispatcher,
                       json={"from": "010-5555-0001", "body": f"네 {request['code']}"})
    assert resp.status_code == 202, resp.text

    got = client.get("/v1/console/phones", headers=dispatcher)
    assert got.status_code == 200, got.text
    phones = {p["phone"]: p for p in got.json()}
    mine = phones[carer["phone"]]
    assert (mine["kind"], mine["name"], mine["id"]) == ("carer", "김민지", carer["id"])
    assert [(m["direction"], m["kind"]) for m in mine["messages"]] == [("out", "offer"),
                                                                       ("in", None)]
    assert mine["messages"][0]["code"] == request["code"]
    assert mine["messages"][1]["body"] == f"네 {request['code']}"
    parent = phones[fam["guardian"]["phone"]]
    assert parent["kind"] == "parent" and parent["id"] == fam["id"]
    assert [m["kind"] for m in parent["messages"]] == ["request_received"]
    assert phones[idle["phone"]]["messages"] == []
    # The busiest phones first; the idle carer last.
    order = [p["phone"] for p in got.json()]
    assert order[-1] == idle["phone"] and order.index(carer["phone"]) == 0


def test_no_simulated_phones_when_twilio_is_configured(sqlite_url: str) -> None:
    app = _make_app(sqlite_url, **{"TWILIO_ACCOUNT_SID": "ACconsoletest",
                                   "TWILIO_AUTH_TOKEN": "not-a-real-token"})
    with TestClient(app) as client:
        headers = _token(app, "dispatcher", DISPATCHER_NAME)
        resp = client.get("/v1/console/phones", headers=headers)
        assert resp.status_code == 409 and resp.json()["code"] == "twilio_configured"
        assert client.get("/v1/console/board", headers=headers).json()["sms_gateway"] == "twilio"
    with TestClient(_make_app(sqlite_url)) as client:
        headers = {"Authorization": headers["Authorization"]}
        assert client.get("/v1/console/board", headers=headers).json()["sms_gateway"] == "console"



def test_an_unacknowledged_escalation_is_listed_before_an_acknowledged_one(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    fam = _family(client, dispatcher, "+821099990030", date(2019, 5, 5))
    early = _hospital(client, dispatcher, fam, start=_next_weekday(9))
    late = _hospital(client, dispatcher, fam, start=_next_weekday(15))
    for r in (early, late):
        _start_matching(app, r["id"])  # nobody on duty: both escalate
    assert list(_board(client, dispatcher)) == [early["id"], late["id"]]  # by start
    assert client.post(f"/v1/requests/{early['id']}/acknowledge",
                       headers=dispatcher).status_code == 200
    assert list(_board(client, dispatcher)) == [late["id"], early["id"]]


def test_acknowledge_board_candidates_and_phones_on_both_backends(db_url: str) -> None:
    app = _make_app(db_url)
    with TestClient(app) as client:
        headers = _token(app, "dispatcher", DISPATCHER_NAME)
        carer = _carer(client, headers, "김민지", "+821055550041", district="북구")
        fam = _family(client, headers, "+821099990041", date(2019, 5, 5))
        lonely = _hospital(client, headers, fam, district="동구")
        offered = _hospital(client, headers, fam, start=_next_weekday(14), district="북구")
        for r in (lonely, offered):
            _start_matching(app, r["id"])
        assert client.post(f"/v1/requests/{lonely['id']}/acknowledge",
                           headers=headers).status_code == 200
        rows = _board(client, headers)
        assert rows[lonely["id"]]["escalation"]["acknowledged_by"] == DISPATCHER_NAME
        assert rows[offered["id"]]["offer_expires_at"] is not None
        assert rows[offered["id"]]["child_age"].endswith("세")
        got = client.get(f"/v1/requests/{offered['id']}/candidates", headers=headers).json()
        assert [(c["carer"]["id"], c["offer"]) for c in got["candidates"]] == [
            (carer["id"], "open")]
        phones = {p["phone"]: p for p in client.get("/v1/console/phones",
                                                    headers=headers).json()}
        assert [m["kind"] for m in phones[carer["phone"]]["messages"]] == ["offer"]
