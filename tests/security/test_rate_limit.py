"""Intake rate limits (api/limits.py): per API token on POST /v1/requests and /v1/families,
per sending phone number on inbound SMS that are not a command.

A refused call is a 429 with `Retry-After` (seconds) and `code: rate_limited`, and stores
nothing; a refused SMS is stored all the same (never dropped) but not acted on, and its
sender is answered once per spell. A carer's YES/NO and a parent's 취소 are never refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.limits import TokenBucketLimiter
from dispatch import commands as c
from dispatch import orm
from infra.twilio_stub import sign
from schemas.config import Settings
from tests.security.conftest import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_URL, token

PARENT = "+821077770001"
CARER = "+821066660001"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the bucket ------------------------------------------------------------------------

def test_bucket_allows_a_minutes_worth_at_once_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucketLimiter(60, clock=clock)
    assert [bucket.take("a") for _ in range(60)] == [0.0] * 60
    wait = bucket.take("a")
    assert wait == pytest.approx(1.0)  # 60 a minute: one token back each second
    assert bucket.take("b") == 0.0  # keys are independent
    clock.now += 0.5
    assert bucket.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take("a") == 0.0
    clock.now += 3600  # an hour idle refills to the capacity, not beyond
    assert sum(bucket.take("a") == 0.0 for _ in range(100)) == 60


def test_bucket_below_one_a_minute_still_lets_one_through() -> None:
    clock = FakeClock()
    bucket = TokenBucketLimiter(0.5, clock=clock)  # one every two minutes
    assert bucket.take("a") == 0.0
    assert bucket.take("a") == pytest.approx(120.0)


def test_first_refusal_is_true_once_per_spell() -> None:
    clock = FakeClock()
    bucket = TokenBucketLimiter(1, clock=clock)
    assert bucket.take("p") == 0.0
    assert bucket.take("p") > 0
    assert bucket.first_refusal("p") is True
    assert bucket.take("p") > 0
    assert bucket.first_refusal("p") is False
    clock.now += 60
    assert bucket.take("p") == 0.0  # got through: a new spell may be told again
    assert bucket.take("p") > 0
    assert bucket.first_refusal("p") is True


def test_many_distinct_keys_do_not_grow_memory_without_bound() -> None:
    clock = FakeClock()
    bucket = TokenBucketLimiter(10, clock=clock)
    bucket.MAX_KEYS = 100
    for i in range(1000):
        bucket.take(f"+82100000{i:04d}")
        clock.now += 0.001
    assert len(bucket._buckets) <= 101


def test_nonpositive_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter(0)


# -- the API ---------------------------------------------------------------------------

def _app(url: str, **limits: Any) -> FastAPI:
    twilio: dict[str, Any] = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": ACCOUNT_SID}
    return create_app(Settings(database_url=url, public_url=PUBLIC_URL, **twilio, **limits))


@pytest.fixture
def app(sqlite_url: str) -> FastAPI:
    return _app(sqlite_url, intake_rate_per_min=3, sms_intake_rate_per_min=2)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _count(app: FastAPI, table: Any, *where: Any) -> int:
    with app.state.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table).where(*where)))


def _family(i: int) -> dict[str, Any]:
    return {"guardian": {"name": "박보호", "phone": f"010-5555-{i:04d}"}, "district": "광산구",
            "children": [{"name": "박아이", "birth_date": "2019-05-05"}],
            "consent": {"child_data": True, "health_data": True}}


def _assert_rate_limited(resp: Any) -> int:
    assert resp.status_code == 429, resp.text
    assert resp.json()["code"] == "rate_limited"
    retry_after = resp.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return int(retry_after)


def test_families_per_token_429_with_retry_after_and_nothing_stored(
        app: FastAPI, client: TestClient) -> None:
    web, other = token(app, "intake", "web"), token(app, "intake", "kiosk")
    for i in range(3):
        assert client.post("/v1/families", json=_family(i), headers=web).status_code == 201
    refused = client.post("/v1/families", json=_family(3), headers=web)
    assert _assert_rate_limited(refused) == 20  # 3 a minute: one back every 20 s
    assert _count(app, orm.families) == 3  # the refused family was not stored
    # Another token has its own budget.
    assert client.post("/v1/families", json=_family(4), headers=other).status_code == 201
    # Auth comes first: no token is a 401, not a 429, and costs the real token nothing.
    assert client.post("/v1/families", json=_family(5)).status_code == 401


def test_requests_have_their_own_budget_per_token(app: FastAPI, client: TestClient) -> None:
    intake = token(app, "intake", "web")
    family = client.post("/v1/families", json=_family(0), headers=intake).json()
    def body(day: int) -> dict[str, object]:  # one child, so a day each: no overlap
        return {"service": "hospital", "family_id": family["id"],
                "child_id": family["children"][0]["id"],
                "start": f"2030-01-{day:02d}T10:00:00+09:00",
                "end": f"2030-01-{day:02d}T13:00:00+09:00",
                "location": {"hospital": "전남대병원", "ward": "5층"}}
    answers = [client.post("/v1/requests", json=body(2 + i),
                           headers={**intake, "Idempotency-Key": f"k{i}"}) for i in range(4)]
    assert [a.status_code for a in answers[:3]] == [202, 202, 202], answers[0].text
    _assert_rate_limited(answers[3])
    assert _count(app, orm.requests) == 3
    # A dispatcher's token is a different key.
    assert client.post("/v1/requests", json=body(20), headers=token(app, "dispatcher")
                       ).status_code == 202


def test_default_limit_is_sixty_a_minute(sqlite_url: str) -> None:
    app = _app(sqlite_url)
    assert Settings().intake_rate_per_min == 60
    with TestClient(app, raise_server_exceptions=False) as client:
        auth = token(app, "intake")
        # Invalid bodies count too (a flood is a flood), and each is still a 422 until then.
        codes = [client.post("/v1/families", json={}, headers=auth).status_code
                 for _ in range(61)]
    assert codes[:60] == [422] * 60
    assert codes[60] == 429


# -- inbound SMS -----------------------------------------------------------------------

def _sms(client: TestClient, sender: str, body: str, sid: str) -> Any:
    url = PUBLIC_URL + "/webhooks/twilio/sms"
    params = {"MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": sender,
              "To": "+15005550006", "Body": body, "NumMedia": "0"}
    resp = client.post("/webhooks/twilio/sms", data=params,
                       headers={"X-Twilio-Signature": sign(url, params, AUTH_TOKEN)})
    assert resp.status_code == 200, resp.text
    return resp


def _inbound(app: FastAPI) -> dict[str, tuple[str | None, bool]]:
    """message sid -> (outcome, announced to the worker)."""
    i, o = orm.inbound_sms.c, orm.outbox.c
    with app.state.engine.connect() as conn:
        rows = conn.execute(select(i.id, i.message_sid, i.outcome)).all()
        bodies = [bytes(b) for b in conn.scalars(select(o.body).where(o.type == "sms.received"))]
    return {sid: (outcome, any(row_id.encode() in b for b in bodies))
            for row_id, sid, outcome in rows}


def test_free_text_over_the_limit_is_stored_not_acted_on_and_answered_once(
        app: FastAPI, client: TestClient) -> None:
    replies = [_sms(client, PARENT, f"병원 내일 10-14 ({n})", f"SMfree{n}").text
               for n in range(5)]
    assert all("<Message>" not in r for r in replies[:2])  # within the limit: the worker answers
    assert "너무 많습니다" in replies[2]  # the first refusal is told, once
    assert all("<Message>" not in r for r in replies[3:])
    stored = _inbound(app)
    assert len(stored) == 5  # every message is stored
    assert [stored[f"SMfree{n}"] for n in range(5)] == [
        (None, True), (None, True), ("rate_limited", False), ("rate_limited", False),
        ("rate_limited", False)]
    # A duplicate delivery of a stored SMS is not a second message, and not a second answer.
    assert "<Message>" not in _sms(client, PARENT, "병원 내일 10-14 (2)", "SMfree2").text
    assert len(_inbound(app)) == 5


def test_commands_are_never_limited(app: FastAPI, client: TestClient) -> None:
    """A carer's YES/NO and a parent's 취소 count even from a number that is flooding."""
    for n in range(4):
        _sms(client, CARER, f"blah {n}", f"SMc{n}")
        _sms(client, PARENT, f"blah {n}", f"SMp{n}")
    commands = {"SMyes": (CARER, "YES 4821"), "SMno": (CARER, "아니오 4821"),
                "SMdone": (CARER, "완료 4821"), "SMoff": (CARER, "퇴근"),
                "SMcancel": (PARENT, "취소"), "SMcancel2": (PARENT, "취소 4821"),
                "SMstatus": (PARENT, "상태"), "SMstop": (PARENT, "STOP")}
    for sid, (sender, body) in commands.items():
        assert "<Message>" not in _sms(client, sender, body, sid).text
    stored = _inbound(app)
    for sid in commands:
        assert stored[sid] == (None, True), sid  # announced to the worker, as any command
    assert sum(outcome == "rate_limited" for outcome, _ in stored.values()) == 4


def test_the_limit_is_per_sending_number(app: FastAPI, client: TestClient) -> None:
    for n in range(3):
        _sms(client, PARENT, f"hello {n}", f"SMa{n}")
    assert "<Message>" not in _sms(client, "+821077770002", "hello", "SMb0").text
    stored = _inbound(app)
    assert stored["SMb0"] == (None, True)
    assert stored["SMa2"] == ("rate_limited", False)


def test_a_rate_limited_sms_is_stored_by_the_bus_without_an_announcement(
        sqlite_url: str) -> None:
    app = _app(sqlite_url)
    bus = app.state.bus
    assert bus.handle(c.ReceiveSms(message_sid="SMx", from_phone=PARENT, to_phone="x",
                                   body="spam", rate_limited=True)) is True
    assert _inbound(app) == {"SMx": ("rate_limited", False)}
    assert _count(app, orm.inbound_sms, orm.inbound_sms.c.handled_at.is_not(None)) == 1
