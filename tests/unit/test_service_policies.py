"""The built-in home-emergency policy at its boundaries, and min ≤ max checks on any policy.

Pure: no database, no clock (every check gets an explicit `now`).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dispatch.domain.errors import Ineligible
from dispatch.domain.policy import (
    LEAD_GRACE_MINUTES,
    PolicyError,
    ServicePolicy,
    check_request,
    load_policies,
    load_policy,
)

KST = ZoneInfo("Asia/Seoul")
# Thursday 26 Nov 2026, 10:00 in Seoul.
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=KST)
POLICIES = Path(__file__).resolve().parents[2] / "dispatch" / "policies"
BORN = date(2020, 5, 10)  # six years old


@pytest.fixture(scope="module")
def home() -> ServicePolicy:
    return load_policies()["home-emergency"]


def outcome(policy: ServicePolicy, start: datetime, end: datetime, *, birth: date = BORN,
            now: datetime = NOW) -> str:
    try:
        check_request(policy, birth_date=birth, start=start, end=end, location={}, now=now,
                      consent_health_data=False)
    except Ineligible as exc:
        return exc.code
    return "ok"


def test_builtin_home_emergency(home: ServicePolicy) -> None:
    assert home.id == "home-emergency"
    assert home.mode == "visit"
    assert (home.min_age_months, home.max_age_months) == (3, 155)
    assert (home.min_lead_minutes, home.max_lead_minutes) == (120, 240)
    assert home.min_duration_minutes == 120
    assert home.required_skills == []
    assert home.requires_health_consent is False
    assert home.fees is not None and home.fees.hourly_krw == 12790
    assert home.fees.night is not None
    assert (home.fees.night.start, home.fees.night.end) == (time(22), time(6))


# -- lead time: 2 to 4 hours ahead, with the code's grace on the near side ---------------------

@pytest.mark.parametrize(("minutes_ahead", "expected"), [
    (60, "lead_time"),
    (120 - LEAD_GRACE_MINUTES - 1, "lead_time"),  # 114: beyond the grace
    (120 - LEAD_GRACE_MINUTES, "ok"),             # 115: the grace
    (119, "ok"),
    (120, "ok"),
    (180, "ok"),
    (240, "ok"),
    (241, "lead_time"),                           # no grace on the far side
    (5 * 60, "lead_time"),                        # a 단기 booking, not 긴급
])
def test_home_emergency_lead_time(home: ServicePolicy, minutes_ahead: int,
                                  expected: str) -> None:
    assert LEAD_GRACE_MINUTES == 5
    start = NOW + timedelta(minutes=minutes_ahead)
    assert outcome(home, start, start + timedelta(hours=2)) == expected


# -- ages: from 3 months to the day before the 13th birthday ----------------------------------

START = NOW + timedelta(hours=3)  # 13:00 on 26 Nov 2026


@pytest.mark.parametrize(("birth", "expected"), [
    (date(2026, 9, 27), "age_out_of_range"),   # 1 month 30 days
    (date(2026, 8, 27), "age_out_of_range"),   # 2 months 30 days: one day short of 3
    (date(2026, 8, 26), "ok"),                 # 3 months today
    (date(2013, 11, 27), "ok"),                # 12 years 11 months (155 months)
    (date(2013, 11, 26), "age_out_of_range"),  # 13 today
    (date(2012, 11, 26), "age_out_of_range"),  # 14
])
def test_home_emergency_ages(home: ServicePolicy, birth: date, expected: str) -> None:
    assert outcome(home, START, START + timedelta(hours=2), birth=birth) == expected


# -- duration: at least 2 hours ----------------------------------------------------------------

@pytest.mark.parametrize(("minutes", "expected"), [
    (60, "duration_out_of_range"),
    (119, "duration_out_of_range"),
    (120, "ok"),
    (720, "ok"),
    (721, "duration_out_of_range"),
])
def test_home_emergency_duration(home: ServicePolicy, minutes: int, expected: str) -> None:
    assert outcome(home, START, START + timedelta(minutes=minutes)) == expected


@pytest.mark.parametrize("hour", [0, 3, 6, 21, 22, 23])
def test_home_emergency_runs_round_the_clock(home: ServicePolicy, hour: int) -> None:
    now = datetime.combine(NOW.date(), time(hour), KST) - timedelta(hours=3)
    start = datetime.combine(NOW.date(), time(hour), KST)
    assert outcome(home, start, start + timedelta(hours=3), now=now) == "ok"


# -- min ≤ max, in any policy ------------------------------------------------------------------

def small(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": "test", "label": "시험", "mode": "visit",
                            "min_age_months": 0, "max_age_months": 155,
                            "hours": {"daily": ["08:00-20:00"]}}
    data.update(overrides)
    return data


@pytest.mark.parametrize(("overrides", "named"), [
    ({"min_age_months": 13, "max_age_months": 12}, "max_age_months (12)"),
    ({"min_duration_minutes": 121, "max_duration_minutes": 120}, "max_duration_minutes (120)"),
    ({"min_lead_minutes": 241, "max_lead_minutes": 240}, "max_lead_minutes (240)"),
])
def test_min_above_max_is_refused_and_named(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError) as caught:
        ServicePolicy.model_validate(small(**overrides))
    assert named in str(caught.value)
    low = named.split(" ")[0].replace("max_", "min_")
    assert low in str(caught.value)


@pytest.mark.parametrize("overrides", [
    {"min_age_months": 12, "max_age_months": 12},
    {"min_duration_minutes": 120, "max_duration_minutes": 120},
    {"min_lead_minutes": 240, "max_lead_minutes": 240},
    {"min_lead_minutes": 10_000, "max_lead_minutes": None},  # no upper bound
])
def test_min_equal_to_max_is_fine(overrides: dict[str, Any]) -> None:
    ServicePolicy.model_validate(small(**overrides))


@pytest.mark.parametrize(("old", "new", "named"), [
    ("min_age_months = 3", "min_age_months = 156", "max_age_months"),
    ("max_duration_minutes = 720", "max_duration_minutes = 60", "max_duration_minutes"),
    ("max_lead_minutes = 240", "max_lead_minutes = 60", "max_lead_minutes"),
])
def test_policy_file_with_min_above_max_names_file_and_field(tmp_path: Path, old: str,
                                                            new: str, named: str) -> None:
    text = (POLICIES / "home-emergency.toml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "home-emergency.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)
    assert named in str(caught.value)
