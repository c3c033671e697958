"""What a dispatcher (and a parent's app) can do to a request over HTTP: offer again now, add a
note, cancel; the open-requests list; the fee in the request summary.

Drives `create_app(settings)` in-process with a fresh, migrated SQLite database per test (no
broker: the API writes outbox rows). The worker's step that starts matching is played by
handing `StartMatching` to the app's bus. Handlers use the real clock, so request times are
built from the real date: "tomorrow 10:00 in Seoul".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
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
HOSPITAL_TOML = Path(__file__).resolve().parents[2] / "dispatch" / "policies" / "hospital.toml"
WARD = {"hospital": "전남대병원", "ward": "소아병동 5층"}
DISPATCHER_NAME = "상황실 김민지"


def _tomorrow(hour: int) -> datetime:
    day = datetime.now(SEOUL).date() + timedelta(days=1)
    return datetime.combine(day, time(hour), SEOUL)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER",
                 "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_API_BASE_URL", "DOLBOM_PUBLIC_URL",
                 "DOLBOM_POLICY_DIR", "DOLBOM_DATABASE_URL", "DOLBOM_DISPATCHER_PHONE"):
        monkeypatch.delenv(name, raising=False)


def _make_app(url: str, policy_dir: Path | None = None) -> FastAPI:
    from api.app import create_app

    return create_app(Settings(database_url=url, public_url="http://testserver.example",
                               policy_dir=policy_dir))


@pytest.fixture
def app(sqlite_url: str) -> FastAPI:
    return _make_app(sqlite_url)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _token(app: FastAPI, role: str, name: str) -> dict[str, str]:
    token = app.state.bus.handle(c.CreateToken(name=name, role=role))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def dispatcher(app: FastAPI) -> dict[str, str]:
    return _token(app, "dispatcher", DISPATCHER_NAME)


@pytest.fixture
def intake(app: FastAPI) -> dict[str, str]:
    return _token(app, "intake", "parent-app")


def _family(client: TestClient, headers: dict[str, str], *, children: int = 1,
            phone: str = "+821099990000") -> dict[str, Any]:
    born = _years_before(_tomorrow(10).date(), 5).isoformat()
    resp = client.post("/v1/families", headers=headers, json={
        "guardian": {"name": "박보호", "phone": phone},
        "children": [{"name": f"박아이{i}", "birth_date": born} for i in range(children)],
        "district": "광산구", "consent": {"child_data": True, "health_data": True}})
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _carer(client: TestClient, headers: dict[str, str], n: int) -> dict[str, Any]:
    resp = client.post("/v1/carers", headers=headers, json={
        "name": f"김돌봄{n}", "phone": f"+82101234{n:04d}", "districts": ["광산구"],
        "skills": ["hospital"]})
    assert resp.status_code == 201, resp.text
    carer = resp.json()
    resp = client.put(f"/v1/carers/{carer['id']}/duty", headers=headers, json={"on_duty": True})
    assert resp.status_code == 200, resp.text
    return carer  # type: ignore[no-any-return]


def _request(client: TestClient, headers: dict[str, str], family: dict[str, Any], *,
             start: datetime | None = None, end: datetime | None = None, child: int = 0,
             service: str = "hospital") -> dict[str, Any]:
    start = start or _tomorrow(10)
    end = end or start + timedelta(hours=4)
    resp = client.post("/v1/requests", headers=headers, json={
        "service": service, "family_id": family["id"],
        "child_id": family["children"][child]["id"],
        "start": start.isoformat(), "end": end.isoformat(),
        "location": dict(WARD) if service == "hospital" else {}})
    assert resp.status_code == 202, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _start_matching(app: FastAPI, request_id: str) -> None:
    """What the worker does when request.received arrives."""
    app.state.bus.handle(c.StartMatching(request_id=request_id, event_id=f"m:{request_id}"))


def _detail(client: TestClient, headers: dict[str, str], request_id: str) -> dict[str, Any]:
    resp = client.get(f"/v1/requests/{request_id}", headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _entries(detail: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [e for e in detail["timeline"] if e["type"] == type_]


def _offer_sms(app: FastAPI, request_id: str) -> int:
    n = orm.notifications.c
    with app.state.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(orm.notifications).where(
            n.request_id == request_id, n.kind == "offer")))


def _assert_error(resp: Any, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code, resp.json()


# -- re-offer ---------------------------------------------------------------------------------

def test_reoffer_sends_the_next_offers_on_a_matching_request(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    first = _carer(client, dispatcher, 1)
    request = _request(client, dispatcher, _family(client, dispatcher))
    _start_matching(app, request["id"])
    before = _detail(client, dispatcher, request["id"])
    assert before["status"] == "matching"
    assert [o["carer_id"] for o in before["offers"]] == [first["id"]]

    second = _carer(client, dispatcher, 2)  # came on duty after the first offers went out
    resp = client.post(f"/v1/requests/{request['id']}/reoffer", headers=dispatcher)
    assert resp.status_code == 200, resp.text
    assert resp.json()["offers_sent"] == 1
    assert resp.json()["status"] == "matching"

    after = _detail(client, dispatcher, request["id"])
    assert {o["carer_id"] for o in after["offers"]} == {first["id"], second["id"]}
    assert all(o["status"] == "open" for o in after["offers"])  # the first is still open
    assert _offer_sms(app, request["id"]) == 2
    [entry] = _entries(after, "reoffered")
    assert entry["actor"] == "dispatcher"
    assert entry["detail"] == {"dispatcher": DISPATCHER_NAME, "offers": 1}


def test_reoffer_on_an_escalated_request(app: FastAPI, client: TestClient,
                                         dispatcher: dict[str, str]) -> None:
    request = _request(client, dispatcher, _family(client, dispatcher))
    _start_matching(app, request["id"])  # nobody on duty: escalated at once
    assert _detail(client, dispatcher, request["id"])["status"] == "escalated"

    resp = client.post(f"/v1/requests/{request['id']}/reoffer", headers=dispatcher)
    assert resp.status_code == 200, resp.text
    assert resp.json()["offers_sent"] == 0
    first = _carer(client, dispatcher, 1)  # comes on duty: offered it without a dispatcher
    detail = _detail(client, dispatcher, request["id"])
    assert [o["carer_id"] for o in detail["offers"]] == [first["id"]]
    assert [e["detail"]["offers"] for e in _entries(detail, "reoffered_on_duty")] == [1]
    assert detail["status"] == "escalated"
    second = _carer(client, dispatcher, 2)  # the first offer is still open: left to it
    assert len(_detail(client, dispatcher, request["id"])["offers"]) == 1
    resp = client.post(f"/v1/requests/{request['id']}/reoffer", headers=dispatcher)
    assert resp.status_code == 200, resp.text
    assert resp.json()["offers_sent"] == 1
    detail = _detail(client, dispatcher, request["id"])
    assert [o["carer_id"] for o in detail["offers"]] == [first["id"], second["id"]]
    assert [e["detail"]["offers"] for e in _entries(detail, "reoffered")] == [0, 1]


def test_reoffer_is_409_unless_the_request_is_looking_for_a_carer(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str],
        intake: dict[str, str]) -> None:
    carer = _carer(client, dispatcher, 1)
    request = _request(client, dispatcher, _family(client, dispatcher))
    path = f"/v1/requests/{request['id']}/reoffer"
    # received: the worker has not started matching yet
    _assert_error(client.post(path, headers=dispatcher), 409, "not_matching")

    _start_matching(app, request["id"])
    resp = client.post(f"/v1/requests/{request['id']}/assign", headers=dispatcher,
                       json={"carer_id": carer["id"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "assigned"
    _assert_error(client.post(path, headers=dispatcher), 409, "not_matching")
    assert _offer_sms(app, request["id"]) == 1  # nothing new went out
    assert _entries(_detail(client, dispatcher, request["id"]), "reoffered") == []

    _assert_error(client.post(path, headers=intake), 403, "forbidden")
    _assert_error(client.post("/v1/requests/no-such-id/reoffer", headers=dispatcher),
                  404, "not_found")


# -- notes ------------------------------------------------------------------------------------

def test_notes_are_kept_in_the_timeline_with_the_dispatchers_name(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str]) -> None:
    request = _request(client, dispatcher, _family(client, dispatcher))
    path = f"/v1/requests/{request['id']}/notes"
    text = "보호자와 통화: 병동 5층 간호사실 앞"
    resp = client.post(path, headers=dispatcher, json={"text": text})
    assert resp.status_code == 201, resp.text
    assert resp.json()["type"] == "note"
    assert resp.json()["detail"] == {"text": text, "dispatcher": DISPATCHER_NAME}
    other = _token(app, "dispatcher", "야간 박")
    assert client.post(path, headers=other, json={"text": "x" * 1000}).status_code == 201

    timeline = _detail(client, dispatcher, request["id"])["timeline"]
    notes = [e for e in timeline if e["type"] == "note"]
    assert [(e["actor"], e["detail"]["dispatcher"], e["detail"]["text"]) for e in notes] \
        == [("dispatcher", DISPATCHER_NAME, text), ("dispatcher", "야간 박", "x" * 1000)]
    assert timeline.index(notes[0]) > next(i for i, e in enumerate(timeline)
                                           if e["type"] == "received")


def test_bad_notes_are_refused(app: FastAPI, client: TestClient, dispatcher: dict[str, str],
                               intake: dict[str, str]) -> None:
    request = _request(client, intake, _family(client, intake))
    path = f"/v1/requests/{request['id']}/notes"
    _assert_error(client.post(path, headers=dispatcher, json={"text": "x" * 1001}),
                  422, "invalid_input")
    _assert_error(client.post(path, headers=dispatcher, json={"text": "   "}),
                  422, "invalid_input")
    _assert_error(client.post(path, headers=dispatcher, json={}), 422, "invalid_input")
    _assert_error(client.post(path, headers=intake, json={"text": "hi"}), 403, "forbidden")
    _assert_error(client.post("/v1/requests/nope/notes", headers=dispatcher,
                              json={"text": "hi"}), 404, "not_found")
    assert _entries(_detail(client, dispatcher, request["id"]), "note") == []


# -- cancel -----------------------------------------------------------------------------------

def test_intake_cancels_a_request_it_created_as_the_parent(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str],
        intake: dict[str, str]) -> None:
    family = _family(client, intake)
    request = _request(client, intake, family)
    other = _token(app, "intake", "other-app")

    _assert_error(client.post(f"/v1/requests/{request['id']}/cancel", headers=other,
                              json={"reason": "x"}), 404, "not_found")
    _assert_error(client.post("/v1/requests/no-such-id/cancel", headers=intake, json={}),
                  404, "not_found")
    assert _detail(client, dispatcher, request["id"])["status"] == "received"

    resp = client.post(f"/v1/requests/{request['id']}/cancel", headers=intake,
                       json={"reason": "아이가 퇴원했어요"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled"
    [entry] = _entries(_detail(client, intake, request["id"]), "cancelled")
    assert entry["actor"] == "parent"
    assert entry["detail"] == {"reason": "아이가 퇴원했어요", "by": "parent-app"}
    # once more: still cancelled, nothing new
    again = client.post(f"/v1/requests/{request['id']}/cancel", headers=intake, json={})
    assert again.status_code == 200, again.text
    assert len(_entries(_detail(client, intake, request["id"]), "cancelled")) == 1


def test_dispatcher_cancel_names_the_dispatcher(app: FastAPI, client: TestClient,
                                                dispatcher: dict[str, str],
                                                intake: dict[str, str]) -> None:
    request = _request(client, intake, _family(client, intake))
    resp = client.post(f"/v1/requests/{request['id']}/cancel", headers=dispatcher, json={})
    assert resp.status_code == 200, resp.text
    [entry] = _entries(_detail(client, dispatcher, request["id"]), "cancelled")
    assert entry["actor"] == "dispatcher"
    assert entry["detail"] == {"reason": f"cancelled by {DISPATCHER_NAME}",
                               "by": DISPATCHER_NAME}


# -- the list ---------------------------------------------------------------------------------

def test_list_filters_and_puts_the_most_urgent_open_request_first(
        app: FastAPI, client: TestClient, dispatcher: dict[str, str],
        intake: dict[str, str]) -> None:
    family = _family(client, dispatcher)
    late = _request(client, dispatcher, family, start=_tomorrow(15), end=_tomorrow(17))
    _start_matching(app, late["id"])  # nobody on duty: escalated
    early = _request(client, dispatcher, family, start=_tomorrow(9), end=_tomorrow(11))
    noon = _request(client, dispatcher, family, start=_tomorrow(12), end=_tomorrow(14))
    gone = _request(client, dispatcher, family, start=_tomorrow(8), end=_tomorrow(9))
    client.post(f"/v1/requests/{gone['id']}/cancel", headers=dispatcher, json={})
    # 긴급 home care, booked 3 hours ahead: sooner than anything tomorrow at 09:00
    soon = datetime.now(SEOUL).replace(second=0, microsecond=0) + timedelta(hours=3)
    home = _request(client, dispatcher, family, start=soon, end=soon + timedelta(hours=2),
                    service="home-emergency")

    def ids(query: str, headers: dict[str, str] = dispatcher) -> list[str]:
        resp = client.get(f"/v1/requests{query}", headers=headers)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()]

    assert ids("?open=true") == [late["id"], home["id"], early["id"], noon["id"]]
    assert ids("?open=true&service=hospital") == [late["id"], early["id"], noon["id"]]
    assert ids("?service=home-emergency") == [home["id"]]
    assert ids("?open=false") == [gone["id"]]
    assert ids("?status=escalated") == [late["id"]]
    assert ids("?status=received&service=hospital&open=true") == [early["id"], noon["id"]]
    # without open=true: newest first, closed ones included
    assert ids("") == [home["id"], gone["id"], noon["id"], early["id"], late["id"]]
    assert ids("?service=space-daycare") == []
    # an intake token still sees only its own
    assert ids("?open=true", intake) == []
    _assert_error(client.get("/v1/requests?open=maybe", headers=dispatcher),
                  422, "invalid_input")


# -- fees -------------------------------------------------------------------------------------

def test_fee_in_the_summary(app: FastAPI, client: TestClient,
                           dispatcher: dict[str, str]) -> None:
    family = _family(client, dispatcher)
    created = _request(client, dispatcher, family, start=_tomorrow(10), end=_tomorrow(14))
    expected = {"fee_krw": 4 * 13000, "subsidised": False,
                "breakdown": [{"kind": "day", "minutes": 240, "hourly_krw": 13000,
                               "amount_krw": 52000}],
                "month_usage": {"uses": 0, "minutes": 0}}
    assert created["fee"] == expected
    assert _detail(client, dispatcher, created["id"])["fee"] == expected
    [listed] = client.get("/v1/requests", headers=dispatcher).json()
    assert listed["fee"] == expected

    soon = datetime.now(SEOUL).replace(second=0, microsecond=0) + timedelta(hours=3)
    home = _request(client, dispatcher, family, start=soon, end=soon + timedelta(minutes=150),
                    service="home-emergency")
    fee = home["fee"]
    assert sum(line["minutes"] for line in fee["breakdown"]) == 150
    assert fee["fee_krw"] == sum(line["amount_krw"] for line in fee["breakdown"])
    assert 12790 * 150 // 60 <= fee["fee_krw"] <= 19185 * 150 // 60 + 1


def test_fee_counts_the_childs_earlier_bookings_this_month(sqlite_url: str,
                                                           tmp_path: Path) -> None:
    """A hospital policy with a cap of one subsidised use a month: the second booking of the
    same child that month is charged the rate beyond the cap; cancelled bookings, bookings
    still looking for a carer and a sibling's bookings don't count."""
    folder = tmp_path / "policies"
    folder.mkdir()
    text = HOSPITAL_TOML.read_text(encoding="utf-8")
    assert "\n[fees]\n" in text
    (folder / "hospital.toml").write_text(
        text + "\n[fees.subsidy_cap]\nmax_uses = 1\nbeyond_hourly_krw = 20000\n",
        encoding="utf-8")
    app = _make_app(sqlite_url, folder)
    with TestClient(app) as client:
        dispatcher = _token(app, "dispatcher", DISPATCHER_NAME)
        carer = _carer(client, dispatcher, 1)
        family = _family(client, dispatcher, children=2)
        cancelled = _request(client, dispatcher, family, start=_tomorrow(8), end=_tomorrow(9))
        client.post(f"/v1/requests/{cancelled['id']}/cancel", headers=dispatcher, json={})
        first = _request(client, dispatcher, family, start=_tomorrow(10), end=_tomorrow(12))
        assert first["fee"]["subsidised"] is True  # the cancelled one did not count
        _start_matching(app, first["id"])
        # still matching: not a use yet
        assert _request(client, dispatcher, family, start=_tomorrow(16),
                        end=_tomorrow(18))["fee"]["subsidised"] is True
        resp = client.post(f"/v1/requests/{first['id']}/assign", headers=dispatcher,
                           json={"carer_id": carer["id"]})
        assert resp.status_code == 200, resp.text

        second = _request(client, dispatcher, family, start=_tomorrow(14), end=_tomorrow(16))
        assert second["fee"] == {
            "fee_krw": 40000, "subsidised": False,
            "breakdown": [{"kind": "beyond_cap", "minutes": 120, "hourly_krw": 20000,
                           "amount_krw": 40000}],
            "month_usage": {"uses": 1, "minutes": 120}}
        # the assigned booking itself is still its month's first use
        assert _detail(client, dispatcher, first["id"])["fee"]["fee_krw"] == 26000
        sibling = _request(client, dispatcher, family, child=1, start=_tomorrow(14),
                           end=_tomorrow(16))
        assert sibling["fee"]["subsidised"] is True
        assert sibling["fee"]["month_usage"] == {"uses": 0, "minutes": 0}
