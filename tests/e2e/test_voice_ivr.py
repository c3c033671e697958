"""The phone intake IVR, driven the way Twilio drives it: signed webhook calls, TwiML back.

Each test walks a call step by step with `TestClient` against a fresh SQLite database,
following the `action` URL of every `<Gather>` (or its `<Redirect>`, which is what Twilio
requests after silence). Handlers use the real clock, so times come from the real date.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Table, func, select

from api.voice import Option, spoken_digit
from dispatch import commands as c
from dispatch import orm
from infra.twilio_stub import sign
from schemas.config import Settings

SEOUL = ZoneInfo("Asia/Seoul")
PUBLIC_URL = "http://testserver.example"
VOICE_URL = PUBLIC_URL + "/webhooks/twilio/voice"
AUTH_TOKEN = "test-auth-token-not-a-secret"
ACCOUNT_SID = "ACdolbomtest"
DISPATCHER = "+821055550100"
PARENT = "+821099990000"
CENTRE = "062-714-3635"
HOSPITAL_TOML = Path(__file__).parents[2] / "dispatch" / "policies" / "hospital.toml"


# -- set-up ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes to Settings counts, never the developer's shell."""
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER",
                 "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_API_BASE_URL", "DOLBOM_PUBLIC_URL",
                 "DOLBOM_POLICY_DIR", "DOLBOM_DATABASE_URL", "DOLBOM_DISPATCHER_PHONE"):
        monkeypatch.delenv(name, raising=False)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _tomorrow(hour: int) -> datetime:
    day = datetime.now(SEOUL).date() + timedelta(days=1)
    return datetime.combine(day, time(hour), SEOUL)


@dataclass
class World:
    app: FastAPI
    client: TestClient
    family_id: str = ""
    children: dict[str, str] = field(default_factory=dict)  # name → id


def _make_world(sqlite_url: str, *, dispatcher: str | None = DISPATCHER,
                policy_dir: Path | None = None) -> Iterator[World]:
    from api.app import create_app

    twilio: dict[str, Any] = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": ACCOUNT_SID}
    settings = Settings(database_url=sqlite_url, public_url=PUBLIC_URL,
                        dispatcher_phone=dispatcher, policy_dir=policy_dir, **twilio)
    app = create_app(settings)
    today = datetime.now(SEOUL).date()
    # Registered with the younger child first: the menu must still list the eldest as "1".
    family = app.state.bus.handle(c.RegisterFamily(
        guardian_name="김보호", guardian_phone=PARENT, district="광산구",
        children=[c.ChildDetails(name="김둘째", birth_date=_years_before(today, 3)),
                  c.ChildDetails(name="김첫째", birth_date=_years_before(today, 7))],
        consent_child_data=True, consent_health_data=True))
    with TestClient(app) as client:
        yield World(app, client, family.id, {ch.name: ch.id for ch in family.children})


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    yield from _make_world(sqlite_url)


@pytest.fixture
def no_dispatcher(sqlite_url: str) -> Iterator[World]:
    yield from _make_world(sqlite_url, dispatcher=None)


@pytest.fixture
def closed_in_the_morning(sqlite_url: str, tmp_path: Path) -> Iterator[World]:
    """The hospital policy, but open only 15:00–20:00: tomorrow 10:00 is refused."""
    folder = tmp_path / "policies"
    folder.mkdir()
    text = HOSPITAL_TOML.read_text(encoding="utf-8")
    assert 'daily = ["08:00-20:00"]' in text
    (folder / "hospital.toml").write_text(
        text.replace('daily = ["08:00-20:00"]', 'daily = ["15:00-20:00"]'), encoding="utf-8")
    yield from _make_world(sqlite_url, policy_dir=folder)


def _count(app: FastAPI, table: Table, *where: Any) -> int:
    with app.state.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table).where(*where)))


# -- a call ---------------------------------------------------------------------------------

