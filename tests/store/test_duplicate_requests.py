"""One child, one place at a time: a second open request for an overlapping time is refused
on every channel (a double tap, an SMS sent twice, a call after the web form)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dispatch import commands as c
from dispatch.domain.errors import Ineligible
from notifiers import templates
from tests.helpers import NOW, add_family, hospital_request, make_bus
from tests.store.test_sms_intake import (
    PARENT,
    TOMORROW_10,
    _family_with_two_children,
    _replies,
    _sms,
)


def test_an_overlapping_second_request_for_the_child_is_refused(db_url: str) -> None:
    bus = make_bus(db_url)
    family = add_family(bus)
    first, _ = bus.handle(hospital_request(family))
    with pytest.raises(Ineligible) as refused:
        bus.handle(hospital_request(family, start=NOW + timedelta(hours=3)))
    assert refused.value.code == "duplicate_request" and first.code in refused.value.message
    # Back to back is not an overlap; a replayed Idempotency-Key still gets its request.
    bus.handle(hospital_request(family, start=first.end))
    keyed, created = bus.handle(hospital_request(family, start=NOW + timedelta(days=2),
                                                 idempotency_key="tap-1"))
    again, created_again = bus.handle(hospital_request(family, start=NOW + timedelta(days=2),
                                                       idempotency_key="tap-1"))
    assert created and not created_again and again.id == keyed.id
    # Once the first is cancelled, the time is free again.
    bus.handle(c.CancelRequest(request_id=first.id, reason="잘못 신청"))
    bus.handle(hospital_request(family, hours=2))  # within the first's time


def test_a_sibling_may_be_cared_for_at_the_same_time(db_url: str) -> None:
    bus = make_bus(db_url)
    family = _family_with_two_children(bus)
    for child in family.children:
        bus.handle(c.SubmitRequest(
            service="hospital", family_id=family.id, child_id=child.id,
            start=NOW + timedelta(hours=1), end=NOW + timedelta(hours=5),
            location={"hospital": "전남대병원", "ward": "소아병동 5층"}))


def test_an_sms_ask_for_a_time_already_booked_is_refused_before_the_question(
        db_url: str) -> None:
    bus = make_bus(db_url)
    family = add_family(bus)
    bus.handle(hospital_request(family, start=TOMORROW_10, hours=4))
    assert family.guardian_phone == PARENT
    _sms(bus, db_url, PARENT, "병원 내일 11-13", "SMdup1")
    assert _replies(db_url, "intake_confirm") == []
    [refused] = _replies(db_url, "intake_refused")
    assert refused["params"]["reason"] == "duplicate_request"
    assert "이미 신청된 돌봄" in templates.render("intake_refused", refused["params"], "ko")
