"""SMS intake grammar: a registered parent asks for care in one text, e.g. ``병원 내일 10-14``.

A request is three parts in any order, with or without spaces between them:

* a service word (required): ``병원``/``입원``/``입원아동돌봄``/``hospital`` → ``hospital``;
  ``센터``/``긴급``/``center``/``centre`` → ``emergency-center``; ``돌봄`` may follow (``병원 돌봄``);
* a day (optional, today when left out): ``오늘``/``today``, ``내일``/``tomorrow``, ``모레``,
  ``11/27``, ``11월 27일`` or ``27일``;
* hours (required): ``10-14``, ``10~14``, ``10시-14시``, ``10시부터 14시까지``, ``10:30-14``,
  ``10시 반-14시``, ``오후 2-6``, ``pm 2-6``, ``2-6pm``, ``10am-2pm``.

Besides those only a few polite words are allowed (``신청``, ``요청``, ``부탁해요``, ``please``, …);
anything else means the text is not an intake request and the answer is None, so a command
("네", "취소", "YES 1234") or a chat message is never read as one.

How hours are read (the parent sees the result in the confirmation question before anything is
booked, so a plausible reading is better than a refusal):

* ``오전``/``오후``/``am``/``pm`` on one side also applies to the other side when that keeps the
  end after the start: ``오후 2-6`` is 14:00-18:00, ``2-6pm`` too, but ``10-2pm`` is 10:00-14:00;
* hours without a meridiem are 24-hour; an end at or before the start means the afternoon when
  that fits (``10-2`` and ``9-5`` are 10:00-14:00 and 09:00-17:00) and the next day otherwise
  (``22-6``, ``오후 10-2``); ``24`` may end a range (``20-24``). A range that ends where it
  starts is not understood.
* ``11/27`` is this year's date, or next year's when this year's is more than a month gone (in
  late December ``1/3`` is January 3rd); a recently passed date stays in the past, so the policy
  tells the parent it is over. ``27일`` is this month's 27th, or next month's once it has passed.

Full-width characters from a Korean IME, case and spacing don't matter (NFKC). Pure function, no
I/O; `parse_request` never raises for any `str`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from notifiers.grammar import fold

HOSPITAL: Final = "hospital"
EMERGENCY_CENTER: Final = "emergency-center"

MAX_LENGTH: Final = 200  # an intake request is a few words; longer texts are something else

SERVICE_WORDS: Final[dict[str, str]] = {
    "입원아동돌봄": HOSPITAL,
    "병원": HOSPITAL,
    "입원": HOSPITAL,
    "hospital": HOSPITAL,
    "센터": EMERGENCY_CENTER,
    "긴급": EMERGENCY_CENTER,
    "center": EMERGENCY_CENTER,
    "centre": EMERGENCY_CENTER,
}
DAY_WORDS: Final[dict[str, int]] = {"오늘": 0, "today": 0, "내일": 1, "tomorrow": 1, "모레": 2}
FILLER_WORDS: Final[tuple[str, ...]] = (
    "부탁드립니다", "부탁드려요", "부탁합니다", "부탁해요", "신청합니다", "신청해요", "요청합니다",
    "요청해요", "신청", "요청", "돌봄", "please", "pls",
)


@dataclass(frozen=True)
class IntakeRequest:
    service: str  # a policy id: "hospital" or "emergency-center"
    start: datetime  # aware, in the time zone given to parse_request
    end: datetime


def _alternation(words: Iterable[str]) -> str:
    # Longest first, so 입원아동돌봄 wins over 입원 and 부탁드립니다 over 부탁.
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_MERIDIEM = r"오전|오후|a\.?m\.?|p\.?m\.?"


def _side(n: int) -> str:
    return (
        rf"(?:(?P<pre{n}>{_MERIDIEM})\s*)?"
        rf"(?P<h{n}>[0-9]{{1,2}})"
        rf"(?:\s*:\s*(?P<m{n}>[0-9]{{2}})"
        rf"|\s*시(?:\s*(?:(?P<k{n}>[0-9]{{1,2}})\s*분|(?P<half{n}>반)))?)?"
        rf"(?:\s*(?P<suf{n}>a\.?m\.?|p\.?m\.?))?"
    )


_RANGE = re.compile(_side(1) + r"\s*(?:-|~|–|—|〜|부터|에서)\s*" + _side(2) + r"(?:\s*까지)?")
_DAY = re.compile(
    rf"(?P<word>{_alternation(DAY_WORDS)})"
    r"|(?P<mo>[0-9]{1,2})\s*/\s*(?P<d>[0-9]{1,2})"
    r"|(?P<mo2>[0-9]{1,2})\s*월\s*(?P<d2>[0-9]{1,2})\s*일"
    r"|(?P<d3>[0-9]{1,2})\s*일"
)
_SERVICE = re.compile(rf"(?P<word>{_alternation(SERVICE_WORDS)})(?:\s*돌봄)?")
_FILLER = re.compile(_alternation(FILLER_WORDS))
_GAP = re.compile(r"[\s,.]*")


def _normalize(text: str) -> str:
    return fold(text).lower()


def _meridiem(pre: str | None, suf: str | None) -> str | None:
    """'am', 'pm' or None (none given); ValueError for two that disagree (오전 2pm)."""
    found = {("am" if w.startswith(("오전", "a")) else "pm") for w in (pre, suf) if w}
    if len(found) > 1:
        raise ValueError("two meridiems that disagree")
    return found.pop() if found else None


def _hour(h: int, meridiem: str | None) -> int | None:
    """The 24-hour hour of `h` read with `meridiem`, or None when they don't go together."""
    if meridiem is None:
        return h
    if meridiem == "am":
        return 0 if h == 12 else h if h <= 11 else None
    return 12 if h == 12 else h + 12 if 1 <= h <= 11 else h if 13 <= h <= 23 else None


