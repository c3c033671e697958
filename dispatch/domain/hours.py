"""Opening hours in local time: windows per weekday, and the concrete intervals they open.

A service policy has hours, and so does each centre of a centre-mode service
(dispatch/domain/centers.py); both are read and checked by the functions here.
`hours` maps "mon".."sun" (or "daily", for every day not named) to a list of windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Hours = Mapping[str, Sequence["Window"]]


class Window(BaseModel):
    """An opening window in local time; `end` ≤ `start` means it runs past midnight."""

    model_config = ConfigDict(frozen=True)
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        try:
            a, b = (part.strip() for part in text.split("-"))
            return cls(start=time.fromisoformat(a), end=time.fromisoformat(b))
        except ValueError as exc:
            raise ValueError(f"window {text!r} is not HH:MM-HH:MM") from exc


def parse_hours(value: object) -> object:
    """A pydantic "before" validator for an hours table: `{"mon": ["18:00-09:00"], ...}`."""
    if not isinstance(value, dict):
        return value
    parsed: dict[str, list[Window]] = {}
    for day, windows in value.items():
        if day not in WEEKDAYS and day != "daily":
            raise ValueError(f"unknown day {day!r}; use one of {', '.join(WEEKDAYS)} or daily")
        if not isinstance(windows, list):
            raise ValueError(f"{day}: give a list of windows, e.g. [\"08:00-20:00\"]")
        parsed[day] = [Window.parse(w) if isinstance(w, str) else w for w in windows]
    return parsed


def windows_on(hours: Hours, day: date) -> list[Window]:
    return list(hours.get(WEEKDAYS[day.weekday()], hours.get("daily", [])))


def open_intervals(hours: Hours, tz: ZoneInfo, first: date,
                   last: date) -> list[tuple[datetime, datetime]]:
    """Concrete opening intervals from `first` to `last`, merged where they touch."""
    spans: list[tuple[datetime, datetime]] = []
    day = first
    while day <= last:
        for w in windows_on(hours, day):
            start = datetime.combine(day, w.start, tz)
            end_day = day if w.end > w.start else day + timedelta(days=1)
            spans.append((start, datetime.combine(end_day, w.end, tz)))
        day += timedelta(days=1)
    spans.sort()
    merged: list[tuple[datetime, datetime]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def within_hours(hours: Hours, tz: ZoneInfo, start: datetime, end: datetime) -> bool:
    """Whether [start, end] lies inside one opening interval (touching windows merge)."""
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    intervals = open_intervals(hours, tz, local_start.date() - timedelta(days=1),
                               local_end.date())
    return any(s <= local_start and local_end <= e for s, e in intervals)