class Call:
    """One phone call: every webhook carries the same CallSid and From, signed like Twilio."""

    def __init__(self, client: TestClient, phone: str = PARENT,
                 sid: str = "CA0123456789abcdef0123456789abcdef") -> None:
        self.client, self.phone, self.sid = client, phone, sid

    def post(self, url: str, **extra: str) -> ET.Element:
        resp = self.raw(url, **extra)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/xml"), resp.headers
        return ET.fromstring(resp.text)

    def raw(self, url: str, signature: str | None = None, **extra: str) -> Any:
        assert url.startswith(PUBLIC_URL + "/"), url
        params = {"CallSid": self.sid, "AccountSid": ACCOUNT_SID, "From": self.phone,
                  "To": "+15005550006", "CallStatus": "in-progress", "Direction": "inbound",
                  **extra}
        if signature is None:
            signature = sign(url, params, AUTH_TOKEN)
        return self.client.post(url[len(PUBLIC_URL):], data=params,
                                headers={"X-Twilio-Signature": signature})

    def start(self) -> ET.Element:
        return self.post(VOICE_URL)

    def press(self, twiml: ET.Element, digits: str) -> ET.Element:
        return self.post(_gather(twiml).attrib["action"], Digits=digits)

    def say(self, twiml: ET.Element, speech: str) -> ET.Element:
        return self.post(_gather(twiml).attrib["action"], SpeechResult=speech,
                         Confidence="0.9")

    def silence(self, twiml: ET.Element) -> ET.Element:
        redirect = twiml.find("Redirect")
        assert redirect is not None and redirect.text, ET.tostring(twiml, "unicode")
        # Twilio follows the <Redirect> after a Gather that heard nothing.
        assert redirect.text == _gather(twiml).attrib["action"]
        return self.post(redirect.text)


def _gather(twiml: ET.Element) -> ET.Element:
    gather = twiml.find("Gather")
    assert gather is not None, ET.tostring(twiml, "unicode")
    assert gather.attrib["input"] == "dtmf speech"
    assert gather.attrib["language"] == "ko-KR"
    assert gather.attrib["numDigits"] == "1"
    assert gather.attrib["method"] == "POST"
    assert int(gather.attrib["timeout"]) > 0
    return gather


def _state(twiml: ET.Element) -> dict[str, str]:
    """The query string of the Gather's action: the state of the step it asks."""
    action = urlsplit(_gather(twiml).attrib["action"])
    assert f"{action.scheme}://{action.netloc}" == PUBLIC_URL
    assert action.path == "/webhooks/twilio/voice/step"
    return {k: v[0] for k, v in parse_qs(action.query).items()}


def _spoken(twiml: ET.Element) -> str:
    says = twiml.iter("Say")
    texts = []
    for say in says:
        assert say.attrib["language"] == "ko-KR"
        texts.append(say.text or "")
    return " ".join(texts)


def _assert_dial(twiml: ET.Element, number: str = DISPATCHER) -> None:
    dial = twiml.find("Dial")
    assert dial is not None, ET.tostring(twiml, "unicode")
    assert (dial.text or "").strip() == number
    assert twiml.find("Gather") is None
    assert "상담원" in _spoken(twiml)


def _walk_to_confirm(call: Call, child_digit: str = "2", time_digit: str = "2") -> ET.Element:
    menu = call.start()
    menu = call.press(menu, "1")
    menu = call.press(menu, child_digit)
    return call.press(menu, time_digit)


def _requests(app: FastAPI) -> list[dict[str, Any]]:
    with app.state.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(orm.requests)).mappings()]


# -- the happy path ----------------------------------------------------------------------

def test_known_caller_books_hospital_care_by_keypad(world: World) -> None:
    call = Call(world.client)

    menu = call.start()
    assert _state(menu) == {"step": "service", "try": "1"}
    assert "입원아동돌봄은 1번" in _spoken(menu)
    assert "0번" in _spoken(menu)

    menu = call.press(menu, "1")
    assert _state(menu) == {"step": "child", "service": "hospital", "try": "1"}
    # Oldest first, whatever the order of registration.
    assert "김첫째는 1번" in _spoken(menu) and "김둘째는 2번" in _spoken(menu)

    menu = call.press(menu, "2")
    state = _state(menu)
    assert state["step"] == "time" and state["child"] == world.children["김둘째"]
    assert state["t2"] == _tomorrow(10).strftime("%Y%m%d%H%M")
    assert "내일" in _spoken(menu) and "4시간" in _spoken(menu)

    menu = call.press(menu, "2")
    assert _state(menu) == {"step": "confirm", "service": "hospital",
                            "child": world.children["김둘째"],
                            "at": _tomorrow(10).strftime("%Y%m%d%H%M"), "try": "1"}
    assert "김둘째" in _spoken(menu) and "14시까지" in _spoken(menu)
    assert _requests(world.app) == []  # nothing is stored before the parent confirms

    done = call.press(menu, "1")
    assert done.find("Gather") is None and done.find("Hangup") is not None
    rows = _requests(world.app)
    assert len(rows) == 1
    row = rows[0]
    assert row["channel"] == "voice" and row["status"] == "received"
    assert row["service"] == "hospital" and row["family_id"] == world.family_id
    assert row["child_id"] == world.children["김둘째"]
    assert row["idempotency_key"] == "voice:" + call.sid
    assert row["start"] == _tomorrow(10) and row["end"] == _tomorrow(14)
    assert row["location"]["hospital"] == "전화 접수"
    assert row["location"]["ward"] == "확인 필요"
    assert row["location"]["district"] == "광산구"

    spoken = _spoken(done)
    assert " ".join(row["code"]) in spoken  # the job code, digit by digit
    assert "문자" in spoken and "병동" in spoken
    # The parent's SMS confirmation is queued through the outbox.
    assert _count(world.app, orm.outbox, orm.outbox.c.type == "sms.requested",
                  orm.outbox.c.key == PARENT) == 1
    with world.app.state.engine.connect() as conn:
        note = conn.execute(select(orm.notifications)).mappings().one()
    assert note["recipient"] == PARENT and note["kind"] == "request_received"
    assert note["params"]["code"] == row["code"]


