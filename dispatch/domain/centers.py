"""Centre mode: a service's centres, who may come when, and the staff-to-child ratio.

At an emergency centre (DOMAIN.md §1a) no carer is sent out: the parent brings the child,
and the child joins the group of one carer on shift there. A booking therefore needs a
place in a group, not a carer's YES. Two rules decide whether there is a place:

- the **ratio**: one carer cares for at most `ratio` children (5), or `ratio_sensitive` (3)
  while any child in the group is "sensitive" (under `sensitive_under_months`, or disabled);
- **at every moment**: children come and go during a carer's shift, so a booking fits a
  group when the group keeps its ratio at each moment of the new booking's window -- not
  when the number of bookings touching the window happens to be small enough.

The policy file's `[center]` section is `CenterRules`. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dispatch.domain.errors import Ineligible
from dispatch.domain.hours import Window, parse_hours, within_hours

# Korean surnames of two syllables: what is left of "남궁민수" after the surname is "민수".
_TWO_SYLLABLE_SURNAMES = frozenset({"남궁", "황보", "제갈", "선우", "독고", "사공", "서문",
                                    "동방", "어금", "망절"})


class Center(BaseModel):
    """One centre: where it is known by, and when it takes children."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(min_length=1, max_length=50)
    name: str = Field(min_length=1)
    name_ko: str = Field(min_length=1)
    hours: dict[str, list[Window]]

    @field_validator("hours", mode="before")
    @classmethod
    def _parse_hours(cls, value: object) -> object:
        return parse_hours(value)

    def label(self, lang: str) -> str:
        """The centre's name for an SMS: English only for people who asked for English."""
        return self.name if lang.lower().startswith("en") else self.name_ko

    def within_hours(self, tz: ZoneInfo, start: datetime, end: datetime) -> bool:
        return within_hours(self.hours, tz, start, end)


