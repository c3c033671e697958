"""Fees as data, and the price of one booking.

A policy's optional `[fees]` section says what an hour costs, whether night hours cost
more, and whether a monthly subsidy cap applies (DOMAIN.md §1a, §1b, §1c). `quote` is
pure: it gets the booking and what the child has already used this month, and prices it.

How a booking is priced (the rules the tests pin down):

- **Per minute, pro rata.** Start and end are cut to the whole minute; every minute is
  charged at the rate in force in that minute, so a booking 21:00–23:00 with a 22:00 night
  window is one hour at the day rate and one at the night rate. Minutes at one rate are added
  up into one breakdown line, and each line is rounded to the won (half up), so the total is
  the sum of its lines. Nothing is rounded up to a whole hour; minimum booking lengths are
  the policy's eligibility rules (`min_duration_minutes`), not a fee rule.
- **Night.** `[fees.night]` gives a local window (it may run past midnight, "22:00-06:00")
  and either a night `hourly_krw` or a `surcharge_percent` on the day rate (the night rate
  is then rounded to the won).
- **Subsidy cap**, per child and calendar month (in the policy's time zone), counted over
  the bookings that started earlier in the month: the subsidised rates apply while the child
  stays within *both* limits, so **the subsidy ends at whichever limit is reached first**.
  `max_uses = 7` means the 7th booking of the month is still subsidised and the 8th is not
  (all of it); `max_hours = 80` means the minutes beyond the 80th hour of the month — even in
  the middle of a booking — are not. Beyond the cap one flat `beyond_hourly_krw` applies,
  day or night (DOMAIN.md §1a gives a single figure, ₩5,000/h).
- A booking that straddles midnight at the end of a month counts in the month it starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from dispatch.domain.policy import ServicePolicy

LineKind = Literal["day", "night", "beyond_cap"]


class NightFee(BaseModel):
    """Night hours: a local window (`window = "22:00-06:00"`) and a night rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    start: time
    end: time
    hourly_krw: int | None = Field(default=None, ge=0)
    surcharge_percent: int | None = Field(default=None, ge=0, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _parse_window(cls, value: Any) -> Any:
        if isinstance(value, dict) and "window" in value:
            data = dict(value)
            text = data.pop("window")
            try:
                a, b = (part.strip() for part in str(text).split("-"))
                data["start"], data["end"] = time.fromisoformat(a), time.fromisoformat(b)
            except ValueError as exc:
                raise ValueError(f"window {text!r} is not HH:MM-HH:MM") from exc
            return data
        return value

    @model_validator(mode="after")
    def _one_rate(self) -> NightFee:
        if (self.hourly_krw is None) == (self.surcharge_percent is None):
            raise ValueError("night: give either hourly_krw or surcharge_percent (one of them)")
        if self.start == self.end:
            raise ValueError("night: the window is empty (start = end)")
        return self


class SubsidyCap(BaseModel):
    """The monthly subsidy per child: it ends at whichever limit is reached first."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_uses: int | None = Field(default=None, ge=0)
    max_hours: float | None = Field(default=None, ge=0)
    beyond_hourly_krw: int = Field(ge=0)

    @model_validator(mode="after")
    def _some_limit(self) -> SubsidyCap:
        if self.max_uses is None and self.max_hours is None:
            raise ValueError("subsidy_cap: give max_uses, max_hours or both")
        return self

    @property
    def max_minutes(self) -> int | None:
        return None if self.max_hours is None else round(self.max_hours * 60)


class FeeRules(BaseModel):
    """A policy's `[fees]` section. Amounts are whole Korean won per hour."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    hourly_krw: int = Field(ge=0)
    night: NightFee | None = None
    subsidy_cap: SubsidyCap | None = None

    @property
    def night_hourly_krw(self) -> int | None:
        if self.night is None:
            return None
        if self.night.hourly_krw is not None:
            return self.night.hourly_krw
        assert self.night.surcharge_percent is not None
        return _round_half_up(self.hourly_krw * (100 + self.night.surcharge_percent), 100)


@dataclass(frozen=True)
class Usage:
    """What the child used of this service earlier in the same calendar month."""

    uses: int = 0
    minutes: int = 0


@dataclass(frozen=True)
class QuoteLine:
    kind: LineKind
    minutes: int
    hourly_krw: int
    amount_krw: int


@dataclass(frozen=True)
class Quote:
    total_krw: int
    breakdown: tuple[QuoteLine, ...]
    # True when the policy has a subsidy cap and every minute of this booking is within it.
    subsidised: bool

    def as_dict(self) -> dict[str, Any]:
        return {"fee_krw": self.total_krw, "subsidised": self.subsidised,
                "breakdown": [{"kind": line.kind, "minutes": line.minutes,
                               "hourly_krw": line.hourly_krw, "amount_krw": line.amount_krw}
                              for line in self.breakdown]}


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def _to_minute(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(second=0, microsecond=0)


def _minutes(a: datetime, b: datetime) -> int:
    return int((b - a).total_seconds() // 60)


def _night_spans(night: NightFee, tz: ZoneInfo, first: date, last: date
                 ) -> list[tuple[datetime, datetime]]:
    spans = []
    day = first
    while day <= last:
        end_day = day if night.end > night.start else day + timedelta(days=1)
        spans.append((datetime.combine(day, night.start, tz).astimezone(UTC),
                      datetime.combine(end_day, night.end, tz).astimezone(UTC)))
        day += timedelta(days=1)
    return spans


def price(rules: FeeRules, tz: ZoneInfo, start: datetime, end: datetime,
          usage: Usage = Usage()) -> Quote:
    """The price of [start, end) under `rules`; `usage` is the child's month so far."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end need a time zone")
    if end < start:
        raise ValueError("end is before start")
    a, b = _to_minute(start), _to_minute(end)
    cap = rules.subsidy_cap
    beyond_from: datetime | None = None  # the first minute past the subsidy cap
    if cap is not None:
        if cap.max_uses is not None and usage.uses >= cap.max_uses:
            beyond_from = a
        elif cap.max_minutes is not None:
            beyond_from = a + timedelta(minutes=max(0, cap.max_minutes - usage.minutes))
    nights: list[tuple[datetime, datetime]] = []
    if rules.night is not None:
        nights = _night_spans(rules.night, tz, a.astimezone(tz).date() - timedelta(days=1),
                              b.astimezone(tz).date())
    cuts = {a, b}
    cuts.update(t for span in nights for t in span if a < t < b)
    if beyond_from is not None and a < beyond_from < b:
        cuts.add(beyond_from)
    minutes: dict[LineKind, int] = {"day": 0, "night": 0, "beyond_cap": 0}
    points = sorted(cuts)
    for lo, hi in zip(points, points[1:], strict=False):
        kind: LineKind
        if beyond_from is not None and lo >= beyond_from:
            kind = "beyond_cap"
        elif any(s <= lo < e for s, e in nights):
            kind = "night"
        else:
            kind = "day"
        minutes[kind] += _minutes(lo, hi)
    rates: dict[LineKind, int] = {
        "day": rules.hourly_krw,
        "night": rules.night_hourly_krw if rules.night_hourly_krw is not None
        else rules.hourly_krw,
        "beyond_cap": cap.beyond_hourly_krw if cap is not None else rules.hourly_krw,
    }
    lines = tuple(QuoteLine(kind=kind, minutes=m, hourly_krw=rates[kind],
                            amount_krw=_round_half_up(m * rates[kind], 60))
                  for kind, m in minutes.items() if m > 0)
    return Quote(total_krw=sum(line.amount_krw for line in lines), breakdown=lines,
                 subsidised=cap is not None and minutes["beyond_cap"] == 0)


def quote(policy: ServicePolicy, start: datetime, end: datetime,
          usage_this_month: Usage | None = None) -> Quote:
    """The price of a booking under `policy`'s `[fees]` (ValueError if it has none)."""
    if policy.fees is None:
        raise ValueError(f"policy {policy.id!r} has no [fees] section")
    return price(policy.fees, policy.tz, start, end, usage_this_month or Usage())


def month_bounds(policy: ServicePolicy, when: datetime) -> tuple[datetime, datetime]:
    """The calendar month (in the policy's time zone) that `when` falls in, as [first, next)."""
    local = when.astimezone(policy.tz)
    first = datetime(local.year, local.month, 1, tzinfo=policy.tz)
    following = datetime(local.year + local.month // 12, local.month % 12 + 1, 1,
                         tzinfo=policy.tz)
    return first, following


def usage_of(bookings: Iterable[tuple[datetime, datetime]]) -> Usage:
    """Usage from earlier bookings' (start, end): one use each, minutes as `quote` counts them."""
    uses = minutes = 0
    for start, end in bookings:
        uses += 1
        minutes += max(0, _minutes(_to_minute(start), _to_minute(end)))
    return Usage(uses=uses, minutes=minutes)