def test_replayed_confirmation_makes_no_second_request(world: World) -> None:
    call = Call(world.client)
    confirm = _walk_to_confirm(call)
    first = call.press(confirm, "1")
    again = call.press(confirm, "1")  # Twilio retrying the same callback
    code = _requests(world.app)[0]["code"]
    assert " ".join(code) in _spoken(first) and " ".join(code) in _spoken(again)
    assert len(_requests(world.app)) == 1
    assert _count(world.app, orm.outbox, orm.outbox.c.type == "request.received") == 1
    assert _count(world.app, orm.outbox, orm.outbox.c.type == "sms.requested") == 1
    # A different call is a different request.
    other = Call(world.client, sid="CAfedcba9876543210fedcba9876543210")
    other.press(_walk_to_confirm(other, child_digit="1"), "1")
    assert len(_requests(world.app)) == 2


def test_today_from_now_is_rounded_up_to_the_quarter_hour(world: World) -> None:
    call = Call(world.client)
    before = datetime.now(SEOUL)
    menu = call.press(call.press(call.start(), "1"), "1")
    t1 = datetime.strptime(_state(menu)["t1"], "%Y%m%d%H%M").replace(tzinfo=SEOUL)
    assert t1.minute % 15 == 0
    assert before - timedelta(minutes=1) < t1 <= before + timedelta(minutes=15)
    confirm = call.press(menu, "1")
    assert _state(confirm)["at"] == _state(menu)["t1"]


@pytest.mark.parametrize("time_digit", ["1", "2"])
def test_home_care_offers_only_times_within_its_lead_time(world: World, time_digit: str) -> None:
    """아이돌봄 긴급 is booked 2 to 4 hours ahead: both times the menu offers are, and the one
    picked is stored, not refused and put through to the dispatcher."""
    call = Call(world.client)
    before = datetime.now(SEOUL)
    menu = call.press(call.press(call.start(), "3"), "1")
    state = _state(menu)
    assert state["service"] == "home-emergency" and "미리" in _spoken(menu)
    t1, t2 = (datetime.strptime(state[k], "%Y%m%d%H%M").replace(tzinfo=SEOUL)
              for k in ("t1", "t2"))
    assert t1.minute % 15 == 0 and t2.minute % 15 == 0
    assert before + timedelta(minutes=119) < t1 <= before + timedelta(minutes=135)
    assert t1 < t2 <= before + timedelta(minutes=241)
    done = call.press(call.press(menu, time_digit), "1")
    assert done.find("Dial") is None, _spoken(done)
    (row,) = _requests(world.app)
    assert row["service"] == "home-emergency" and row["status"] == "received"
    assert row["start"] == (t1 if time_digit == "1" else t2)


def test_cancel_at_confirmation_stores_nothing(world: World) -> None:
    call = Call(world.client)
    done = call.press(_walk_to_confirm(call), "2")
    assert "취소" in _spoken(done) and done.find("Hangup") is not None
    assert _requests(world.app) == []


def test_booking_by_speech(world: World) -> None:
    call = Call(world.client)
    menu = call.say(call.start(), "병원이요")
    assert _state(menu)["step"] == "child"
    menu = call.say(menu, "첫째요")
    assert _state(menu)["child"] == world.children["김첫째"]
    # "내일" contains "일" (one): it must still mean tomorrow, option 2.
    menu = call.say(menu, "내일이요")
    assert _state(menu)["at"] == _tomorrow(10).strftime("%Y%m%d%H%M")
    done = call.say(menu, "네 맞아요")
    assert done.find("Hangup") is not None
    assert [r["child_id"] for r in _requests(world.app)] == [world.children["김첫째"]]


@pytest.mark.parametrize(("speech", "digit"), [
    ("1", "1"), ("일번", "1"), ("하나", "1"), ("첫번째요", "1"), ("이번이요", "2"), ("둘", "2"),
    ("3번", "3"), ("병원", "7"), ("상담원 연결해 주세요", "0"), ("내일", "2"), ("글쎄요", None),
])
def test_spoken_answers_read_as_keys(speech: str, digit: str | None) -> None:
    options = (Option("7", "hospital", "입원아동돌봄", ("병원",)),
               Option("2", "tomorrow", "내일", ("내일",)))
    assert spoken_digit(speech, options) == digit


