"""Fees as data: the price of a booking at its boundaries (night, the monthly subsidy cap).

Pure: a policy built in memory, explicit times, no database and no clock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.domain.fees import (
    FeeRules,
    Quote,
    Usage,
    month_bounds,
    quote,
    usage_of,
)
from dispatch.domain.policy import PolicyError, ServicePolicy, load_policies, load_policy

KST = ZoneInfo("Asia/Seoul")
FRI, SAT = date(2026, 11, 27), date(2026, 11, 28)


def kst(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), KST)


def policy_with(fees: dict[str, Any] | None) -> ServicePolicy:
    data: dict[str, Any] = {"id": "test", "label": "시험", "mode": "visit",
                            "min_age_months": 0, "max_age_months": 155,
                            "hours": {"daily": ["00:00-00:00"]}, "max_duration_minutes": 1440}
    if fees is not None:
        data["fees"] = fees
    return ServicePolicy.model_validate(data)


# 아이돌봄 긴급 as configured: ₩12,790/h, +50% from 22:00 to 06:00 (₩19,185/h).
HOME = policy_with({"hourly_krw": 12790,
                    "night": {"window": "22:00-06:00", "surcharge_percent": 50}})
# The emergency centre (DOMAIN.md §1a): ₩2,000/h, 7 uses or 80 h a month, ₩5,000/h beyond.
CENTRE = policy_with({"hourly_krw": 2000,
                      "subsidy_cap": {"max_uses": 7, "max_hours": 80, "beyond_hourly_krw": 5000}})


def lines(q: Quote) -> dict[str, tuple[int, int, int]]:
    """kind → (minutes, hourly rate, amount)."""
    return {line.kind: (line.minutes, line.hourly_krw, line.amount_krw) for line in q.breakdown}


# -- night ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "end", "expected", "total"), [
    # all day
    (kst(FRI, 10), kst(FRI, 12), {"day": (120, 12790, 25580)}, 25580),
    # 21:00–23:00 crosses 22:00: one hour each
    (kst(FRI, 21), kst(FRI, 23), {"day": (60, 12790, 12790), "night": (60, 19185, 19185)},
     31975),
    # exactly the night, and ending exactly at 22:00 / starting exactly at 06:00
    (kst(FRI, 22), kst(SAT, 6), {"night": (480, 19185, 153480)}, 153480),
    (kst(FRI, 20), kst(FRI, 22), {"day": (120, 12790, 25580)}, 25580),
    (kst(SAT, 6), kst(SAT, 8), {"day": (120, 12790, 25580)}, 25580),
    # 05:00–07:00 crosses 06:00
    (kst(SAT, 5), kst(SAT, 7), {"night": (60, 19185, 19185), "day": (60, 12790, 12790)},
     31975),
    # 21:30 to 06:30 next day: 30 min day + 8 h night + 30 min day, day minutes added up
    (kst(FRI, 21, 30), kst(SAT, 6, 30),
     {"day": (60, 12790, 12790), "night": (480, 19185, 153480)}, 166270),
    # pro rata: 2 h 10 min by day (12,790 × 130 / 60 = 27,711.67 → 27,712)
    (kst(FRI, 10), kst(FRI, 12, 10), {"day": (130, 12790, 27712)}, 27712),
])
def test_night_window_across_midnight(start: datetime, end: datetime,
                                      expected: dict[str, tuple[int, int, int]],
                                      total: int) -> None:
    q = quote(HOME, start, end)
    assert lines(q) == expected
    assert q.total_krw == total
    assert q.subsidised is False  # no subsidy cap in this policy


def test_times_in_other_zones_are_priced_in_the_policy_zone() -> None:
    # 13:00–14:00 UTC is 22:00–23:00 in Seoul: night.
    q = quote(HOME, datetime(2026, 11, 27, 13, tzinfo=UTC), datetime(2026, 11, 27, 14, tzinfo=UTC))
    assert lines(q) == {"night": (60, 19185, 19185)}


def test_seconds_are_cut_to_the_minute() -> None:
    q = quote(HOME, kst(FRI, 10).replace(second=40), kst(FRI, 11).replace(second=59))
    assert lines(q) == {"day": (60, 12790, 12790)}


def test_a_fixed_night_rate() -> None:
    policy = policy_with({"hourly_krw": 1000, "night": {"window": "18:00-09:00",
                                                        "hourly_krw": 3000}})
    q = quote(policy, kst(FRI, 17), kst(FRI, 19))
    assert lines(q) == {"day": (60, 1000, 1000), "night": (60, 3000, 3000)}


# -- the subsidy cap --------------------------------------------------------------------------

@pytest.mark.parametrize(("usage", "expected", "total", "subsidised"), [
    (Usage(), {"day": (120, 2000, 4000)}, 4000, True),
    # the 7th use of the month is still within the cap ...
    (Usage(uses=6, minutes=600), {"day": (120, 2000, 4000)}, 4000, True),
    # ... the 8th is not, all of it
    (Usage(uses=7, minutes=600), {"beyond_cap": (120, 5000, 10000)}, 10000, False),
    (Usage(uses=12, minutes=600), {"beyond_cap": (120, 5000, 10000)}, 10000, False),
    # ending exactly at the 80th hour: all subsidised
    (Usage(uses=3, minutes=78 * 60), {"day": (120, 2000, 4000)}, 4000, True),
    # the 80th hour reached in the middle of the booking: the rest is beyond the cap
    (Usage(uses=3, minutes=79 * 60), {"day": (60, 2000, 2000), "beyond_cap": (60, 5000, 5000)},
     7000, False),
    (Usage(uses=3, minutes=79 * 60 + 45),
     {"day": (15, 2000, 500), "beyond_cap": (105, 5000, 8750)}, 9250, False),
    # 80 h already used: all beyond
    (Usage(uses=3, minutes=80 * 60), {"beyond_cap": (120, 5000, 10000)}, 10000, False),
    # whichever comes first: the 7th use, but only 30 min of hours left
    (Usage(uses=6, minutes=80 * 60 - 30),
     {"day": (30, 2000, 1000), "beyond_cap": (90, 5000, 7500)}, 8500, False),
])
def test_subsidy_cap(usage: Usage, expected: dict[str, tuple[int, int, int]], total: int,
                     subsidised: bool) -> None:
    q = quote(CENTRE, kst(FRI, 19), kst(FRI, 21), usage)
    assert lines(q) == expected
    assert q.total_krw == total
    assert q.subsidised is subsidised


def test_beyond_the_cap_one_flat_rate_day_or_night() -> None:
    policy = policy_with({"hourly_krw": 2000, "night": {"window": "22:00-06:00",
                                                        "surcharge_percent": 50},
                          "subsidy_cap": {"max_hours": 10, "beyond_hourly_krw": 5000}})
    # 21:00–24:00 with 1.5 h of subsidy left: 1 h day, 30 min night, then 1.5 h beyond
    q = quote(policy, kst(FRI, 21), kst(SAT, 0), Usage(uses=4, minutes=10 * 60 - 90))
    assert lines(q) == {"day": (60, 2000, 2000), "night": (30, 3000, 1500),
                        "beyond_cap": (90, 5000, 7500)}
    assert q.total_krw == 11000


def test_only_a_use_limit() -> None:
    policy = policy_with({"hourly_krw": 2000,
                          "subsidy_cap": {"max_uses": 2, "beyond_hourly_krw": 5000}})
    assert quote(policy, kst(FRI, 10), kst(FRI, 22), Usage(uses=1, minutes=10_000)).subsidised
    assert not quote(policy, kst(FRI, 10), kst(FRI, 12), Usage(uses=2)).subsidised


# -- usage and months -------------------------------------------------------------------------

def test_usage_of_earlier_bookings() -> None:
    assert usage_of([]) == Usage()
    assert usage_of([(kst(FRI, 10), kst(FRI, 12)),
                     (kst(SAT, 22), kst(SAT, 23, 30).replace(second=30))]) == \
        Usage(uses=2, minutes=210)


@pytest.mark.parametrize(("when", "first", "following"), [
    (kst(FRI, 10), kst(date(2026, 11, 1), 0), kst(date(2026, 12, 1), 0)),
    # 23:30 UTC on 30 Nov is 08:30 on 1 Dec in Seoul: December
    (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), kst(date(2026, 12, 1), 0),
     kst(date(2027, 1, 1), 0)),
    (kst(date(2026, 12, 31), 23, 59), kst(date(2026, 12, 1), 0), kst(date(2027, 1, 1), 0)),
])
def test_month_bounds_in_the_policy_zone(when: datetime, first: datetime,
                                         following: datetime) -> None:
    assert month_bounds(CENTRE, when) == (first, following)


# -- errors -----------------------------------------------------------------------------------

def test_quote_needs_fees_and_sane_times() -> None:
    with pytest.raises(ValueError, match="no \\[fees\\]"):
        quote(policy_with(None), kst(FRI, 10), kst(FRI, 12))
    with pytest.raises(ValueError):
        quote(HOME, kst(FRI, 12), kst(FRI, 10))
    with pytest.raises(ValueError):
        quote(HOME, datetime(2026, 11, 27, 10), kst(FRI, 12))


@pytest.mark.parametrize(("fees", "named"), [
    ({"hourly_krw": -1}, "hourly_krw"),
    ({"hourly_krw": 1000, "night": {"window": "22:00-06:00"}}, "night"),
    ({"hourly_krw": 1000, "night": {"window": "22:00-06:00", "hourly_krw": 1,
                                    "surcharge_percent": 5}}, "night"),
    ({"hourly_krw": 1000, "night": {"window": "10pm-6am", "surcharge_percent": 5}}, "10pm"),
    ({"hourly_krw": 1000, "night": {"window": "22:00-22:00", "surcharge_percent": 5}},
     "empty"),
    ({"hourly_krw": 1000, "subsidy_cap": {"beyond_hourly_krw": 5000}}, "max_uses"),
    ({"hourly_krw": 1000, "subsidy_cap": {"max_uses": 7}}, "beyond_hourly_krw"),
    ({"hourly_krw": 1000, "tip_krw": 500}, "tip_krw"),
])
def test_bad_fee_rules_are_named(tmp_path: Any, fees: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError) as caught:
        FeeRules.model_validate(fees)
    assert named in str(caught.value)


def test_bad_fees_in_a_policy_file_name_the_file(tmp_path: Any) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('id = "x"\nlabel = "x"\nmode = "visit"\nmin_age_months = 0\n'
                    'max_age_months = 12\n[hours]\ndaily = ["08:00-20:00"]\n'
                    '[fees]\nhourly_krw = 1000\n[fees.night]\nwindow = "22:00-06:00"\n',
                    encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(path) in str(caught.value) and "fees.night" in str(caught.value)


# -- the built-in policies --------------------------------------------------------------------

def test_builtin_fees() -> None:
    policies = load_policies()
    hospital, home = policies["hospital"], policies["home-emergency"]
    assert quote(hospital, kst(FRI, 10), kst(FRI, 14)).total_krw == 4 * 13000
    assert hospital.fees is not None and hospital.fees.subsidy_cap is None
    assert home.fees is not None and home.fees.night_hourly_krw == 19185
    assert quote(home, kst(FRI, 21), kst(FRI, 23)).total_krw == 12790 + 19185


# -- properties -------------------------------------------------------------------------------

policies_st = st.sampled_from([HOME, CENTRE, policy_with({
    "hourly_krw": 12345, "night": {"window": "18:00-09:00", "surcharge_percent": 33},
    "subsidy_cap": {"max_uses": 3, "max_hours": 7.5, "beyond_hourly_krw": 777}})])
starts_st = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31),
                         timezones=st.just(KST))
usage_st = st.builds(Usage, uses=st.integers(0, 12), minutes=st.integers(0, 100 * 60))


@given(policy=policies_st, start=starts_st, usage=usage_st,
       a=st.integers(0, 24 * 60), b=st.integers(0, 24 * 60))
def test_total_is_monotonic_in_duration_and_never_negative(
        policy: ServicePolicy, start: datetime, usage: Usage, a: int, b: int) -> None:
    short, long = sorted((a, b))
    q_short = quote(policy, start, start + timedelta(minutes=short), usage)
    q_long = quote(policy, start, start + timedelta(minutes=long), usage)
    assert 0 <= q_short.total_krw <= q_long.total_krw
    for q, minutes in ((q_short, short), (q_long, long)):
        assert q.total_krw == sum(line.amount_krw for line in q.breakdown)
        assert all(line.amount_krw >= 0 and line.minutes > 0 for line in q.breakdown)
        assert sum(line.minutes for line in q.breakdown) == minutes  # each minute once


@given(start=starts_st, usage=usage_st, minutes=st.integers(1, 24 * 60), more=st.integers(0, 5))
def test_more_usage_this_month_never_makes_a_centre_booking_cheaper(
        start: datetime, usage: Usage, minutes: int, more: int) -> None:
    # (true where the rate beyond the cap is above every subsidised rate, as at the centre)
    end = start + timedelta(minutes=minutes)
    later = Usage(uses=usage.uses + more, minutes=usage.minutes + 60 * more)
    assert quote(CENTRE, start, end, usage).total_krw <= quote(CENTRE, start, end, later).total_krw
