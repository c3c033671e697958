"""Service policies held as data, and the eligibility rules they drive.

A policy file (TOML) says who a service is for, when it runs, what a carer must be able
to do and how offers go out. Code reads policies; nothing here knows about Gwangju.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dispatch.domain.centers import CenterRules
from dispatch.domain.errors import Ineligible
from dispatch.domain.fees import FeeRules

# Opening hours (Window, WEEKDAYS, the intervals they open) live in dispatch/domain/hours.py,
# shared with the centres of a centre-mode policy; Window and WEEKDAYS are re-exported here.
from dispatch.domain.hours import WEEKDAYS as WEEKDAYS
from dispatch.domain.hours import Window as Window
from dispatch.domain.hours import open_intervals, parse_hours, windows_on, within_hours

LEAD_GRACE_MINUTES = 5


class OfferRules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    strategy: Literal["broadcast", "waves", "sequential"] = "broadcast"
    wave_size: int = Field(default=5, ge=1)
    # ≥ 1 so tests can run the engine on short clocks; real policies use minutes.
    timeout_s: int = Field(default=600, ge=1)


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
    escalate_after_s: int = Field(default=900, ge=1)
    travel_buffer_minutes: int = 30
    offers: OfferRules = OfferRules()
    # Fees and the monthly subsidy cap (dispatch/domain/fees.py); None: not priced here.
    fees: FeeRules | None = None
    # Centre mode: the centres, their hours and the staff ratio (dispatch/domain/centers.py).
    center: CenterRules | None = None

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ServicePolicy:
        pairs = [("min_age_months", "max_age_months"),
                 ("min_duration_minutes", "max_duration_minutes"),
                 ("min_lead_minutes", "max_lead_minutes")]
        for low, high in pairs:
            a, b = getattr(self, low), getattr(self, high)
            if b is not None and a > b:
                raise ValueError(f"{high} ({b}) is less than {low} ({a})")
        return self

    @field_validator("hours", mode="before")
    @classmethod
    def _parse_hours(cls, value: object) -> object:
        return parse_hours(value)

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
        return windows_on(self.hours, day)

    def open_intervals(self, first: date, last: date) -> list[tuple[datetime, datetime]]:
        """Concrete opening intervals from `first` to `last`, merged where they touch."""
        return open_intervals(self.hours, self.tz, first, last)

    def within_hours(self, start: datetime, end: datetime) -> bool:
        return within_hours(self.hours, self.tz, start, end)


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
    # Centre mode: the request names a centre, and that centre's hours are the ones that count.
    center = policy.center.resolve(location) if policy.center is not None else None
    if center is not None:
        if not center.within_hours(policy.tz, start, end):
            raise Ineligible(f"{center.name_ko} runs only within its opening hours",
                             code="outside_service_hours")
    elif not policy.within_hours(start, end):
        raise Ineligible(f"{policy.label} runs only within its service hours",
                         code="outside_service_hours")
    if policy.center is not None:
        rules = policy.center
        for night in rules.after_midnight_dates(policy.tz, start, end):
            if age_in_months(birth_date, night) < rules.after_midnight_min_age_months:
                raise Ineligible(
                    f"after-midnight rule: between {rules.after_midnight.start:%H:%M} and "
                    f"{rules.after_midnight.end:%H:%M} only children of "
                    f"{rules.after_midnight_min_age_months} months or older can stay; "
                    f"this child is {age_in_months(birth_date, night)} months then",
                    code="age_out_of_range")
    missing = [f for f in policy.location_fields if not location.get(f)]
    if missing:
        raise Ineligible(f"location needs {', '.join(missing)}", code="location_required")
    if policy.requires_health_consent and not consent_health_data:
        raise Ineligible("this service records a hospital admission: the family must consent "
                         "to health data (consent.health_data)", code="health_consent_required")
