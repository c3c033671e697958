"""The domain model: requests, carers, families and children, offers, assignments.

Plain classes mapped imperatively onto tables (dispatch/orm.py), so this module stays free
of I/O and can be tested in milliseconds.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from dispatch.domain.errors import Conflict


def new_id() -> str:
    return uuid.uuid4().hex


class RequestStatus(StrEnum):
    RECEIVED = "received"
    MATCHING = "matching"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ESCALATED = "escalated"


OPEN_STATUSES = frozenset({RequestStatus.RECEIVED, RequestStatus.MATCHING,
                           RequestStatus.ASSIGNED, RequestStatus.IN_PROGRESS,
                           RequestStatus.ESCALATED})
# Only these can still take a carer's YES.
ACCEPTING_STATUSES = frozenset({RequestStatus.MATCHING, RequestStatus.ESCALATED})


class OfferStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    RESCINDED = "rescinded"
    WITHDRAWN = "withdrawn"  # accepted, then the carer pulled out (Request.withdraw)


class Actor(StrEnum):
    PARENT = "parent"
    CARER = "carer"
    DISPATCHER = "dispatcher"
    SYSTEM = "system"


class Carer:
    def __init__(self, *, name: str, phone: str, districts: list[str], skills: list[str],
                 home_lat: float | None = None, home_lon: float | None = None,
                 center_id: str | None = None, lang: str = "ko", id: str | None = None,
                 on_duty: bool = False, opted_out: bool = False, rating: float = 0.0,
                 created_at: datetime | None = None) -> None:
        self.id = id or new_id()
        self.name = name
        self.phone = phone
        self.districts = list(districts)
        self.skills = list(skills)
        self.home_lat = home_lat
        self.home_lon = home_lon
        self.center_id = center_id
        self.lang = lang
        self.on_duty = on_duty
        self.opted_out = opted_out
        self.rating = rating
        self.created_at = created_at

    def has_skills(self, required: Iterable[str]) -> bool:
        return set(required) <= set(self.skills)


class Child:
    def __init__(self, *, name: str, birth_date: date, disability: bool = False,
                 id: str | None = None) -> None:
        self.id = id or new_id()
        self.name = name
        self.birth_date = birth_date
        self.disability = disability


class Family:
    def __init__(self, *, guardian_name: str, guardian_phone: str, district: str,
                 children: list[Child], consent_child_data: bool,
                 consent_health_data: bool = False, address: str | None = None,
                 pickup_guardians: list[str] | None = None, lang: str = "ko",
                 opted_out: bool = False, id: str | None = None,
                 consent_at: datetime | None = None) -> None:
        self.id = id or new_id()
        self.guardian_name = guardian_name
        self.guardian_phone = guardian_phone
        self.district = district
        self.children = children
        self.consent_child_data = consent_child_data
        self.consent_health_data = consent_health_data
        self.consent_at = consent_at
        self.address = address
        self.pickup_guardians = list(pickup_guardians or [])
        self.lang = lang
        self.opted_out = opted_out

    def child(self, child_id: str) -> Child | None:
        return next((c for c in self.children if c.id == child_id), None)


class Offer:
    def __init__(self, *, request_id: str, carer_id: str, created_at: datetime,
                 expires_at: datetime, id: str | None = None,
                 status: OfferStatus = OfferStatus.OPEN) -> None:
        self.id = id or new_id()
        self.request_id = request_id
        self.carer_id = carer_id
        self.created_at = created_at
        self.expires_at = expires_at
        self.status = status
        self.answered_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status == OfferStatus.OPEN


class Assignment:
    def __init__(self, *, request_id: str, carer_id: str, start: datetime, end: datetime,
                 created_at: datetime, id: str | None = None, active: bool = True) -> None:
        self.id = id or new_id()
        self.request_id = request_id
        self.carer_id = carer_id
        self.start = start
        self.end = end
        self.created_at = created_at
        self.active = active


class TimelineEntry:
    def __init__(self, *, request_id: str, at: datetime, type: str, actor: str,
                 detail: dict[str, Any] | None = None, id: str | None = None,
                 seq: int = 0) -> None:
        self.id = id or new_id()
        self.seq = seq
        self.request_id = request_id
        self.at = at
        self.type = type
        self.actor = actor
        self.detail = dict(detail or {})


@dataclass(frozen=True)
class Acceptance:
    """What a YES did: the carer got the job, or the job was already gone."""

    won: bool
    assignment: Assignment | None = None
    reason: str = ""


def new_job_code(rng: random.Random | None = None) -> str:
    return f"{(rng or random.SystemRandom()).randrange(1000, 10000)}"


class Request:
    """A parent's request for care: the aggregate that owns its offers and its assignment.

    Holding offers and the assignment together is what makes "the first YES wins" a
    single-row decision: whoever changes this request's status first gets the job.
    """

    def __init__(self, *, service: str, family_id: str, child_id: str, start: datetime,
                 end: datetime, location: dict[str, Any], code: str, created_at: datetime,
                 notes: str | None = None, id: str | None = None,
                 idempotency_key: str | None = None, created_by: str | None = None,
                 channel: str = "api") -> None:
        self.id = id or new_id()
        self.service = service
        self.family_id = family_id
        self.child_id = child_id
        self.start = start
        self.end = end
        self.location = dict(location)
        self.code = code
        self.open_code: str | None = code
        self.notes = notes
        self.status = RequestStatus.RECEIVED
        self.carer_id: str | None = None
        self.created_at = created_at
        self.updated_at = created_at
        self.idempotency_key = idempotency_key
        self.created_by = created_by
        self.channel = channel
        self.offers: list[Offer] = []
        self.assignments: list[Assignment] = []
        self.timeline: list[TimelineEntry] = []

    # -- timeline -----------------------------------------------------------------
    def record(self, at: datetime, type: str, actor: Actor | str,
               detail: dict[str, Any] | None = None) -> TimelineEntry:
        entry = TimelineEntry(request_id=self.id, at=at, type=type, actor=str(actor),
                              detail=detail, seq=len(self.timeline))
        self.timeline.append(entry)
        self.updated_at = at
        return entry

    # -- queries ------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def open_offer_for(self, carer_id: str) -> Offer | None:
        return next((o for o in self.offers if o.carer_id == carer_id and o.is_open), None)

    def offered_carer_ids(self) -> set[str]:
        return {o.carer_id for o in self.offers}

    @property
    def active_assignment(self) -> Assignment | None:
        return next((a for a in self.assignments if a.active), None)

    # -- transitions --------------------------------------------------------------
    def make_offers(self, carer_ids: list[str], now: datetime, expires_at: datetime) -> list[Offer]:
        if self.status not in (RequestStatus.RECEIVED, RequestStatus.MATCHING,
                               RequestStatus.ESCALATED):
            raise Conflict(f"request is {self.status}, it takes no offers", code="not_matching")
        already = self.offered_carer_ids()
        offers: list[Offer] = []
        for cid in carer_ids:
            if cid not in already:  # one offer per carer, even if named twice
                already.add(cid)
                offers.append(Offer(request_id=self.id, carer_id=cid, created_at=now,
                                    expires_at=expires_at))
        self.offers.extend(offers)
        if self.status == RequestStatus.RECEIVED:
            self.status = RequestStatus.MATCHING
        self.record(now, "matching", Actor.SYSTEM,
                    {"offers": len(offers), "carers": [o.carer_id for o in offers]})
        return offers

    def accept(self, carer_id: str, now: datetime) -> Acceptance:
        offer = self.open_offer_for(carer_id)
        if self.status not in ACCEPTING_STATUSES:
            if offer is not None:
                offer.status = OfferStatus.RESCINDED
            self.record(now, "late_accept", Actor.CARER, {"carer_id": carer_id})
            return Acceptance(won=False, reason="already_filled")
        if offer is None:
            return Acceptance(won=False, reason="no_open_offer")
        if offer.expires_at <= now:
            offer.status = OfferStatus.EXPIRED
            return Acceptance(won=False, reason="offer_expired")
        offer.status = OfferStatus.ACCEPTED
        offer.answered_at = now
        for other in self.offers:
            if other.is_open:
                other.status = OfferStatus.RESCINDED
        assignment = Assignment(request_id=self.id, carer_id=carer_id, start=self.start,
                                end=self.end, created_at=now)
        self.assignments.append(assignment)
        self.status = RequestStatus.ASSIGNED
        self.carer_id = carer_id
        self.record(now, "assigned", Actor.CARER, {"carer_id": carer_id, "offer_id": offer.id})
        return Acceptance(won=True, assignment=assignment)

    def close_offer_taken_elsewhere(self, carer_id: str, now: datetime) -> bool:
        """The carer took another job at the same time: their offer here can't be accepted
        any more, so it is closed now instead of waiting out its answer window."""
        return self._close_offer(carer_id, now, OfferStatus.RESCINDED, "offer_closed_busy",
                                 Actor.SYSTEM)

    def decline(self, carer_id: str, now: datetime) -> bool:
        return self._close_offer(carer_id, now, OfferStatus.DECLINED, "offer_declined",
                                 Actor.CARER)

    def _close_offer(self, carer_id: str, now: datetime, status: OfferStatus, entry: str,
                     actor: Actor) -> bool:
        offer = self.open_offer_for(carer_id)
        if offer is None:
            return False
        offer.status = status
        offer.answered_at = now
        self.record(now, entry, actor, {"carer_id": carer_id})
        return True

    def expire_offers(self, now: datetime) -> list[Offer]:
        """Open offers whose answer window has closed become expired (one timeline entry each)."""
        expired = [o for o in self.offers if o.is_open and o.expires_at <= now]
        for offer in expired:
            offer.status = OfferStatus.EXPIRED
            self.record(now, "offer_expired", Actor.SYSTEM, {"carer_id": offer.carer_id})
        return expired

    def withdraw(self, carer_id: str, now: datetime) -> Assignment:
        """The assigned carer pulls out before arriving: back to matching, without them.

        Their offer stays on record (as withdrawn), so they are never offered this job again.
        """
        assignment = self.active_assignment
        if self.status != RequestStatus.ASSIGNED or self.carer_id != carer_id \
                or assignment is None:
            raise Conflict(f"request is {self.status}", code="not_assigned_to_you")
        assignment.active = False
        for offer in self.offers:
            if offer.carer_id == carer_id and offer.status == OfferStatus.ACCEPTED:
                offer.status = OfferStatus.WITHDRAWN
        self.status = RequestStatus.MATCHING
        self.carer_id = None
        self.record(now, "withdrawn", Actor.CARER,
                    {"carer_id": carer_id, "assignment_id": assignment.id})
        return assignment

    def mark_arrived(self, carer_id: str, now: datetime) -> None:
        if self.status != RequestStatus.ASSIGNED or self.carer_id != carer_id:
            raise Conflict(f"request is {self.status}", code="not_assigned_to_you")
        self.status = RequestStatus.IN_PROGRESS
        self.record(now, "arrived", Actor.CARER, {"carer_id": carer_id})

    def mark_done(self, carer_id: str, now: datetime) -> None:
        if self.status not in (RequestStatus.IN_PROGRESS, RequestStatus.ASSIGNED) \
                or self.carer_id != carer_id:
            raise Conflict(f"request is {self.status}", code="not_assigned_to_you")
        self.status = RequestStatus.COMPLETED
        self.open_code = None
        self.record(now, "completed", Actor.CARER, {"carer_id": carer_id})

    def cancel(self, now: datetime, actor: Actor, reason: str, by: str | None = None) -> None:
        if not self.is_open or self.status == RequestStatus.IN_PROGRESS:
            raise Conflict(f"request is {self.status}, it can't be cancelled",
                           code="not_cancellable")
        self.status = RequestStatus.CANCELLED
        self.open_code = None
        for offer in self.offers:
            if offer.is_open:
                offer.status = OfferStatus.RESCINDED
        for a in self.assignments:
            a.active = False
        self.record(now, "cancelled", actor,
                    {"reason": reason, **({"by": by} if by is not None else {})})

    def take_place(self, carer_id: str, now: datetime, actor: Actor = Actor.SYSTEM,
                   detail: dict[str, Any] | None = None) -> None:
        """Centre mode: the child has a place in this carer's group. No offer and no YES:
        the place was free under the ratio (dispatch/domain/centers.py)."""
        if self.status not in (RequestStatus.RECEIVED, RequestStatus.MATCHING,
                               RequestStatus.ESCALATED):
            raise Conflict(f"request is {self.status}", code="not_assignable")
        self.status = RequestStatus.ASSIGNED
        self.carer_id = carer_id
        self.record(now, "assigned", actor, {"carer_id": carer_id, **(detail or {})})