# -- to the dispatcher -------------------------------------------------------------------

def test_unknown_caller_is_put_through_to_the_dispatcher(world: World) -> None:
    twiml = Call(world.client, phone="+821033334444").start()
    _assert_dial(twiml)
    assert _requests(world.app) == []


def test_withheld_number_is_put_through_to_the_dispatcher(world: World) -> None:
    _assert_dial(Call(world.client, phone="anonymous").start())


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_zero_at_any_step_dials_the_dispatcher(world: World, depth: int) -> None:
    call = Call(world.client)
    menu = call.start()
    for digit in ["1", "2", "2"][:depth]:
        menu = call.press(menu, digit)
    assert _state(menu)["step"] == ["service", "child", "time", "confirm"][depth]
    _assert_dial(call.press(menu, "0"))
    assert _requests(world.app) == []


def test_silence_repeats_the_step_once_then_dials(world: World) -> None:
    call = Call(world.client)
    menu = call.press(call.start(), "1")
    again = call.silence(menu)
    assert _state(again) == {**_state(menu), "try": "2"}
    assert "입력이 없었습니다" in _spoken(again)
    assert "김첫째는 1번" in _spoken(again)
    _assert_dial(call.silence(again))


def test_silence_once_then_an_answer_carries_on(world: World) -> None:
    call = Call(world.client)
    again = call.silence(call.start())
    assert _state(again) == {"step": "service", "try": "2"}
    assert _state(call.press(again, "1"))["step"] == "child"


def test_invalid_key_twice_dials(world: World) -> None:
    call = Call(world.client)
    menu = call.start()
    again = call.press(menu, "9")
    assert _state(again) == {"step": "service", "try": "2"}
    assert "잘못" in _spoken(again)
    _assert_dial(call.press(again, "#"))
    assert _requests(world.app) == []


def test_without_a_dispatcher_the_centre_number_is_given(no_dispatcher: World) -> None:
    for twiml in (Call(no_dispatcher.client, phone="+821033334444").start(),
                  Call(no_dispatcher.client).press(Call(no_dispatcher.client).start(), "0")):
        assert twiml.find("Dial") is None
        assert CENTRE in _spoken(twiml)
        assert twiml.find("Hangup") is not None


def test_unanswered_dispatcher_gives_the_centre_number(world: World) -> None:
    call = Call(world.client)
    dial = call.press(call.start(), "0").find("Dial")
    assert dial is not None
    action = dial.attrib["action"]
    missed = call.post(action, DialCallStatus="no-answer")
    assert CENTRE in _spoken(missed) and missed.find("Hangup") is not None
    talked = call.post(action, DialCallStatus="completed")
    assert _spoken(talked) == "" and talked.find("Hangup") is not None


def test_policy_refusal_is_explained_then_dialled(closed_in_the_morning: World) -> None:
    call = Call(closed_in_the_morning.client)
    refused = call.press(_walk_to_confirm(call, time_digit="2"), "1")
    spoken = _spoken(refused)
    assert "운영 시간" in spoken and "15시부터 20시까지" in spoken
    _assert_dial(refused)
    assert _requests(closed_in_the_morning.app) == []
    assert _count(closed_in_the_morning.app, orm.outbox) == 0


# -- signatures ------------------------------------------------------------------------------

def test_bad_or_missing_signature_is_403(world: World) -> None:
    call = Call(world.client)
    step = VOICE_URL + "/step?step=child&service=hospital&try=1"
    assert call.raw(VOICE_URL, signature="").status_code == 403
    forged = sign(VOICE_URL, {"CallSid": call.sid}, "not-the-auth-token")
    assert call.raw(VOICE_URL, signature=forged).status_code == 403
    # The query is signed too: a signature over another step's URL doesn't cover this one.
    params = {"CallSid": call.sid, "AccountSid": ACCOUNT_SID, "From": call.phone,
              "To": "+15005550006", "CallStatus": "in-progress", "Direction": "inbound",
              "Digits": "1"}
    other = sign(VOICE_URL + "/step?step=service&try=1", params, AUTH_TOKEN)
    assert call.raw(step, signature=other, Digits="1").status_code == 403
    # The socket's URL instead of DOLBOM_PUBLIC_URL.
    local = sign("http://testserver" + step[len(PUBLIC_URL):], params, AUTH_TOKEN)
    assert call.raw(step, signature=local, Digits="1").status_code == 403
    # The same call, signed properly, is answered.
    assert call.raw(step, Digits="1").status_code == 200