class CenterRules(BaseModel):
    """A centre-mode policy's `[center]` section (DOMAIN.md §1a)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    centers: list[Center] = Field(min_length=1)
    ratio: int = Field(default=5, ge=1)
    ratio_sensitive: int = Field(default=3, ge=1)
    # A child under this age (at the booking's start) makes the group "sensitive" (1:3).
    sensitive_under_months: int = Field(default=12, ge=0)
    # Within `after_midnight` (local) only children of at least this age.
    after_midnight_min_age_months: int = Field(default=13, ge=0)
    after_midnight: Window = Window(start=time(0), end=time(6))
    # "An under-12-month booking can be refused even after it was confirmed": such a booking
    # is held provisionally until a dispatcher confirms it.
    provisional_under_months: int = Field(default=12, ge=0)

    @field_validator("after_midnight", mode="before")
    @classmethod
    def _parse_window(cls, value: object) -> object:
        return Window.parse(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> CenterRules:
        ids = [c.id for c in self.centers]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"centre id used twice: {', '.join(twice)}")
        if self.ratio_sensitive > self.ratio:
            raise ValueError(f"ratio_sensitive ({self.ratio_sensitive}) is more than "
                             f"ratio ({self.ratio})")
        return self

    def center(self, center_id: object) -> Center | None:
        return next((c for c in self.centers if c.id == center_id), None)

    def open_for(self, tz: ZoneInfo, start: datetime, end: datetime) -> Center | None:
        """The first centre (in the policy's order) open for the whole window: where a parent
        who asked by SMS or phone, and could not name a centre, is booked."""
        return next((c for c in self.centers if c.within_hours(tz, start, end)), None)

    def resolve(self, location: Mapping[str, object]) -> Center:
        """The centre a request names, or Ineligible with the contract's code."""
        center_id = location.get("center_id")
        if not center_id:
            known = ", ".join(c.id for c in self.centers)
            raise Ineligible(f"location needs center_id (one of {known})",
                             code="location_required")
        center = self.center(center_id)
        if center is None:
            known = ", ".join(c.id for c in self.centers)
            raise Ineligible(f"unknown centre {center_id!r}; known: {known}",
                             code="unknown_center")
        return center

    def is_sensitive(self, age_months: int, disability: bool) -> bool:
        return disability or age_months < self.sensitive_under_months

    def is_provisional(self, age_months: int) -> bool:
        return age_months < self.provisional_under_months

    def capacity(self, sensitive_present: bool) -> int:
        return self.ratio_sensitive if sensitive_present else self.ratio

    def after_midnight_dates(self, tz: ZoneInfo, start: datetime, end: datetime) -> list[date]:
        """The local dates whose after-midnight window [start, end) overlaps (by a minute or
        more: a booking that ends at 00:00 sharp does not touch it)."""
        w = self.after_midnight
        local_start, local_end = start.astimezone(tz), end.astimezone(tz)
        dates: list[date] = []
        day = local_start.date() - timedelta(days=1)
        while day <= local_end.date():
            w_start = datetime.combine(day, w.start, tz)
            w_end = datetime.combine(day if w.end > w.start else day + timedelta(days=1),
                                     w.end, tz)
            if w_start < local_end and local_start < w_end:
                dates.append(day)
            day += timedelta(days=1)
        return dates


def find_center(rules: Iterable[CenterRules | None], center_id: str) -> Center | None:
    """The centre with this id in any of the given centre sections."""
    for section in rules:
        found = section.center(center_id) if section is not None else None
        if found is not None:
            return found
    return None


# -- the ratio rule --------------------------------------------------------------------------

class Stay(Protocol):
    """What the ratio rule needs of a booking; CenterBooking rows and `Booking` both are."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...

    @property
    def sensitive(self) -> bool: ...


@dataclass(frozen=True)
class Booking:
    """A child's stay in a group: present from `start` (inclusive) to `end` (exclusive)."""

    start: datetime
    end: datetime
    sensitive: bool = False


@dataclass(frozen=True)
class GroupLoad:
    """A group at one moment: children present, how many sensitive, the capacity then."""

    children: int
    sensitive: int
    capacity: int

    @property
    def free(self) -> int:
        return max(self.capacity - self.children, 0)


def _present(stays: Iterable[Stay], at: datetime) -> list[Stay]:
    return [s for s in stays if s.start <= at < s.end]


def load_at(group: Iterable[Stay], at: datetime, *, ratio: int = 5,
            ratio_sensitive: int = 3) -> GroupLoad:
    present = _present(group, at)
    sensitive = sum(1 for s in present if s.sensitive)
    return GroupLoad(children=len(present), sensitive=sensitive,
                     capacity=ratio_sensitive if sensitive else ratio)


def _moments(group: Sequence[Stay], start: datetime, end: datetime) -> list[datetime]:
    """The moments in [start, end) at which who is present can change: the window's start and
    every arrival or departure inside it. Between two of them the group is constant, so
    checking these is checking every moment."""
    inside = {t for s in group for t in (s.start, s.end) if start < t < end}
    return sorted(inside | {start})


def fits(group: Sequence[Stay], new: Stay, *, ratio: int = 5, ratio_sensitive: int = 3) -> bool:
    """Whether the group keeps its ratio at every moment of `new`'s window once `new` joins.

    At each moment the capacity is `ratio_sensitive` if any child present then (the new one
    included) is sensitive, else `ratio`; the children present must not exceed it.
    """
    if new.end <= new.start:
        return True  # an empty stay adds nobody at any moment
    overlapping = [s for s in group if s.start < new.end and new.start < s.end]
    everyone = [*overlapping, new]
    for at in _moments(overlapping, new.start, new.end):
        load = load_at(everyone, at, ratio=ratio, ratio_sensitive=ratio_sensitive)
        if load.children > load.capacity:
            return False
    return True


def peak(group: Sequence[Stay], start: datetime, end: datetime) -> int:
    """The most children present at once in the group during [start, end)."""
    if end <= start:
        return 0
    return max(len(_present(group, at)) for at in _moments(group, start, end))


def place_booking(groups: Mapping[str, Sequence[Stay]], new: Stay, *, ratio: int = 5,
                  ratio_sensitive: int = 3) -> str | None:
    """The carer whose group takes `new`, or None when no group keeps its ratio with it.

    Among the groups it fits, the fullest wins (most children at once during the window;
    then the carer id, so the choice is repeatable). Why the fullest: an infant or a disabled
    child turns a group into a 1:3 group, so it can only join a group that has at most two
    other children then. Filling up groups that are already busy keeps the small and empty
    groups small, and so keeps a place for the next infant; spreading children evenly would
    soon leave every group at three or more, with room for older children only.
    """
    best: tuple[int, str] | None = None
    for carer_id, group in groups.items():
        if not fits(group, new, ratio=ratio, ratio_sensitive=ratio_sensitive):
            continue
        key = (-peak(group, new.start, new.end), carer_id)
        if best is None or key < best:
            best = key
    return best[1] if best is not None else None


def first_name(full_name: str) -> str:
    """What a child is called by at the centre: the given name, without the surname.

    "박서연" → "서연", "남궁민수" → "민수"; a name written with spaces is taken to be in
    Western order ("Seoyeon Park" → "Seoyeon"), and a short or unusual name is kept whole.
    """
    name = " ".join(full_name.split())
    if " " in name:
        return name.split(" ", 1)[0]
    if all("가" <= ch <= "힣" for ch in name):
        if len(name) == 4 and name[:2] in _TWO_SYLLABLE_SURNAMES:
            return name[2:]
        if len(name) in (3, 4):
            return name[1:]
    return name
