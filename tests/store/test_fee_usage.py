"""The child's month so far, as the fee in a request's summary counts it, on both backends:
which bookings are a "use", and where a month begins (in the policy's time zone, not UTC)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from dispatch import commands as c
from dispatch import views
from dispatch.bootstrap import bootstrap
from dispatch.db import make_engine
from dispatch.domain.fees import FeeRules
from dispatch.domain.policy import load_policies
from dispatch.messagebus import MessageBus
from tests.helpers import Clock, RecordingSms, add_carers, add_family

KST = ZoneInfo("Asia/Seoul")
# ₩13,000/h; 2 uses or 3 h a month subsidised, ₩20,000/h beyond.
CAPPED = FeeRules.model_validate({"hourly_krw": 13000, "subsidy_cap": {
    "max_uses": 2, "max_hours": 3, "beyond_hourly_krw": 20000}})


def kst(day: date, hh: int) -> datetime:
    return datetime.combine(day, time(hh), KST)


NOV30, DEC1 = date(2026, 11, 30), date(2026, 12, 1)


def _bus(url: str) -> tuple[MessageBus, dict[str, Any]]:
    policies = {k: p.model_copy(update={"fees": CAPPED}) for k, p in load_policies().items()}
    # Thursday 26 Nov 2026: every booking below is in the future; hospital has no lead limit.
    bus = bootstrap(make_engine(url), policies, sms=RecordingSms(), clock=Clock())
    return bus, policies


def _book(bus: MessageBus, family: Any, start: datetime, end: datetime, child: int = 0) -> Any:
    request, _ = bus.handle(c.SubmitRequest(
        service="hospital", family_id=family.id, child_id=family.children[child].id,
        start=start, end=end, location={"hospital": "전남대병원", "ward": "5층"}))
    return request


def _fee(bus: MessageBus, policies: dict[str, Any], request: Any) -> dict[str, Any]:
    with bus.uow_factory() as uow:
        found = uow.requests.get(request.id)
        fee = views.request_summary(uow, found, policies)["fee"]
        assert fee is not None
        return fee  # type: ignore[no-any-return]


def test_a_month_begins_at_midnight_in_seoul(db_url: str) -> None:
    bus, policies = _bus(db_url)
    [carer] = add_carers(bus, 1)
    family = add_family(bus)
    # 30 Nov 18:00–19:00 in Seoul: November. 1 Dec 08:00–10:00 in Seoul is still 30 Nov in UTC,
    # but December here.
    november = _book(bus, family, kst(NOV30, 18), kst(NOV30, 19))
    early_dec = _book(bus, family, kst(DEC1, 8), kst(DEC1, 10))
    for r in (november, early_dec):
        bus.handle(c.AssignCarer(request_id=r.id, carer_id=carer.id, dispatcher="d"))
    later = _book(bus, family, kst(DEC1, 12), kst(DEC1, 14))
    fee = _fee(bus, policies, later)
    assert fee["month_usage"] == {"uses": 1, "minutes": 120}
    # one hour of the 3 left, then beyond the cap
    assert fee["fee_krw"] == 13000 + 20000
    assert _fee(bus, policies, early_dec)["month_usage"] == {"uses": 0, "minutes": 0}
    assert _fee(bus, policies, november)["month_usage"] == {"uses": 0, "minutes": 0}


def test_what_counts_as_a_use(db_url: str) -> None:
    bus, policies = _bus(db_url)
    carers = add_carers(bus, 3)
    family = add_family(bus)
    day = DEC1
    done = _book(bus, family, kst(day, 8), kst(day, 9))
    going = _book(bus, family, kst(day, 9), kst(day, 10))
    waiting = _book(bus, family, kst(day, 10), kst(day, 11))       # received: not a use
    cancelled = _book(bus, family, kst(day, 11), kst(day, 12))     # cancelled: not a use
    for r, carer in ((done, carers[0]), (going, carers[1]), (cancelled, carers[2])):
        bus.handle(c.AssignCarer(request_id=r.id, carer_id=carer.id, dispatcher="d"))
    bus.handle(c.CancelRequest(request_id=cancelled.id, reason="x"))
    with bus.uow_factory() as uow:
        r = uow.requests.get(done.id, for_update=True)
        assert r is not None
        r.mark_arrived(carers[0].id, Clock()())
        r.mark_done(carers[0].id, Clock()())
        r2 = uow.requests.get(going.id, for_update=True)
        assert r2 is not None
        r2.mark_arrived(carers[1].id, Clock()())
        uow.commit()
    last = _book(bus, family, kst(day, 13), kst(day, 14))
    fee = _fee(bus, policies, last)
    # completed + in progress = 2 uses, the cap: this third one is beyond it
    assert fee["month_usage"] == {"uses": 2, "minutes": 120}
    assert fee["subsidised"] is False and fee["fee_krw"] == 20000
    assert _fee(bus, policies, waiting)["month_usage"] == {"uses": 2, "minutes": 120}


def test_a_list_prices_every_row_as_its_own_detail_does(db_url: str) -> None:
    """The list asks for all its rows' usage in one query; each row's fee is still what
    pricing that request alone gives (two children, two months, used and unused)."""
    from dispatch.handlers.common import fee_quote, fee_quotes

    bus, policies = _bus(db_url)
    carers = add_carers(bus, 4)
    family = add_family(bus)
    bookings = [_book(bus, family, kst(NOV30, 8), kst(NOV30, 10)),
                _book(bus, family, kst(DEC1, 8), kst(DEC1, 9)),
                _book(bus, family, kst(DEC1, 9), kst(DEC1, 11), child=0),
                _book(bus, family, kst(DEC1, 12), kst(DEC1, 15)),
                _book(bus, family, kst(date(2026, 12, 2), 8), kst(date(2026, 12, 2), 12))]
    for r, carer in zip(bookings[:3], carers, strict=False):
        bus.handle(c.AssignCarer(request_id=r.id, carer_id=carer.id, dispatcher="d"))
    with bus.uow_factory() as uow:
        rows = [uow.requests.get(r.id) for r in bookings]
        assert all(rows)
        batched = fee_quotes(uow, rows, policies)  # type: ignore[arg-type]
        alone = {r.id: fee_quote(uow, r, policies[r.service]) for r in rows}  # type: ignore[union-attr]
        listed = {s["id"]: s["fee"] for s in views.request_summaries(uow, rows, policies)}  # type: ignore[arg-type]
    assert batched == alone
    assert {usage.uses for _, usage in batched.values()} == {0, 1, 2}
    for request_id, (fee, usage) in alone.items():
        assert listed[request_id]["fee_krw"] == fee.as_dict()["fee_krw"]
        assert listed[request_id]["month_usage"] == {"uses": usage.uses,
                                                     "minutes": usage.minutes}