def _minutes(match: re.Match[str], n: int) -> int | None:
    if match.group(f"half{n}"):
        return 30
    raw = match.group(f"m{n}") or match.group(f"k{n}")
    minutes = int(raw) if raw else 0
    return minutes if minutes <= 59 else None


def _hours(match: re.Match[str]) -> tuple[int, int] | None:
    """(start, end) in minutes after midnight of the day; end may run into the next day."""
    h1, h2 = int(match.group("h1")), int(match.group("h2"))
    m1, m2 = _minutes(match, 1), _minutes(match, 2)
    mer1 = _meridiem(match.group("pre1"), match.group("suf1"))
    mer2 = _meridiem(match.group("pre2"), match.group("suf2"))
    if m1 is None or m2 is None:
        return None
    start_h, end_h = _hour(h1, mer1), _hour(h2, mer2)
    if start_h is None or end_h is None or start_h > 23 or end_h > 24 or (end_h == 24 and m2):
        return None
    end_fixed = mer2 is not None
    if mer1 is not None and mer2 is None:
        inherited = _hour(h2, mer1)
        if inherited is not None and inherited * 60 + m2 > start_h * 60 + m1:
            end_h, end_fixed = inherited, True
    elif mer2 is not None and mer1 is None:
        inherited = _hour(h1, mer2)
        if inherited is not None and inherited * 60 + m1 < end_h * 60 + m2:
            start_h = inherited
    start, end = start_h * 60 + m1, end_h * 60 + m2
    if start == end:
        return None
    if end < start:
        if not end_fixed and end_h < 12 and end + 12 * 60 > start:
            end += 12 * 60  # 10-2: until two in the afternoon
        else:
            end += 24 * 60  # 22-6: overnight
    return start, end


def _day(match: re.Match[str], today: date) -> date:
    word = match.group("word")
    if word:
        return today + timedelta(days=DAY_WORDS[word])
    month = match.group("mo") or match.group("mo2")
    if month:
        day = int(match.group("d") or match.group("d2"))
        found = date(today.year, int(month), day)
        if found < today - timedelta(days=31):
            found = date(today.year + 1, int(month), day)
        return found
    day = int(match.group("d3"))
    if day >= today.day:
        return date(today.year, today.month, day)
    first_next = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    return first_next.replace(day=day)


def parse_request(text: str, now: datetime, tz: ZoneInfo) -> IntakeRequest | None:
    """Read `text` as a request for care; None when it is not one (or not one we understand).

    `now` fixes what 오늘/내일 and a bare date mean, in `tz` (the service's time zone).
    """
    try:
        return _parse(text, now, tz)
    except (ValueError, OverflowError):  # an impossible date such as 2/30, 오전 2pm
        return None


def _parse(text: str, now: datetime, tz: ZoneInfo) -> IntakeRequest | None:
    if len(text) > MAX_LENGTH:
        return None
    body = _normalize(text)
    service: str | None = None
    hours: tuple[int, int] | None = None
    day_match: re.Match[str] | None = None
    pos = 0
    while True:
        gap = _GAP.match(body, pos)
        pos = gap.end() if gap else pos
        if pos >= len(body):
            break
        if (m := _RANGE.match(body, pos)) is not None:
            if hours is not None:
                return None
            hours = _hours(m)
            if hours is None:
                return None
        elif (m := _DAY.match(body, pos)) is not None:
            if day_match is not None:
                return None
            day_match = m
        elif (m := _SERVICE.match(body, pos)) is not None:
            if service is not None:
                return None
            service = SERVICE_WORDS[m.group("word")]
        elif (m := _FILLER.match(body, pos)) is not None:
            pass
        else:
            return None
        pos = m.end()
    if service is None or hours is None:
        return None
    today = now.astimezone(tz).date()
    day = _day(day_match, today) if day_match is not None else today
    midnight = datetime.combine(day, time(0), tz)
    return IntakeRequest(service=service, start=midnight + timedelta(minutes=hours[0]),
                         end=midnight + timedelta(minutes=hours[1]))
