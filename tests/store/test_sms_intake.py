"""A registered parent asks for care by SMS in two messages, on SQLite and PostgreSQL.

`병원 내일 10-14` → the confirmation question → `네` → the request, exactly as the API would
store it (channel "sms"), once however often anything is replayed. Plus the dispatcher's list
of inbound SMS that belong to no request (`GET /v1/sms/unmatched`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from dispatch import commands as c
from dispatch import orm
from dispatch.bootstrap import bootstrap
from dispatch.db import make_engine
from dispatch.domain.policy import load_policies
from dispatch.messagebus import MessageBus
from notifiers import grammar, intake_grammar, templates
from schemas.config import Settings
from tests.helpers import NOW, Clock, RecordingSms, add_carers, add_family, make_bus

SEOUL = ZoneInfo("Asia/Seoul")
PARENT = "+821099990000"  # add_family's guardian
TOMORROW_10 = datetime(2026, 11, 27, 10, 0, tzinfo=SEOUL)


# -- helpers --------------------------------------------------------------------------------

def _sms(bus: MessageBus, url: str, phone: str, body: str, sid: str) -> str:
    bus.handle(c.ReceiveSms(message_sid=sid, from_phone=phone, to_phone="+15005550006",
                            body=body))
    return str(bus.handle(c.HandleInboundSms(inbound_id=_inbound_id(url, sid),
                                             event_id="evt-" + sid)))


def _inbound_id(url: str, sid: str) -> str:
    with make_engine(url).connect() as conn:
        return str(conn.scalar(select(orm.inbound_sms.c.id).where(
            orm.inbound_sms.c.message_sid == sid)))


def _rows(url: str, table: Any, *where: Any) -> list[Any]:
    with make_engine(url).connect() as conn:
        return list(conn.execute(select(table).where(*where)).mappings())


def _count(url: str, table: Any, *where: Any) -> int:
    with make_engine(url).connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _replies(url: str, kind: str, phone: str = PARENT) -> list[Any]:
    n = orm.notifications.c
    return _rows(url, orm.notifications, n.kind == kind, n.recipient == phone)


def _text(note: Any) -> str:
    """The SMS as it will go out."""
    return templates.render(note["kind"], note["params"], note["lang"])


def _family_with_two_children(bus: MessageBus) -> Any:
    return bus.handle(c.RegisterFamily(
        guardian_name="박보호", guardian_phone=PARENT, district="광산구",
        children=[c.ChildDetails(name="박작은", birth_date=date(2022, 6, 1)),
                  c.ChildDetails(name="박큰애", birth_date=date(2018, 4, 2))],
        consent_child_data=True, consent_health_data=True))


# -- the two-message path ---------------------------------------------------------------------

def test_two_messages_book_one_request_through_the_api_path(db_url: str) -> None:
    bus = make_bus(db_url)
    family = add_family(bus)

    assert _sms(bus, db_url, PARENT, "병원 내일 10-14", "SMask") == "intake_confirm"
    assert _count(db_url, orm.requests) == 0  # nothing is booked before the parent's 네
    [draft] = _rows(db_url, orm.sms_drafts)
    assert draft["status"] == "pending" and draft["child_id"] == family.children[0].id
    assert draft["start"] == TOMORROW_10 and draft["end"] == TOMORROW_10 + timedelta(hours=4)
    assert draft["expires_at"] == NOW + timedelta(minutes=15)
    [question] = _replies(db_url, "intake_confirm")
    text = _text(question)
    assert "박아이" in text and "입원아동돌봄" in text and "11/27 10:00~14:00" in text
    assert "네" in text and "아니오" in text

    assert _sms(bus, db_url, PARENT, "네", "SMyes") == "submitted"
    [request] = _rows(db_url, orm.requests)
    assert request["channel"] == "sms" and request["status"] == "received"
    assert request["idempotency_key"] == "sms-draft:" + draft["id"]
    assert request["family_id"] == family.id and request["child_id"] == family.children[0].id
    assert request["start"] == TOMORROW_10 and request["end"] == TOMORROW_10 + timedelta(hours=4)
    assert request["location"]["district"] == "광산구"
    assert request["location"]["hospital"] and request["location"]["ward"]
    [received] = _replies(db_url, "request_received")
    assert received["request_id"] == request["id"]
    assert request["code"] in _text(received)
    assert _count(db_url, orm.outbox, orm.outbox.c.type == "request.received") == 1
    [draft] = _rows(db_url, orm.sms_drafts)
    assert draft["status"] == "confirmed" and draft["request_id"] == request["id"]
    # Both texts of the conversation now belong to the request.
    assert {r["request_id"] for r in _rows(db_url, orm.inbound_sms)} == {request["id"]}
    timeline = _rows(db_url, orm.timeline, orm.timeline.c.request_id == request["id"])
    assert [(e["type"], e["detail"]) for e in timeline] == [("received", {"channel": "sms"})]


def test_replays_never_make_a_second_request(db_url: str) -> None:
    bus = make_bus(db_url)
    add_family(bus)
    _sms(bus, db_url, PARENT, "병원 내일 10-14", "SMask")
    assert _sms(bus, db_url, PARENT, "네", "SMyes") == "submitted"

    # The same inbound SMS delivered again, by Kafka or by Twilio: absorbed.
    yes = _inbound_id(db_url, "SMyes")
    assert bus.handle(c.HandleInboundSms(inbound_id=yes, event_id="evt-SMyes")) == "duplicate"
    assert bus.handle(c.HandleInboundSms(inbound_id=yes, event_id="evt-other")) == "duplicate"
    assert bus.handle(c.ReceiveSms(message_sid="SMyes", from_phone=PARENT, to_phone="x",
                                   body="네")) is False
    # A second 네 from the parent: told where the request stands, nothing new.
    assert _sms(bus, db_url, PARENT, "네", "SMyes2") == "no_draft"
    assert len(_replies(db_url, "status")) == 1
    assert _count(db_url, orm.requests) == 1
    assert len(_replies(db_url, "request_received")) == 1

    # Even a draft found pending again (say its status write were lost) submits under its
    # idempotency key, which finds the first request.
    with make_engine(db_url).begin() as conn:
        conn.execute(update(orm.sms_drafts).values(status="pending"))
    assert _sms(bus, db_url, PARENT, "네", "SMyes3") == "already_submitted"
    assert _count(db_url, orm.requests) == 1
    assert _count(db_url, orm.outbox, orm.outbox.c.type == "request.received") == 1


def test_no_drops_the_draft(db_url: str) -> None:
    bus = make_bus(db_url)
    add_family(bus)
    _sms(bus, db_url, PARENT, "병원 내일 10-14", "SMask")
    assert _sms(bus, db_url, PARENT, "아니오", "SMno") == "intake_cancelled"
    assert [d["status"] for d in _rows(db_url, orm.sms_drafts)] == ["cancelled"]
    assert len(_replies(db_url, "intake_cancelled")) == 1
    assert _sms(bus, db_url, PARENT, "네", "SMlate-yes") == "no_draft"
    assert _count(db_url, orm.requests) == 0


@pytest.mark.parametrize(("minutes", "outcome"), [(14, "submitted"), (15, "draft_expired"),
                                                  (60, "draft_expired")])
def test_a_draft_waits_fifteen_minutes(db_url: str, minutes: int, outcome: str) -> None:
    clock = Clock()
    bus = make_bus(db_url, clock=clock)
    add_family(bus)
    _sms(bus, db_url, PARENT, "병원 내일 10-14", "SMask")
    clock.advance(minutes=minutes)
    assert _sms(bus, db_url, PARENT, "네", "SMyes") == outcome
    if outcome == "submitted":
        assert _count(db_url, orm.requests) == 1
        return
    assert _count(db_url, orm.requests) == 0
    assert [d["status"] for d in _rows(db_url, orm.sms_drafts)] == ["expired"]
    [expired] = _replies(db_url, "intake_expired")
    assert "다시 보내" in _text(expired)
    # Sending it again works.
    assert _sms(bus, db_url, PARENT, "병원 내일 10-14", "SMask2") == "intake_confirm"
    assert _sms(bus, db_url, PARENT, "네", "SMyes2") == "submitted"
    assert _count(db_url, orm.requests) == 1


def test_a_new_ask_replaces_the_pending_one(db_url: str) -> None:
    bus = make_bus(db_url)
    add_family(bus)
    _sms(bus, db_url, PARENT, "병원 내일 10-14", "SMask1")
    _sms(bus, db_url, PARENT, "병원 내일 12-16", "SMask2")
    assert _sms(bus, db_url, PARENT, "네", "SMyes") == "submitted"
    [request] = _rows(db_url, orm.requests)
    assert request["start"] == TOMORROW_10 + timedelta(hours=2)
    assert sorted(d["status"] for d in _rows(db_url, orm.sms_drafts)) == ["cancelled",
                                                                          "confirmed"]


# -- refusals ---------------------------------------------------------------------------------

def test_outside_service_hours_is_explained_and_leaves_no_draft(db_url: str) -> None:
    bus = make_bus(db_url)
    add_family(bus)
    assert _sms(bus, db_url, PARENT, "병원 내일 21-23", "SMnight") == "ineligible"
    assert _count(db_url, orm.sms_drafts) == 0
    [refusal] = _replies(db_url, "intake_outside_hours")
    assert "08:00-20:00" in _text(refusal) and "입원아동돌봄" in _text(refusal)
    assert _sms(bus, db_url, PARENT, "네", "SMyes") == "no_draft"
    assert _count(db_url, orm.requests) == 0


def test_an_ineligible_child_is_explained_and_leaves_no_draft(db_url: str) -> None:
    bus = make_bus(db_url)
    add_family(bus, birth_date=date(2011, 1, 1))  # 15: too old for hospital care
    assert _sms(bus, db_url, PARENT, "병원 내일 10-14", "SMold") == "ineligible"
    assert _count(db_url, orm.sms_drafts) == 0
    [refusal] = _replies(db_url, "intake_refused")
    assert refusal["params"] == {"reason": "age_out_of_range"}
    assert "나이" in _text(refusal)


def test_a_service_without_a_policy_is_refused(db_url: str) -> None:
    policies = {"hospital": load_policies()["hospital"]}
    bus = bootstrap(make_engine(db_url), policies, sms=RecordingSms(),
                    templates=templates.render, grammar=grammar.parse,
                    intake=intake_grammar.parse_request, clock=Clock())
    add_family(bus)
    assert _sms(bus, db_url, PARENT, "센터 내일 10-14", "SMcenter") == "ineligible"
    [refusal] = _replies(db_url, "intake_refused")
    assert refusal["params"] == {"reason": "unknown_service"}
    assert _count(db_url, orm.sms_drafts) == 0


# -- several children -------------------------------------------------------------------------

def test_two_children_are_asked_which_and_the_number_answers(db_url: str) -> None:
    bus = make_bus(db_url)
    family = _family_with_two_children(bus)
    younger = next(ch for ch in family.children if ch.name == "박작은")

    assert _sms(bus, db_url, PARENT, "병원 내일 10-14", "SMask") == "intake_which_child"
    [question] = _replies(db_url, "intake_which_child")
    assert question["params"] == {"children": "1 박큰애, 2 박작은"}  # the eldest first
    assert _sms(bus, db_url, PARENT, "네", "SMtoo-early") == "intake_which_child"
    assert _sms(bus, db_url, PARENT, "3", "SMthree") == "intake_which_child"
    assert _count(db_url, orm.requests) == 0

    assert _sms(bus, db_url, PARENT, "２", "SMtwo") == "intake_confirm"  # full-width digit
    [confirm] = _replies(db_url, "intake_confirm")
    assert confirm["params"]["child_name"] == "박작은"
    assert _sms(bus, db_url, PARENT, "네", "SMyes") == "submitted"
    [request] = _rows(db_url, orm.requests)
    assert request["child_id"] == younger.id and request["channel"] == "sms"


def test_a_number_without_a_question_gets_the_help_reply(db_url: str) -> None:
    bus = make_bus(db_url)
    add_family(bus)
    assert _sms(bus, db_url, PARENT, "1", "SMone") == "help"
    assert _count(db_url, orm.sms_drafts) == 0


# -- what is not an ask -----------------------------------------------------------------------

def test_a_text_that_is_not_an_ask_gets_the_help_reply(db_url: str) -> None:
    bus = make_bus(db_url)
    add_family(bus)
    assert _sms(bus, db_url, PARENT, "아이가 열이 나요 도와주세요", "SMchat") == "help"
    assert len(_replies(db_url, "help")) == 1
    assert _count(db_url, orm.sms_drafts) == 0 and _count(db_url, orm.requests) == 0
    [stored] = _rows(db_url, orm.inbound_sms)
    assert stored["body"] == "아이가 열이 나요 도와주세요" and stored["outcome"] == "help"


def test_an_unknown_number_gets_the_registration_reply(db_url: str) -> None:
    bus = make_bus(db_url)
    stranger = "+821055554444"
    assert _sms(bus, db_url, stranger, "병원 내일 10-14", "SMstranger") == "unknown_number"
    assert len(_replies(db_url, "unknown_number", stranger)) == 1
    assert _count(db_url, orm.sms_drafts) == 0


def test_a_carers_text_is_never_an_ask(db_url: str) -> None:
    bus = make_bus(db_url)
    carer = add_carers(bus, 1)[0]
    assert _sms(bus, db_url, carer.phone, "병원 내일 10-14", "SMcarer") == "help"
    assert _count(db_url, orm.sms_drafts) == 0


# -- GET /v1/sms/unmatched --------------------------------------------------------------------

@pytest.fixture
def api(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from api.app import create_app

    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER",
                 "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_API_BASE_URL", "DOLBOM_PUBLIC_URL",
                 "DOLBOM_POLICY_DIR", "DOLBOM_DATABASE_URL", "DOLBOM_DISPATCHER_PHONE"):
        monkeypatch.delenv(name, raising=False)
    with TestClient(create_app(Settings(database_url=sqlite_url))) as client:
        yield client


def test_unmatched_sms_lists_what_belongs_to_no_request(sqlite_url: str,
                                                        api: TestClient) -> None:
    clock = Clock()
    worker = make_bus(sqlite_url, clock=clock)  # the worker's side: it reads the SMS
    add_family(worker)
    for phone, body, sid in [(PARENT, "병원 내일 10-14", "SM1"), (PARENT, "네", "SM2"),
                             ("+821055554444", "안녕하세요", "SM3"), (PARENT, "뭐라고요?", "SM4")]:
        clock.advance(minutes=1)
        _sms(worker, sqlite_url, phone, body, sid)
    clock.advance(minutes=1)
    worker.handle(c.ReceiveSms(message_sid="SM5", from_phone="+821011112222", to_phone="x",
                               body="not read yet"))

    dispatcher = api.app.state.bus.handle(c.CreateToken(name="d", role="dispatcher"))  # type: ignore[attr-defined]
    intake = api.app.state.bus.handle(c.CreateToken(name="i", role="intake"))  # type: ignore[attr-defined]
    resp = api.get("/v1/sms/unmatched", headers={"Authorization": f"Bearer {dispatcher}"})
    assert resp.status_code == 200, resp.text
    listed = resp.json()
    # The ask and the 네 became a request; the rest is newest first.
    assert [m["body"] for m in listed] == ["not read yet", "뭐라고요?", "안녕하세요"]
    assert listed[0] == {"id": _inbound_id(sqlite_url, "SM5"), "from": "********2222",
                         "body": "not read yet", "received_at": listed[0]["received_at"],
                         "sender_kind": None, "verb": None, "outcome": None}
    assert datetime.fromisoformat(listed[0]["received_at"]) == NOW + timedelta(minutes=5)
    assert listed[1]["from"] == "********0000" and listed[1]["sender_kind"] == "parent"
    assert listed[1]["verb"] == "unknown" and listed[1]["outcome"] == "help"
    assert listed[2]["sender_kind"] == "unknown" and listed[2]["outcome"] == "unknown_number"
    assert all("+82" not in m["from"] for m in listed)

    limited = api.get("/v1/sms/unmatched?limit=1",
                      headers={"Authorization": f"Bearer {dispatcher}"})
    assert [m["body"] for m in limited.json()] == ["not read yet"]
    assert api.get("/v1/sms/unmatched").status_code == 401
    assert api.get("/v1/sms/unmatched",
                   headers={"Authorization": f"Bearer {intake}"}).status_code == 403
