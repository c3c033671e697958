"""The SMS intake grammar: what a parent may type to ask for care, and what is never an ask."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifiers.grammar import WORDS
from notifiers.intake_grammar import IntakeRequest, parse_request

SEOUL = ZoneInfo("Asia/Seoul")
# Thursday 26 Nov 2026, 10:00 in Seoul (as tests/helpers.NOW).
NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0, month: int = 11, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SEOUL)


def ask(text: str, now: datetime = NOW) -> tuple[str, datetime, datetime] | None:
    found = parse_request(text, now, SEOUL)
    return (found.service, found.start, found.end) if found else None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the example and the service words
        ("병원 내일 10-14", ("hospital", at(27, 10), at(27, 14))),
        ("입원 내일 10-14", ("hospital", at(27, 10), at(27, 14))),
        ("hospital tomorrow 10-14", ("hospital", at(27, 10), at(27, 14))),
        ("입원아동돌봄 내일 10-14", ("hospital", at(27, 10), at(27, 14))),
        ("센터 내일 10-14", ("emergency-center", at(27, 10), at(27, 14))),
        ("긴급 내일 10-14", ("emergency-center", at(27, 10), at(27, 14))),
        ("center tomorrow 10-14", ("emergency-center", at(27, 10), at(27, 14))),
        ("긴급돌봄 내일 10-14", ("emergency-center", at(27, 10), at(27, 14))),
        # days
        ("병원 오늘 12-16", ("hospital", at(26, 12), at(26, 16))),
        ("병원 today 12-16", ("hospital", at(26, 12), at(26, 16))),
        ("병원 12-16", ("hospital", at(26, 12), at(26, 16))),  # no day: today
        ("병원 모레 10-14", ("hospital", at(28, 10), at(28, 14))),
        ("병원 11/27 10-14", ("hospital", at(27, 10), at(27, 14))),
        ("병원 11 / 27 10-14", ("hospital", at(27, 10), at(27, 14))),
        ("병원 11월 27일 10-14", ("hospital", at(27, 10), at(27, 14))),
        ("병원 11월27일 10-14", ("hospital", at(27, 10), at(27, 14))),
        ("병원 12/1 10-14", ("hospital", at(1, 10, month=12), at(1, 14, month=12))),
        ("병원 30일 10-14", ("hospital", at(30, 10), at(30, 14))),
        ("병원 3일 10-14", ("hospital", at(3, 10, month=12), at(3, 14, month=12))),  # next month
        # a date more than a month gone is next year's; a recent one stays (the policy refuses)
        ("병원 1/3 10-14", ("hospital", at(3, 10, month=1, year=2027), at(3, 14, month=1, year=2027))),
        ("병원 11/25 10-14", ("hospital", at(25, 10), at(25, 14))),
        # hours
        ("병원 내일 10시-14시", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 10시부터 14시까지", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 10:30-14", ("hospital", at(27, 10, 30), at(27, 14))),
        ("병원 내일 10:30-14:45", ("hospital", at(27, 10, 30), at(27, 14, 45))),
        ("병원 내일 10시 30분-14시", ("hospital", at(27, 10, 30), at(27, 14))),
        ("병원 내일 10시 반-14시", ("hospital", at(27, 10, 30), at(27, 14))),
        ("병원 내일 10~14", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 10 - 14", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 오후 2-6", ("hospital", at(27, 14), at(27, 18))),
        ("병원 내일 오후 2시-6시", ("hospital", at(27, 14), at(27, 18))),
        ("병원 내일 pm 2-6", ("hospital", at(27, 14), at(27, 18))),
        ("병원 내일 2-6pm", ("hospital", at(27, 14), at(27, 18))),
        ("병원 내일 10am-2pm", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 10-2pm", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 10-2 p.m.", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 오전 10-오후 2", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 오전 10-2", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 오후 12-3", ("hospital", at(27, 12), at(27, 15))),
        ("병원 내일 10-2", ("hospital", at(27, 10), at(27, 14))),  # the afternoon
        ("병원 내일 9-5", ("hospital", at(27, 9), at(27, 17))),
        ("센터 내일 22-6", ("emergency-center", at(27, 22), at(28, 6))),  # overnight
        ("센터 내일 오후 10-2", ("emergency-center", at(27, 22), at(28, 2))),
        ("센터 내일 20-24", ("emergency-center", at(27, 20), at(28, 0))),
        # order, spacing, width, case and a few polite words
        ("내일 10-14 병원", ("hospital", at(27, 10), at(27, 14))),
        ("10-14 내일 병원", ("hospital", at(27, 10), at(27, 14))),
        ("병원내일10-14", ("hospital", at(27, 10), at(27, 14))),
        ("  병원   내일\n10-14  ", ("hospital", at(27, 10), at(27, 14))),
        ("병원, 내일, 10-14.", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 10-14!", ("hospital", at(27, 10), at(27, 14))),
        ("병원　내일　１０－１４", ("hospital", at(27, 10), at(27, 14))),
        ("ＨＯＳＰＩＴＡＬ ＴＯＭＯＲＲＯＷ １０～１４", ("hospital", at(27, 10), at(27, 14))),
        ("Hospital Tomorrow 10-14", ("hospital", at(27, 10), at(27, 14))),
        ("병원 돌봄 내일 10-14 신청", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 10-14 부탁드려요", ("hospital", at(27, 10), at(27, 14))),
        ("hospital tomorrow 10-14 please", ("hospital", at(27, 10), at(27, 14))),
        ("병원 내일 10\u200b-14", ("hospital", at(27, 10), at(27, 14))),  # zero-width space
        (unicodedata.normalize("NFD", "병원 내일 10-14"), ("hospital", at(27, 10), at(27, 14))),
    ],
)
def test_understood(text: str, expected: tuple[str, datetime, datetime]) -> None:
    assert ask(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # commands of the SMS grammar are never an ask
        "네", "예", "아니오", "취소", "상태", "YES 1234", "네 4821", "취소 4821", "STOP", "1", "2",
        "2번",
        # an ask missing its service or its hours
        "병원", "병원 내일", "내일 10-14", "10-14", "오후 2-6",
        # two of one part: ambiguous
        "병원 센터 내일 10-14", "병원 내일 모레 10-14", "병원 내일 10-14 15-17",
        # anything else in the text
        "병원 내일 10-14 아이가 열이 나요", "hospitality tomorrow 10-14", "병원 내일 10-14시간",
        "안녕하세요", "", "   ", "!!!",
        # impossible dates and times
        "병원 2/30 10-14", "병원 13/1 10-14", "병원 32일 10-14", "병원 내일 25-26",
        "병원 내일 10-10", "병원 내일 10:75-14", "병원 내일 10:5-14", "병원 내일 24-2",
        "병원 내일 20-24:30", "병원 내일 오전 2pm-4", "병원 내일 오전 13-15",
        "병원 11/27/2026 10-14",
    ],
)
def test_not_an_ask(text: str) -> None:
    assert ask(text) is None


def test_every_command_word_of_the_sms_grammar_is_not_an_ask() -> None:
    for word in WORDS:
        assert ask(word) is None, word
        assert ask(f"{word} 4821") is None, word


def test_result_is_an_aware_frozen_value_in_the_given_zone() -> None:
    found = parse_request("병원 내일 10-14", NOW, SEOUL)
    assert isinstance(found, IntakeRequest)
    assert found.start.utcoffset() == timedelta(hours=9)
    assert found.start == datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
    with pytest.raises(AttributeError):
        found.service = "center"  # type: ignore[misc]


def test_today_is_the_day_in_the_given_zone_not_in_utc() -> None:
    # 23:30 UTC on the 26th is already the 27th in Seoul.
    late = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    assert ask("병원 오늘 10-14", late) == ("hospital", at(27, 10), at(27, 14))
    assert ask("병원 내일 10-14", late) == ("hospital", at(28, 10), at(28, 14))


def test_dates_roll_over_the_year_end() -> None:
    new_years_eve = datetime(2026, 12, 31, 3, 0, tzinfo=UTC)
    assert ask("병원 내일 10-14", new_years_eve) == (
        "hospital", at(1, 10, month=1, year=2027), at(1, 14, month=1, year=2027))
    assert ask("병원 1월 2일 10-14", new_years_eve) == (
        "hospital", at(2, 10, month=1, year=2027), at(2, 14, month=1, year=2027))
    assert ask("병원 2일 10-14", new_years_eve) == (
        "hospital", at(2, 10, month=1, year=2027), at(2, 14, month=1, year=2027))


def test_overlong_text_is_not_an_ask() -> None:
    assert ask("병원 내일 10-14" + " " * 300) is None


@given(st.text(max_size=60))
def test_never_raises(text: str) -> None:
    found = parse_request(text, NOW, SEOUL)
    assert found is None or (found.start < found.end and found.start.tzinfo is not None)


_PARTS = st.sampled_from(["병원", "센터", "hospital", "내일", "오늘", "모레", "11/27", "27일",
                          "11월", "오후", "오전", "pm", "am", "10", "14", "2", "-", "~", "시",
                          ":", "30", "반", "부터", "까지", "분", " ", "　", "/", "일", "24",
                          "0", "99", "신청", "네", "취소"])


@given(st.lists(_PARTS, max_size=12).map("".join),
       st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                    timezones=st.just(UTC)))
def test_never_raises_on_near_misses(text: str, now: datetime) -> None:
    found = parse_request(text, now, SEOUL)
    if found is not None:
        assert found.start < found.end
        assert found.end - found.start <= timedelta(hours=24)
        assert found.service in {"hospital", "emergency-center"}
