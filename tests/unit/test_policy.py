"""Service policies: eligibility rules at their boundaries, and loading policy files.

Pure: no database, no clock (every check gets an explicit `now`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.domain.errors import Ineligible
from dispatch.domain.policy import (
    LEAD_GRACE_MINUTES,
    PolicyError,
    ServicePolicy,
    age_in_months,
    check_request,
    load_policies,
    load_policy,
)

KST = ZoneInfo("Asia/Seoul")
# Thursday 26 Nov 2026, 10:00 in Seoul (the same instant as tests/helpers.NOW).
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=KST)
HOSPITAL_TOML = Path(__file__).resolve().parents[2] / "dispatch" / "policies" / "hospital.toml"
WARD = {"hospital": "전남대학교병원", "ward": "소아병동 5층"}
BORN = date(2020, 5, 10)  # six years old throughout these tests


@pytest.fixture(scope="module")
def hospital() -> ServicePolicy:
    return load_policies()["hospital"]


def kst(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), KST)


def outcome(policy: ServicePolicy, start: datetime, end: datetime, *, birth: date = BORN,
            location: dict[str, object] | None = None, now: datetime = NOW,
            consent: bool = True) -> str:
    """"ok", or the Ineligible code check_request raised."""
    try:
        check_request(policy, birth_date=birth, start=start, end=end,
                      location=dict(WARD) if location is None else location, now=now,
                      consent_health_data=consent)
    except Ineligible as exc:
        return exc.code
    return "ok"


def small_policy(**overrides: Any) -> ServicePolicy:
    data: dict[str, Any] = {"id": "test", "label": "시험", "mode": "visit",
                            "min_age_months": 0, "max_age_months": 155,
                            "hours": {"daily": ["08:00-20:00"]}}
    data.update(overrides)
    return ServicePolicy.model_validate(data)


# -- age ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("birth", "on", "months"), [
    # birthdays and the day before
    (date(2020, 3, 15), date(2020, 3, 15), 0),
    (date(2020, 3, 15), date(2020, 4, 14), 0),
    (date(2020, 3, 15), date(2020, 4, 15), 1),
    (date(2020, 3, 15), date(2021, 3, 14), 11),
    (date(2020, 3, 15), date(2021, 3, 15), 12),
    (date(2013, 11, 27), date(2026, 11, 26), 155),
    (date(2013, 11, 27), date(2026, 11, 27), 156),
    # born on the 31st: the month completes on the last day of a shorter month
    (date(2021, 1, 31), date(2021, 2, 27), 0),
    (date(2021, 1, 31), date(2021, 2, 28), 1),   # no 29 Feb in 2021
    (date(2020, 1, 31), date(2020, 2, 28), 0),   # 2020 has a 29 Feb ...
    (date(2020, 1, 31), date(2020, 2, 29), 1),   # ... which completes the month
    (date(2021, 1, 31), date(2021, 3, 30), 1),
    (date(2021, 1, 31), date(2021, 3, 31), 2),
    (date(2021, 1, 31), date(2021, 4, 30), 3),
    (date(2021, 1, 31), date(2021, 12, 30), 10),  # December: the month arithmetic wraps
    (date(2021, 1, 31), date(2021, 12, 31), 11),
    (date(2020, 12, 31), date(2021, 11, 30), 11),
    (date(2021, 1, 30), date(2021, 2, 28), 1),
    (date(2021, 1, 28), date(2021, 2, 27), 0),
    # born on a leap day
    (date(2020, 2, 29), date(2020, 3, 28), 0),
    (date(2020, 2, 29), date(2020, 3, 29), 1),
    (date(2020, 2, 29), date(2021, 2, 27), 11),
    (date(2020, 2, 29), date(2021, 2, 28), 12),
    (date(2020, 2, 29), date(2024, 2, 28), 47),
    (date(2020, 2, 29), date(2024, 2, 29), 48),
])
def test_age_in_months(birth: date, on: date, months: int) -> None:
    assert age_in_months(birth, on) == months


@given(birth=st.dates(min_value=date(2000, 1, 1), max_value=date(2030, 12, 31)),
       days=st.integers(min_value=0, max_value=6000))
def test_age_grows_by_at_most_one_month_a_day(birth: date, days: int) -> None:
    on = birth + timedelta(days=days)
    today, tomorrow = age_in_months(birth, on), age_in_months(birth, on + timedelta(days=1))
    assert 0 <= today <= tomorrow <= today + 1
    # roughly 30.44 days a month
    assert abs(today - days / 30.436875) <= 1.1


@pytest.mark.parametrize(("birth", "day", "expected"), [
    (date(2013, 12, 1), date(2026, 11, 30), "ok"),             # 155 months: day before 13
    (date(2013, 12, 1), date(2026, 12, 1), "age_out_of_range"),  # 13th birthday
    (date(2011, 6, 1), date(2026, 11, 30), "age_out_of_range"),  # fifteen
    (date(2026, 11, 27), date(2026, 11, 27), "ok"),             # born today
    (date(2026, 11, 28), date(2026, 11, 27), "age_out_of_range"),  # not born yet
])
def test_hospital_ages(hospital: ServicePolicy, birth: date, day: date, expected: str) -> None:
    assert outcome(hospital, kst(day, 10), kst(day, 12), birth=birth) == expected


def test_age_is_taken_on_the_seoul_date_of_the_start(hospital: ServicePolicy) -> None:
    # 23:30 UTC on the 26th is 08:30 on the 27th in Seoul: the 13th birthday there.
    start = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    assert outcome(hospital, start, start + timedelta(hours=2),
                   birth=date(2013, 11, 27)) == "age_out_of_range"
    assert outcome(hospital, start, start + timedelta(hours=2),
                   birth=date(2013, 11, 28)) == "ok"


# -- hours ----------------------------------------------------------------------------------

FRI = date(2026, 11, 27)
SAT, SUN, MON, TUE = (date(2026, 11, 28), date(2026, 11, 29), date(2026, 11, 30),
                      date(2026, 12, 1))


def as_utc(when: datetime) -> datetime:
    return when.astimezone(UTC)


@pytest.mark.parametrize("to_zone", [lambda d: d, as_utc], ids=["kst", "utc"])
@pytest.mark.parametrize(("start", "end", "expected"), [
    (kst(FRI, 8), kst(FRI, 20), "ok"),
    (kst(FRI, 8), kst(FRI, 9), "ok"),
    (kst(FRI, 19), kst(FRI, 20), "ok"),
    (kst(FRI, 7, 59), kst(FRI, 10), "outside_service_hours"),
    (kst(FRI, 18), kst(FRI, 20, 1), "outside_service_hours"),
    (kst(FRI, 19), kst(SAT, 1), "outside_service_hours"),   # crosses midnight
    (kst(FRI, 21), kst(FRI, 23), "outside_service_hours"),
    (kst(SAT, 6), kst(SAT, 8), "outside_service_hours"),
    (kst(SUN, 9), kst(SUN, 11), "ok"),                      # daily means weekends too
])
def test_hospital_hours(hospital: ServicePolicy, to_zone: Any, start: datetime, end: datetime,
                        expected: str) -> None:
    assert outcome(hospital, to_zone(start), to_zone(end)) == expected


@pytest.fixture(scope="module")
def night() -> ServicePolicy:
    return small_policy(hours={"mon": ["18:00-09:00"], "sat": ["09:00-20:00"]},
                        max_duration_minutes=24 * 60)


@pytest.mark.parametrize("to_zone", [lambda d: d, as_utc], ids=["kst", "utc"])
@pytest.mark.parametrize(("start", "end", "expected"), [
    (kst(MON, 22), kst(TUE, 2), "ok"),
    (kst(MON, 18), kst(TUE, 9), "ok"),                     # the whole window
    (kst(TUE, 8), kst(TUE, 9), "ok"),                      # the tail of Monday's window
    (kst(TUE, 8, 30), kst(TUE, 9, 30), "outside_service_hours"),
    (kst(MON, 17), kst(MON, 19), "outside_service_hours"),
    (kst(MON, 10), kst(MON, 12), "outside_service_hours"),
    (kst(TUE, 18), kst(TUE, 20), "outside_service_hours"),  # no Tuesday window
    (kst(SUN, 10), kst(SUN, 12), "outside_service_hours"),
    (kst(SUN, 22), kst(MON, 2), "outside_service_hours"),
    (kst(SUN, 20), kst(MON, 19), "outside_service_hours"),
    (kst(SAT, 9), kst(SAT, 20), "ok"),
    (kst(SAT, 12), kst(SAT, 14), "ok"),
    (kst(SAT, 8, 59), kst(SAT, 10), "outside_service_hours"),
    (kst(SAT, 19), kst(SAT, 20, 1), "outside_service_hours"),
    (kst(SAT, 22), kst(SUN, 1), "outside_service_hours"),
])
def test_windows_past_midnight(night: ServicePolicy, to_zone: Any, start: datetime,
                               end: datetime, expected: str) -> None:
    assert outcome(night, to_zone(start), to_zone(end)) == expected
    assert night.within_hours(to_zone(start), to_zone(end)) is (expected == "ok")


@pytest.mark.parametrize(("hours", "start", "end", "expected"), [
    # windows that touch at midnight join into one stretch
    ({"fri": ["18:00-00:00"], "sat": ["00:00-09:00"]}, kst(FRI, 22), kst(SAT, 2), True),
    ({"fri": ["18:00-00:00"], "sat": ["00:00-09:00"]}, kst(FRI, 18), kst(SAT, 9), True),
    ({"fri": ["18:00-00:00"], "sat": ["00:30-09:00"]}, kst(FRI, 22), kst(SAT, 2), False),
    ({"daily": ["09:00-12:00", "12:00-15:00"]}, kst(FRI, 11), kst(FRI, 13), True),
    ({"daily": ["09:00-12:00", "13:00-15:00"]}, kst(FRI, 11), kst(FRI, 14), False),
    # start = end is a whole day, and whole days join up
    ({"daily": ["00:00-00:00"]}, kst(FRI, 20), kst(SAT, 10), True),
    ({"daily": ["08:00-20:00"], "sun": []}, kst(SUN, 10), kst(SUN, 11), False),
])
def test_touching_windows(hours: dict[str, list[str]], start: datetime, end: datetime,
                          expected: bool) -> None:
    assert small_policy(hours=hours).within_hours(start, end) is expected


def test_other_offsets_are_converted_to_the_policy_zone(hospital: ServicePolicy) -> None:
    la = ZoneInfo("America/Los_Angeles")  # 08:00 Seoul on Fri 27 Nov is 15:00 Thu in LA
    assert outcome(hospital, datetime(2026, 11, 26, 15, 0, tzinfo=la),
                   datetime(2026, 11, 26, 17, 0, tzinfo=la)) == "ok"
    assert outcome(hospital, datetime(2026, 11, 26, 14, 59, tzinfo=la),
                   datetime(2026, 11, 26, 17, 0, tzinfo=la)) == "outside_service_hours"


# -- times ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "end", "expected"), [
    (datetime(2026, 11, 27, 10, 0), kst(FRI, 12), "invalid_time"),       # naive start
    (kst(FRI, 10), datetime(2026, 11, 27, 12, 0), "invalid_time"),       # naive end
    (kst(FRI, 10), kst(FRI, 10), "invalid_time"),                        # end = start
    (kst(FRI, 12), kst(FRI, 10), "invalid_time"),                        # end < start
    (kst(date(2026, 11, 25), 10), kst(date(2026, 11, 25), 12), "invalid_time"),  # over
    (NOW - timedelta(hours=2), NOW, "invalid_time"),                     # ends right now
    (NOW - timedelta(minutes=30), NOW + timedelta(hours=1), "lead_time"),  # began earlier
    (NOW - timedelta(minutes=LEAD_GRACE_MINUTES, seconds=1), NOW + timedelta(hours=1),
     "lead_time"),
    (NOW - timedelta(minutes=LEAD_GRACE_MINUTES), NOW + timedelta(hours=1), "ok"),  # grace
    (NOW, NOW + timedelta(hours=1), "ok"),
])
def test_times(hospital: ServicePolicy, start: datetime, end: datetime, expected: str) -> None:
    assert outcome(hospital, start, end) == expected


@pytest.mark.parametrize(("minutes", "expected"), [
    (1, "duration_out_of_range"),
    (59, "duration_out_of_range"),
    (60, "ok"),
    (720, "ok"),
    (721, "duration_out_of_range"),
])
def test_hospital_duration(hospital: ServicePolicy, minutes: int, expected: str) -> None:
    start = kst(FRI, 8)
    assert outcome(hospital, start, start + timedelta(minutes=minutes)) == expected


@pytest.mark.parametrize(("minutes_ahead", "expected"), [
    (60, "lead_time"),
    (114, "lead_time"),       # beyond the five-minute grace
    (115, "ok"),              # 120 less the grace
    (119, "ok"),
    (120, "ok"),
    (240, "ok"),
    (241, "lead_time"),
    (24 * 60, "lead_time"),
])
def test_lead_time(minutes_ahead: int, expected: str) -> None:
    policy = small_policy(min_lead_minutes=120, max_lead_minutes=240, min_duration_minutes=60)
    start = NOW + timedelta(minutes=minutes_ahead)
    assert LEAD_GRACE_MINUTES == 5
    assert outcome(policy, start, start + timedelta(hours=1)) == expected


def test_lead_time_message_names_the_window() -> None:
    policy = small_policy(min_lead_minutes=120, max_lead_minutes=240)
    with pytest.raises(Ineligible) as caught:
        check_request(policy, birth_date=BORN, start=NOW + timedelta(minutes=300),
                      end=NOW + timedelta(minutes=360), location={}, now=NOW,
                      consent_health_data=False)
    assert caught.value.code == "lead_time"
    assert "120" in caught.value.message and "240" in caught.value.message


# -- location and consent -------------------------------------------------------------------

@pytest.mark.parametrize(("location", "expected"), [
    ({"hospital": "전남대학교병원", "ward": "5층"}, "ok"),
    ({"hospital": "전남대학교병원"}, "location_required"),
    ({"hospital": "전남대학교병원", "ward": ""}, "location_required"),
    ({"hospital": "전남대학교병원", "ward": None}, "location_required"),
    ({"ward": "5층"}, "location_required"),
    ({}, "location_required"),
])
def test_hospital_location(hospital: ServicePolicy, location: dict[str, object],
                           expected: str) -> None:
    assert outcome(hospital, kst(FRI, 10), kst(FRI, 12), location=location) == expected


def test_missing_ward_is_named(hospital: ServicePolicy) -> None:
    with pytest.raises(Ineligible) as caught:
        check_request(hospital, birth_date=BORN, start=kst(FRI, 10), end=kst(FRI, 12),
                      location={"hospital": "전남대학교병원"}, now=NOW,
                      consent_health_data=True)
    assert caught.value.code == "location_required"
    assert "ward" in caught.value.message and "hospital," not in caught.value.message


def test_hospital_needs_health_consent(hospital: ServicePolicy) -> None:
    assert outcome(hospital, kst(FRI, 10), kst(FRI, 12), consent=False) \
        == "health_consent_required"
    assert outcome(hospital, kst(FRI, 10), kst(FRI, 12), consent=True) == "ok"


def test_health_consent_only_when_the_policy_asks() -> None:
    policy = small_policy()
    assert policy.requires_health_consent is False
    assert outcome(policy, kst(FRI, 10), kst(FRI, 12), location={}, consent=False) == "ok"


# -- policy files ---------------------------------------------------------------------------

def test_builtin_hospital_policy(hospital: ServicePolicy) -> None:
    assert hospital.id == "hospital"
    assert hospital.mode == "visit"
    assert hospital.timezone == "Asia/Seoul"
    assert (hospital.min_age_months, hospital.max_age_months) == (0, 155)
    assert hospital.required_skills == ["hospital"]
    assert hospital.requires_health_consent is True
    assert hospital.location_fields == ["hospital", "ward"]
    assert (hospital.min_duration_minutes, hospital.max_duration_minutes) == (60, 720)
    assert set(hospital.hours) == {"daily"}
    [window] = hospital.hours["daily"]
    assert (window.start, window.end) == (time(8, 0), time(20, 0))
    assert all(len(hospital.windows_on(MON + timedelta(days=i))) == 1 for i in range(7))


def test_load_policies_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "hospital.toml").write_text(HOSPITAL_TOML.read_text(encoding="utf-8"),
                                            encoding="utf-8")
    (tmp_path / "README.txt").write_text("not a policy", encoding="utf-8")
    policies = load_policies(tmp_path)
    assert list(policies) == ["hospital"]
    assert policies["hospital"] == load_policies()["hospital"]


def write_variant(folder: Path, name: str, old: str, new: str) -> Path:
    text = HOSPITAL_TOML.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in hospital.toml"
    path = folder / name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(("old", "new", "named"), [
    ("max_age_months = 155", "max_age_month = 155", ["max_age_month"]),
    ('daily = ["08:00-20:00"]', 'daily = ["8-20:00"]', ["hours", "8-20:00"]),
    ('daily = ["08:00-20:00"]', 'daily = ["08:00-20:00-21:00"]', ["hours"]),
    ('daily = ["08:00-20:00"]', 'funday = ["08:00-20:00"]', ["hours", "funday"]),
    ('daily = ["08:00-20:00"]', 'daily = 8', ["hours", "daily"]),
    ('daily = ["08:00-20:00"]', 'daily = "08:00-20:00"', ["hours", "daily"]),
    ('mode = "visit"', 'mode = "home"', ["mode"]),
    ("max_age_months = 155", "max_age_months = -1", ["max_age_months"]),
    ('timezone = "Asia/Seoul"', 'timezone = "Asia/Seol"', ["timezone", "Asia/Seol"]),
    ('strategy = "waves"', 'strategy = "shout"', ["offers.strategy"]),
    ("timeout_s = 600", "timeout = 600", ["offers.timeout"]),
])
def test_bad_policy_file_names_file_and_field(tmp_path: Path, old: str, new: str,
                                              named: list[str]) -> None:
    path = write_variant(tmp_path, "broken.toml", old, new)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert str(path) in message
    for word in named:
        assert word in message
    # and the same through load_policies, which reads the folder
    with pytest.raises(PolicyError) as caught_folder:
        load_policies(tmp_path)
    assert str(path) in str(caught_folder.value)


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write_variant(tmp_path, "broken.toml", "min_age_months = 0", "min_age_months = zero")
    line = next(i for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if text.startswith("min_age_months"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)
    assert f"line {line}" in str(caught.value)


def test_two_files_with_one_id(tmp_path: Path) -> None:
    write_variant(tmp_path, "a.toml", 'label_en = "hospital child care"', 'label_en = "A"')
    second = write_variant(tmp_path, "b.toml", 'label_en = "hospital child care"',
                           'label_en = "B"')
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    assert str(second) in str(caught.value)
    assert "'hospital'" in str(caught.value)


def test_missing_folder() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policies(Path("/nonexistent"))
    assert "/nonexistent" in str(caught.value)


def test_folder_without_policies(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "absent.toml")
    assert str(tmp_path / "absent.toml") in str(caught.value)
