"""Centre mode end to end, through the real broker, worker, relay and API: a carer on shift
at the main centre takes five children into the group; the sixth is escalated."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from infra.harness import SEOUL, Running, running_system

pytestmark = pytest.mark.e2e

MAIN = "gwangju-main"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_system(tmp_path_factory.mktemp("e2e-center")) as running:
        yield running


def next_weekday_evening() -> datetime:
    """18:00 on the next Monday to Friday after today, in Seoul: the centres are open."""
    day = datetime.now(SEOUL).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 18, tzinfo=SEOUL)


def book(system: Running, family: dict[str, Any], start: datetime) -> dict[str, Any]:
    r = system.post("/v1/requests", {
        "service": "emergency-center", "family_id": family["id"],
        "child_id": family["children"][0]["id"], "start": start.isoformat(),
        "end": (start + timedelta(hours=4)).isoformat(), "location": {"center_id": MAIN}})
    assert r.status_code == 202, r.text
    return r.json()


def test_five_children_join_a_group_and_the_sixth_is_escalated(system: Running) -> None:
    evening = next_weekday_evening()
    r = system.post("/v1/carers", {"name": "정센터", "phone": "010-6666-0001",
                                   "districts": ["서구"], "center_id": MAIN})
    assert r.status_code == 201, r.text
    carer = r.json()
    shift = {"carer_id": carer["id"], "center_id": MAIN,
             "start": (evening - timedelta(minutes=30)).isoformat(),
             "end": (evening + timedelta(hours=5)).isoformat()}
    r = system.post("/v1/shifts", shift)
    assert r.status_code == 201, r.text
    assert system.post("/v1/shifts", shift).status_code == 409  # one carer, one place at a time

    five = []
    for i in range(5):
        family = system.family(f"010-7878-000{i}", birth_date="2022-05-05")
        created = book(system, family, evening)
        assert created["center_id"] == MAIN and created["provisional"] is False
        assigned = system.wait_status(created["id"], "assigned")
        assert assigned["carer"]["id"] == carer["id"]
        five.append(created)
        # The carer hears who is coming (given name only) and the parent where and when,
        # then who may collect the child.
        arriving = system.sms_to(carer["phone"], created["code"])
        assert "아이 어린이" in arriving["body"] and "광주긴급아이돌봄센터" in arriving["body"]
        booked = system.sms_to(f"+82107878000{i}", f"{created['code']}번 예약됐어요")
        assert "광주긴급아이돌봄센터" in booked["body"] and "18:00~22:00" in booked["body"]
        system.sms_to(f"+82107878000{i}", "보호자만")

    sixth = book(system, system.family("010-7878-0009", birth_date="2021-01-10"), evening)
    escalated = system.wait_status(sixth["id"], "escalated")
    assert escalated["carer"] is None
    types = [e["type"] for e in escalated["timeline"]]
    assert "waitlisted" in types
    assert any(e["type"] == "escalated" and e["detail"]["reason"] == "center_full"
               for e in escalated["timeline"])
    system.sms_to("+821078780009", sixth["code"])
    assert system.sms_count("+821078780009", "예약됐어요") == 0

    # The console's view of the centre at 19:00: one full group of five.
    r = system.http.get(f"/v1/centers/{MAIN}/groups",
                        params={"at": (evening + timedelta(hours=1)).isoformat()})
    assert r.status_code == 200, r.text
    [group] = r.json()["groups"]
    assert group["carer"]["id"] == carer["id"]
    assert (group["children"], group["capacity"], group["free"]) == (5, 5, 0)
    assert {b["request_id"] for b in group["bookings"]} == {c["id"] for c in five}
    assert system.http.get("/v1/centers/nowhere/groups").status_code == 404

    # Nothing to confirm for a toddler's booking.
    assert system.post(f"/v1/requests/{five[0]['id']}/confirm", {}).status_code == 409

    # A family cancels: the waiting child gets that place at once, and the parent hears so.
    r = system.post(f"/v1/requests/{five[4]['id']}/cancel", {"reason": "아이가 나았어요"})
    assert r.status_code == 200, r.text
    placed = system.wait_status(sixth["id"], "assigned")
    assert placed["carer"]["id"] == carer["id"]
    booked = system.sms_to("+821078780009", f"{sixth['code']}번 예약됐어요")
    assert "18:00~22:00" in booked["body"]
