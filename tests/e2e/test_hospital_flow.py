"""A hospital-care request end to end, through the real broker, worker, relay and API,
with SMS going out through the real twilio client to a local Twilio-compatible stub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.harness import Running, running_system, wait_for
from schemas.phone import mask

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_system(tmp_path_factory.mktemp("e2e")) as running:
        yield running


@pytest.fixture(autouse=True)
def nobody_on_duty(system: Running) -> None:
    """Each test starts with every earlier test's carers off duty: offers go out in waves
    (hospital.toml), so a test's own carer must not compete with the module's others."""
    for carer in system.http.get("/v1/carers").json():
        if carer["on_duty"]:
            assert system.http.put(f"/v1/carers/{carer['id']}/duty",
                                   json={"on_duty": False}).status_code == 200


def test_request_is_offered_accepted_and_the_parent_told(system: Running) -> None:
    carers = [system.carer(f"김민지{i}", f"010-5555-000{i}") for i in range(3)]
    system.carer("다른구", "010-5555-0009", districts=["동구"])
    system.carer("자격없음", "010-5555-0008", skills=[])
    family = system.family("010-7777-0001")

    created = system.request(family)
    assert created["status"] == "received" and len(created["code"]) == 4
    code = created["code"]

    # The parent hears at once that the request was received, with the job code.
    system.sms_to("+821077770001", code)
    # Every qualified carer in the district gets an offer naming the code, nobody else does.
    for carer in carers:
        offer = system.sms_to(carer["phone"], f"네 {code}")
        assert offer["status_callback"].endswith("/webhooks/twilio/status")
        # What is left of the offer's 600 s validity when it is handed over.
        assert 580 <= int(offer["validity_period"]) <= 600
    assert system.sms_count("+821055550009") == 0
    assert system.sms_count("+821055550008") == 0
    matching = system.wait_status(created["id"], "matching")
    assert {o["carer_id"] for o in matching["offers"]} == {c["id"] for c in carers}

    # The first YES wins.
    assert system.reply(carers[1]["phone"], f"YES {code}").status_code == 200
    assigned = system.wait_status(created["id"], "assigned")
    assert assigned["carer"]["id"] == carers[1]["id"]
    parent_sms = system.sms_to("+821077770001", carers[1]["name"])
    assert code in parent_sms["body"]
    system.sms_to(carers[1]["phone"], "확정")

    # A late YES from another carer is thanked and changes nothing.
    assert system.reply(carers[2]["phone"], f"네 {code}").status_code == 200
    system.sms_to(carers[2]["phone"], "다른 선생님이 먼저")
    after = system.get_request(created["id"])
    assert after["status"] == "assigned" and after["carer"]["id"] == carers[1]["id"]

    types = [e["type"] for e in after["timeline"]]
    for expected in ("received", "matching", "assigned", "late_accept", "sms_in", "sms_out"):
        assert expected in types, types
    assert types.index("received") < types.index("matching") < types.index("assigned")
    assert system.sms_count("+821077770001", carers[1]["name"]) == 1


def test_duplicate_webhook_delivery_has_no_second_effect(system: Running) -> None:
    carer = system.carer("이중복", "010-5555-0101", districts=["광산구"])
    family = system.family("010-7777-0101", birth_date="2016-02-29")
    created = system.request(family, day_offset=2)
    system.sms_to(carer["phone"], created["code"])

    sid = "SMduplicate0000000000000000000001"
    for _ in range(3):
        assert system.reply(carer["phone"], f"Y {created['code']}", sid=sid).status_code == 200
    system.wait_status(created["id"], "assigned")
    system.sms_to("+821077770101", carer["name"])
    detail = system.get_request(created["id"])
    assert sum(1 for e in detail["timeline"] if e["type"] == "sms_in") == 1
    # Let the worker drain, then check: one confirmation, one parent SMS.
    wait_for(lambda: system.sms_count(carer["phone"], "확정") >= 1, 10, "carer confirmation")
    assert system.sms_count(carer["phone"], "확정") == 1
    assert system.sms_count("+821077770101", carer["name"]) == 1


def test_unknown_text_gets_help_and_is_kept(system: Running) -> None:
    assert system.reply("010-4444-1234", "안녕하세요 아이 맡길 수 있나요?").status_code == 200
    reply = system.sms_to("+821044441234", "등록")
    assert "062-714-3635" in reply["body"]


def test_forged_signature_is_refused(system: Running, tmp_path: Path) -> None:
    import httpx

    url = system.system.api_url + "/webhooks/twilio/sms"
    r = httpx.post(url, data={"MessageSid": "SMforged", "From": "+821055550000",
                              "Body": "YES 1234"}, headers={"X-Twilio-Signature": "bm9wZQ=="})
    assert r.status_code == 403


def test_status_callbacks_from_twilio_reach_the_timeline(system: Running) -> None:
    carer = system.carer("상태콜", "010-5555-0201")
    family = system.family("010-7777-0201")
    created = system.request(family, day_offset=3)
    offer = system.sms_to(carer["phone"], created["code"])
    # Twilio calls back out of order and twice; the state only moves forward.
    for status in ("delivered", "sent", "delivered"):
        assert system.stub.send_status_callback(offer["sid"], status).status_code == 204

    def offer_status() -> str | None:
        timeline = system.get_request(created["id"])["timeline"]
        return next((e["detail"]["status"] for e in timeline if e["type"] == "sms_out"
                     and e["detail"]["kind"] == "offer"
                     and e["detail"]["to"] == mask(carer["phone"])), None)

    wait_for(lambda: offer_status() == "delivered", 10, "the offer to show as delivered")


def test_a_parent_asks_for_care_by_sms_in_two_messages(system: Running) -> None:
    carer = system.carer("문자접수", "010-5555-0301")
    system.family("010-7777-0301")
    assert system.reply("010-7777-0301", "병원 내일 10-14").status_code == 200
    question = system.sms_to("+821077770301", "네")
    assert "10:00" in question["body"]
    assert system.reply("010-7777-0301", "네").status_code == 200
    received = system.sms_to("+821077770301", "접수")
    code = next(word for word in received["body"].replace("번", " ").split()
                if word.isdigit() and len(word) == 4)
    system.sms_to(carer["phone"], f"네 {code}")
    requests = system.http.get("/v1/requests").json()
    asked = [r for r in requests if r["code"] == code]
    assert len(asked) == 1 and asked[0]["channel"] == "sms"


def test_an_english_speaking_carer_gets_english_offers(system: Running) -> None:
    r = system.post("/v1/carers", {"name": "Jane Park", "phone": "010-5555-0401",
                                   "districts": ["광산구"], "skills": ["hospital"], "lang": "en"})
    assert r.status_code == 201
    assert system.http.put(f"/v1/carers/{r.json()['id']}/duty", json={"on_duty": True}
                           ).status_code == 200
    created = system.request(system.family("010-7777-0401"), day_offset=4)
    offer = system.sms_to("+821055550401", created["code"])
    assert f"YES {created['code']}" in offer["body"] and "네" not in offer["body"]


def test_escalation_and_a_dispatcher_override(system: Running) -> None:
    r = system.post("/v1/families", {
        "guardian": {"name": "최보호", "phone": "010-7777-0501"}, "district": "북구",
        "children": [{"name": "최아이", "birth_date": "2018-08-08"}],
        "consent": {"child_data": True, "health_data": True}})
    assert r.status_code == 201
    created = system.request(r.json(), day_offset=5)
    # Nobody serves 북구: a dispatcher must act, and the parent is told so honestly.
    system.wait_status(created["id"], "escalated")
    system.sms_to("+821077770501", "상황실")
    carer = system.carer("북구선생", "010-5555-0501", districts=["북구"])
    assigned = system.post(f"/v1/requests/{created['id']}/assign", {"carer_id": carer["id"]})
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["status"] == "assigned"
    system.sms_to("+821077770501", "북구선생")
    system.sms_to("+821055550501", "확정")
    timeline = system.get_request(created["id"])["timeline"]
    assert [e["type"] for e in timeline].count("dispatcher_assigned") == 1
    # The carer is now busy in that window: a second override for an overlapping request
    # (another family's: one child can't have two) is refused.
    other = system.post("/v1/families", {
        "guardian": {"name": "정보호", "phone": "010-7777-0502"}, "district": "북구",
        "children": [{"name": "정아이", "birth_date": "2018-09-09"}],
        "consent": {"child_data": True, "health_data": True}})
    assert other.status_code == 201, other.text
    second = system.request(other.json(), day_offset=5)
    system.wait_status(second["id"], "escalated")
    busy = system.post(f"/v1/requests/{second['id']}/assign", {"carer_id": carer["id"]})
    assert busy.status_code == 409 and busy.json()["code"] == "carer_busy"
