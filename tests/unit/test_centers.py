"""Centre mode, pure: the ratio rule at every moment, choosing a group, the centres' hours and
the age rules of the built-in emergency-center policy. No database, no clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dispatch.domain.centers import (
    Booking,
    CenterRules,
    find_center,
    first_name,
    fits,
    load_at,
    peak,
    place_booking,
)
from dispatch.domain.errors import Ineligible
from dispatch.domain.policy import ServicePolicy, check_request, load_policies

KST = ZoneInfo("Asia/Seoul")
# Thursday 26 Nov 2026, 10:00 in Seoul (the same instant as tests/helpers.NOW).
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=KST)
THU, FRI, SAT, SUN, MON = (date(2026, 11, 26) + timedelta(days=i) for i in range(5))
TODDLER = date(2023, 3, 15)  # three and a half
BASE = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def centre() -> ServicePolicy:
    return load_policies()["emergency-center"]


def kst(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), KST)


def outcome(policy: ServicePolicy, start: datetime, end: datetime, *, birth: date = TODDLER,
            center: str | None = "gwangju-main") -> str:
    """"ok", or the Ineligible code check_request raised."""
    try:
        check_request(policy, birth_date=birth, start=start, end=end,
                      location={} if center is None else {"center_id": center}, now=NOW,
                      consent_health_data=False)
    except Ineligible as exc:
        return exc.code
    return "ok"


# -- the ratio rule ---------------------------------------------------------------------------

def at(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


def stay(start: int, end: int, sensitive: bool = False) -> Booking:
    return Booking(at(start), at(end), sensitive)


stays = st.builds(
    lambda s, d, sens: stay(s, s + d, sens),
    st.integers(0, 180), st.integers(1, 180), st.booleans())
groups = st.lists(stays, max_size=9)


def brute_force_fits(group: list[Booking], new: Booking, ratio: int = 5,
                     ratio_sensitive: int = 3) -> bool:
    """Minute by minute (every boundary is a whole minute, so this sees every moment)."""
    everyone = [*group, new]
    minute = new.start
    while minute < new.end:
        present = [b for b in everyone if b.start <= minute < b.end]
        capacity = ratio_sensitive if any(b.sensitive for b in present) else ratio
        if len(present) > capacity:
            return False
        minute += timedelta(minutes=1)
    return True


@settings(max_examples=400, deadline=None)
@given(groups, stays)
def test_fits_is_exactly_the_per_minute_count(group: list[Booking], new: Booking) -> None:
    assert fits(group, new) == brute_force_fits(group, new)


@settings(max_examples=200, deadline=None)
@given(groups, stays, st.integers(1, 6), st.integers(1, 6))
def test_fits_follows_the_configured_ratios(group: list[Booking], new: Booking, ratio: int,
                                            sensitive: int) -> None:
    sensitive = min(sensitive, ratio)
    assert fits(group, new, ratio=ratio, ratio_sensitive=sensitive) == brute_force_fits(
        group, new, ratio, sensitive)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), groups, max_size=4), stays)
def test_place_booking_never_breaks_a_ratio_and_finds_room_when_there_is(
        by_carer: dict[str, list[Booking]], new: Booking) -> None:
    chosen = place_booking(by_carer, new)
    room = [cid for cid, group in by_carer.items() if brute_force_fits(group, new)]
    if chosen is None:
        assert room == []
    else:
        assert chosen in by_carer and brute_force_fits(by_carer[chosen], new)
        # The fullest group that fits wins (see place_booking's docstring for why).
        assert peak(by_carer[chosen], new.start, new.end) == max(
            peak(by_carer[cid], new.start, new.end) for cid in room)


def test_five_at_once_is_full_and_a_sixth_does_not_fit() -> None:
    four = [stay(0, 240) for _ in range(4)]
    assert fits(four, stay(0, 240))
    assert not fits([*four, stay(0, 240)], stay(60, 120))


def test_children_who_leave_make_room_for_later_ones() -> None:
    # Five until 20:00, then nobody: a child from 20:00 fits, one from 19:59 does not.
    five = [stay(0, 120) for _ in range(5)]
    assert fits(five, stay(120, 300))
    assert not fits(five, stay(119, 300))


def test_a_sixth_booking_fits_when_no_moment_has_six() -> None:
    # Eight bookings touch the window, but never more than four children at once.
    group = [stay(0, 60) for _ in range(4)] + [stay(60, 120) for _ in range(4)]
    assert fits(group, stay(0, 120))
    assert not fits([*group, stay(0, 120)], stay(30, 90))
    assert fits([*group, stay(0, 120)], stay(120, 180))


def test_an_infant_makes_the_group_one_to_three() -> None:
    four = [stay(0, 240) for _ in range(4)]
    assert not fits(four, stay(0, 240, sensitive=True))  # an infant joining four
    two = [stay(0, 240) for _ in range(2)]
    assert fits(two, stay(0, 240, sensitive=True))
    assert not fits([*two, stay(0, 240, sensitive=True)], stay(0, 60))  # a 4th with an infant
    # Only while the infant is there: after it leaves, the group is 1:5 again.
    with_infant = [*two, stay(0, 60, sensitive=True)]
    assert fits(with_infant, stay(60, 240)) and fits([*with_infant, stay(60, 240)],
                                                      stay(60, 240))
    assert not fits(with_infant, stay(30, 240))


def test_load_at_a_moment() -> None:
    group = [stay(0, 60, sensitive=True), stay(0, 120), stay(60, 120)]
    assert load_at(group, at(0)) == load_at(group, at(59))
    first, later = load_at(group, at(0)), load_at(group, at(60))
    assert (first.children, first.sensitive, first.capacity, first.free) == (2, 1, 3, 1)
    assert (later.children, later.sensitive, later.capacity, later.free) == (2, 0, 5, 3)
    assert load_at(group, at(120)).children == 0


def test_place_booking_prefers_the_fullest_group_that_fits() -> None:
    groups = {"a": [stay(0, 240)], "b": [stay(0, 240) for _ in range(3)], "c": []}
    assert place_booking(groups, stay(0, 240)) == "b"
    # The infant can't join b (3 + 1 > 3), so it goes to the fullest group it fits.
    assert place_booking(groups, stay(0, 240, sensitive=True)) == "a"
    full = {"a": [stay(0, 240) for _ in range(5)]}
    assert place_booking(full, stay(0, 240)) is None
    assert place_booking({}, stay(0, 240)) is None


# -- policy: centres and their hours ----------------------------------------------------------

def test_builtin_centre_policy(centre: ServicePolicy) -> None:
    assert centre.mode == "center"
    assert (centre.min_age_months, centre.max_age_months) == (6, 71)
    assert (centre.min_duration_minutes, centre.max_duration_minutes) == (60, 900)
    assert centre.escalate_after_s == 600
    rules = centre.center
    assert rules is not None
    assert [c.id for c in rules.centers] == ["gwangju-main", "gwangju-seogu"]
    assert (rules.ratio, rules.ratio_sensitive, rules.sensitive_under_months) == (5, 3, 12)
    assert (rules.after_midnight_min_age_months, rules.provisional_under_months) == (13, 12)
    main = rules.center("gwangju-main")
    assert main is not None and main.name_ko == "광주긴급아이돌봄센터"
    assert "sun" not in main.hours
    assert find_center([None, rules], "gwangju-seogu") is not None
    assert find_center([rules], "gwangju-bukgu") is None


@pytest.mark.parametrize(("start", "end", "center", "expected"), [
    # Friday night into Saturday morning: the main centre only.
    (kst(FRI, 23), kst(SAT, 8), "gwangju-main", "ok"),
    (kst(FRI, 23), kst(SAT, 8), "gwangju-seogu", "outside_service_hours"),
    # Friday's night runs into Saturday's day: one open stretch at the main centre.
    (kst(SAT, 7), kst(SAT, 11), "gwangju-main", "ok"),
    (kst(SAT, 7), kst(SAT, 11), "gwangju-seogu", "outside_service_hours"),
    # Saturday 09:00-20:00 at both.
    (kst(SAT, 9), kst(SAT, 20), "gwangju-main", "ok"),
    (kst(SAT, 9), kst(SAT, 20), "gwangju-seogu", "ok"),
    (kst(SAT, 19), kst(SAT, 21), "gwangju-main", "outside_service_hours"),
    (kst(SAT, 19), kst(SAT, 21), "gwangju-seogu", "outside_service_hours"),
    # Sunday: closed, and so is Sunday night into Monday.
    (kst(SUN, 10), kst(SUN, 12), "gwangju-main", "outside_service_hours"),
    (kst(SUN, 10), kst(SUN, 12), "gwangju-seogu", "outside_service_hours"),
    (kst(MON, 6), kst(MON, 8), "gwangju-main", "outside_service_hours"),
    # Weekday evenings: from 18:00; the 서구 centre closes at 23:00.
    (kst(THU, 18), kst(THU, 23), "gwangju-seogu", "ok"),
    (kst(THU, 17), kst(THU, 19), "gwangju-main", "outside_service_hours"),
    (kst(THU, 22), kst(THU, 23, 30), "gwangju-seogu", "outside_service_hours"),
    (kst(THU, 22), kst(THU, 23, 30), "gwangju-main", "ok"),
    (kst(FRI, 7), kst(FRI, 9), "gwangju-main", "ok"),
    (kst(FRI, 8), kst(FRI, 10), "gwangju-main", "outside_service_hours"),
    # Bookings last 1-15 hours.
    (kst(FRI, 18), kst(SAT, 9, 1), "gwangju-main", "duration_out_of_range"),
    (kst(FRI, 18), kst(FRI, 18, 59), "gwangju-main", "duration_out_of_range"),
])
def test_centre_hours(centre: ServicePolicy, start: datetime, end: datetime, center: str,
                      expected: str) -> None:
    assert outcome(centre, start, end, center=center) == expected


def test_the_request_must_name_a_known_centre(centre: ServicePolicy) -> None:
    assert outcome(centre, kst(THU, 18), kst(THU, 20), center=None) == "location_required"
    assert outcome(centre, kst(THU, 18), kst(THU, 20), center="") == "location_required"
    assert outcome(centre, kst(THU, 18), kst(THU, 20), center="gwangju-bukgu") == \
        "unknown_center"
    assert outcome(centre, kst(THU, 18), kst(THU, 20), center="gwangju-seogu") == "ok"


@pytest.mark.parametrize(("birth", "expected"), [
    (date(2026, 5, 27), "age_out_of_range"),  # 5 months on the day: too young
    (date(2026, 5, 26), "ok"),                # turns 6 months that day
    (date(2020, 11, 27), "ok"),               # 71 months: the last day of 만 5세
    (date(2020, 11, 26), "age_out_of_range"),  # 6th birthday
])
def test_ages_6_months_to_5_years(centre: ServicePolicy, birth: date, expected: str) -> None:
    assert outcome(centre, kst(THU, 18), kst(THU, 20), birth=birth) == expected


@pytest.mark.parametrize(("birth", "start", "end", "expected"), [
    # 12 months after midnight (Thu night into Fri 27 Nov): refused; 13 months: accepted.
    (date(2025, 11, 27), kst(THU, 22), kst(FRI, 2), "age_out_of_range"),
    (date(2025, 10, 27), kst(THU, 22), kst(FRI, 2), "ok"),
    # The age that counts is the age on the night itself: 13 months on Friday the 27th.
    (date(2025, 10, 27), kst(THU, 22), kst(FRI, 2), "ok"),
    (date(2025, 10, 28), kst(THU, 22), kst(FRI, 2), "age_out_of_range"),
    # Before midnight a 12-month-old is welcome, up to 00:00 sharp.
    (date(2025, 11, 27), kst(THU, 18), kst(THU, 23), "ok"),
    (date(2025, 11, 27), kst(THU, 22), kst(FRI, 0), "ok"),
    (date(2025, 11, 27), kst(THU, 22), kst(FRI, 0, 1), "age_out_of_range"),
    # From 06:00 the night is over: Friday 06:00-09:00 is open to the 12-month-old.
    (date(2025, 11, 27), kst(FRI, 6), kst(FRI, 9), "ok"),
    (date(2025, 11, 27), kst(FRI, 5), kst(FRI, 9), "age_out_of_range"),
])
def test_after_midnight_only_from_13_months(centre: ServicePolicy, birth: date,
                                            start: datetime, end: datetime,
                                            expected: str) -> None:
    assert outcome(centre, start, end, birth=birth) == expected


def test_the_after_midnight_refusal_says_why(centre: ServicePolicy) -> None:
    with pytest.raises(Ineligible) as err:
        check_request(centre, birth_date=date(2025, 11, 27), start=kst(THU, 22),
                      end=kst(FRI, 2), location={"center_id": "gwangju-main"}, now=NOW,
                      consent_health_data=False)
    assert err.value.code == "age_out_of_range"
    assert "after-midnight" in err.value.message and "13 months" in err.value.message


def test_a_visit_policy_ignores_center_id() -> None:
    hospital = load_policies()["hospital"]
    assert hospital.center is None
    check_request(hospital, birth_date=TODDLER, start=kst(FRI, 10), end=kst(FRI, 12),
                  location={"hospital": "전남대병원", "ward": "5층", "center_id": "nowhere"},
                  now=NOW, consent_health_data=True)


def test_centre_rules_are_validated() -> None:
    centre = {"id": "x", "name": "X", "name_ko": "엑스", "hours": {"sat": ["09:00-20:00"]}}
    with pytest.raises(ValidationError, match="used twice"):
        CenterRules.model_validate({"centers": [centre, centre]})
    with pytest.raises(ValidationError, match="ratio_sensitive"):
        CenterRules.model_validate({"centers": [centre], "ratio": 3, "ratio_sensitive": 4})
    with pytest.raises(ValidationError, match="unknown day"):
        CenterRules.model_validate({"centers": [{**centre, "hours": {"sunday": []}}]})
    with pytest.raises(ValidationError):
        CenterRules.model_validate({"centers": []})
    rules = CenterRules.model_validate({"centers": [centre], "after_midnight": "01:00-05:00"})
    assert rules.after_midnight.start == time(1) and rules.ratio == 5


@pytest.mark.parametrize(("name", "given"), [
    ("박서연", "서연"), ("남궁민수", "민수"), ("김하늘별", "하늘별"), ("이솔", "이솔"),
    ("Seoyeon Park", "Seoyeon"), (" 박 서연 ", "박"), ("Jane", "Jane"),
])
def test_first_name(name: str, given: str) -> None:
    assert first_name(name) == given
