"""Service policies held as data, and the eligibility rules they drive.

A policy file (TOML) says who a service is for, when it runs, what a carer must be able
to do and how offers go out. Code reads policies; nothing here knows about Gwangju.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dispatch.domain.errors import Ineligible

LEAD_GRACE_MINUTES = 5
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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


class OfferRules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    strategy: Literal["broadcast", "waves", "sequential"] = "broadcast"
    wave_size: int = Field(default=5, ge=1)
    timeout_s: int = Field(default=600, ge=30)


class ServicePolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    label: str
    label_en: str = ""
    mode: Literal["center", "visit"]
    timezone: str = "Asia/Seoul"
    min_age_months: int = Field(ge=0)
    max_age_months: int = Field(ge=0)
    hours: dict[str, list[Window]]
    required_skills: list[str] = []
    requires_health_consent: bool = False
    location_fields: list[str] = []
    min_lead_minutes: int = 0
    max_lead_minutes: int | None = None
    min_duration_minutes: int = 30
    max_duration_minutes: int = 12 * 60
    escalate_after_s: int = Field(default=900, ge=60)
    travel_buffer_minutes: int = 30
    offers: OfferRules = OfferRules()

    @field_validator("hours", mode="before")
    @classmethod
    def _parse_hours(cls, value: object) -> object:
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

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def windows_on(self, day: date) -> list[Window]:
        return self.hours.get(WEEKDAYS[day.weekday()], self.hours.get("daily", []))

    def open_intervals(self, first: date, last: date) -> list[tuple[datetime, datetime]]:
        """Concrete opening intervals from `first` to `last`, merged where they touch."""
        spans: list[tuple[datetime, datetime]] = []
        day = first
        while day <= last:
            for w in self.windows_on(day):
                start = datetime.combine(day, w.start, self.tz)
                end_day = day if w.end > w.start else day + timedelta(days=1)
                spans.append((start, datetime.combine(end_day, w.end, self.tz)))
            day += timedelta(days=1)
        spans.sort()
        merged: list[tuple[datetime, datetime]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        return merged

    def within_hours(self, start: datetime, end: datetime) -> bool:
        local_start, local_end = start.astimezone(self.tz), end.astimezone(self.tz)
        intervals = self.open_intervals(local_start.date() - timedelta(days=1), local_end.date())
        return any(s <= local_start and local_end <= e for s, e in intervals)


class PolicyError(Exception):
    """A policy file that can't be used; the message names the file and the field."""


def load_policy(path: Path) -> ServicePolicy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    try:
        return ServicePolicy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
            for err in exc.errors())
        raise PolicyError(f"{path}: {problems}") from exc


def load_policies(folder: Path | None = None) -> dict[str, ServicePolicy]:
    """The policies in `folder`, or the built-in ones when it is None."""
    if folder is None:
        base = resources.files("dispatch") / "policies"
        paths: Iterable[Path] = sorted(Path(str(base)).glob("*.toml"))
    else:
        if not folder.is_dir():
            raise PolicyError(f"{folder}: DOLBOM_POLICY_DIR is not a folder")
        paths = sorted(folder.glob("*.toml"))
    policies: dict[str, ServicePolicy] = {}
    for path in paths:
        policy = load_policy(path)
        if policy.id in policies:
            raise PolicyError(f"{path}: id {policy.id!r} is used by another policy file")
        policies[policy.id] = policy
    if not policies:
        raise PolicyError(f"{folder}: no policy files (*.toml)")
    return policies


def age_in_months(birth: date, on: date) -> int:
    """Whole months lived, counted the way a birthday is: a month is complete on the same day."""
    months = (on.year - birth.year) * 12 + (on.month - birth.month)
    if on.day < birth.day:
        # A child born on the 31st completes a month on the last day of a shorter month.
        next_month_first = date(on.year + on.month // 12, on.month % 12 + 1, 1)
        last_day = (next_month_first - timedelta(days=1)).day
        if not (on.day == last_day and birth.day > last_day):
            months -= 1
    return months


def check_request(policy: ServicePolicy, *, birth_date: date, start: datetime, end: datetime,
                  location: dict[str, object], now: datetime,
                  consent_health_data: bool) -> None:
    """Raise Ineligible with the contract's code when the policy can't serve this request."""
    if start.tzinfo is None or end.tzinfo is None:
        raise Ineligible("times need an offset, e.g. 2026-11-26T10:00:00+09:00",
                         code="invalid_time")
    if end <= start:
        raise Ineligible("end must be after start", code="invalid_time")
    duration = (end - start).total_seconds() / 60
    if duration < policy.min_duration_minutes or duration > policy.max_duration_minutes:
        raise Ineligible(
            f"{policy.label}: a booking lasts {policy.min_duration_minutes}–"
            f"{policy.max_duration_minutes} minutes", code="duration_out_of_range")
    if end <= now:
        raise Ineligible("the requested time is already over", code="invalid_time")
    lead = (start - now).total_seconds() / 60
    # A few minutes of grace: "from now" typed on a phone is already a minute old.
    if lead < policy.min_lead_minutes - LEAD_GRACE_MINUTES or (
            policy.max_lead_minutes is not None and lead > policy.max_lead_minutes):
        raise Ineligible(f"{policy.label}: book between {policy.min_lead_minutes} and "
                         f"{policy.max_lead_minutes} minutes ahead", code="lead_time")
    months = age_in_months(birth_date, start.astimezone(policy.tz).date())
    if not policy.min_age_months <= months <= policy.max_age_months:
        raise Ineligible(
            f"{policy.label} is for children aged {policy.min_age_months}–"
            f"{policy.max_age_months} months; this child is {months} months",
            code="age_out_of_range")
    if not policy.within_hours(start, end):
        raise Ineligible(f"{policy.label} runs only within its service hours",
                         code="outside_service_hours")
    missing = [f for f in policy.location_fields if not location.get(f)]
    if missing:
        raise Ineligible(f"location needs {', '.join(missing)}", code="location_required")
    if policy.requires_health_consent and not consent_health_data:
        raise Ineligible("this service records a hospital admission: the family must consent "
                         "to health data (consent.health_data)", code="health_consent_required")
