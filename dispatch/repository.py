"""Repositories: how handlers find and keep aggregates, in the domain's words."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from dispatch import orm
from dispatch.domain.matching import Box
from dispatch.domain.model import (
    ACCEPTING_STATUSES,
    OPEN_STATUSES,
    Assignment,
    Carer,
    Family,
    Offer,
    OfferStatus,
    Request,
    RequestStatus,
)
from dispatch.records import (
    ApiToken,
    AuditEntry,
    CenterBooking,
    InboundSms,
    Notification,
    Shift,
    SmsDraft,
)


class Requests:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, request: Request) -> None:
        self.session.add(request)

    def get(self, request_id: str, *, for_update: bool = False,
            skip_locked: bool = False) -> Request | None:
        stmt = select(Request).where(orm.requests.c.id == request_id).options(
            selectinload(Request.offers),  # type: ignore[misc,arg-type]
            selectinload(Request.assignments),  # type: ignore[misc,arg-type]
            selectinload(Request.timeline))  # type: ignore[misc,arg-type]
        if for_update:
            # The row lock is the "first YES wins" decision on PostgreSQL; SQLite
            # already holds the database write lock (BEGIN IMMEDIATE).
            # populate_existing: the lock may have waited for another transaction's
            # commit, and what this session loaded before it is stale by now.
            # skip_locked: None when another transaction holds the row (PostgreSQL), for
            # best-effort work that must not wait on, and deadlock with, its owner.
            stmt = stmt.with_for_update(of=orm.requests, skip_locked=skip_locked
                                        ).execution_options(populate_existing=True)
        return self.session.scalars(stmt).first()

    def by_idempotency_key(self, key: str) -> Request | None:
        return self.session.scalars(
            select(Request).where(orm.requests.c.idempotency_key == key)).first()

    def by_open_code(self, code: str) -> Request | None:
        return self.session.scalars(
            select(Request).where(orm.requests.c.open_code == code)).first()

    def open_codes(self) -> set[str]:
        return set(self.session.scalars(
            select(orm.requests.c.open_code).where(orm.requests.c.open_code.is_not(None))))

    def escalated_ids(self, *, ending_after: datetime, limit: int,
                      services: Sequence[str] | None = None) -> list[str]:
        """Escalated requests not yet over, soonest start first."""
        r = orm.requests.c
        stmt = select(r.id).where(r.status == RequestStatus.ESCALATED.value,
                                  r.end > ending_after)
        if services is not None:
            stmt = stmt.where(r.service.in_(list(services)))
        return list(self.session.scalars(stmt.order_by(r.start, r.id).limit(limit)))

    def open_for_child(self, child_id: str, start: datetime, end: datetime) -> Request | None:
        """An open request of this child that overlaps [start, end), if there is one."""
        r = orm.requests.c
        return self.session.scalars(select(Request).where(
            r.child_id == child_id, r.open_code.is_not(None), r.start < end, r.end > start)
            .order_by(r.start).limit(1)).first()

    def open_for_family(self, family_id: str) -> list[Request]:
        return list(self.session.scalars(
            select(Request).where(orm.requests.c.family_id == family_id,
                                  orm.requests.c.open_code.is_not(None))
            .order_by(orm.requests.c.created_at.desc())))

    def recent(self, status: str | None = None, created_by: str | None = None,
               limit: int = 200, *, service: str | None = None,
               open_only: bool | None = None) -> Sequence[Request]:
        """Newest first. `open_only=True`: open requests only, most urgent first
        (escalated ones, then by start time); `open_only=False`: closed ones only."""
        r = orm.requests.c
        open_values = sorted(s.value for s in OPEN_STATUSES)
        if open_only:
            escalated_first = case((r.status == RequestStatus.ESCALATED.value, 0), else_=1)
            stmt = select(Request).order_by(escalated_first, r.start, r.created_at, r.id)
        else:
            stmt = select(Request).order_by(r.created_at.desc())
        stmt = stmt.limit(limit)
        if status:
            stmt = stmt.where(r.status == status)
        if created_by:
            stmt = stmt.where(r.created_by == created_by)
        if service:
            stmt = stmt.where(r.service == service)
        if open_only is not None:
            stmt = stmt.where(r.status.in_(open_values) if open_only
                              else r.status.not_in(open_values))
        return self.session.scalars(stmt).all()

    def bookings_of_child(self, child_id: str, service: str, *, since: datetime,
                          before: datetime, statuses: Iterable[str]
                          ) -> list[tuple[datetime, datetime]]:
        """(start, end) of this child's requests for `service` in the given statuses that
        start in [since, before): what counts towards a monthly subsidy cap."""
        r = orm.requests.c
        stmt = select(r.start, r.end).where(
            r.child_id == child_id, r.service == service, r.status.in_(list(statuses)),
            r.start >= since, r.start < before).order_by(r.start)
        return [(start, end) for start, end in self.session.execute(stmt)]


    def bookings_of_children(self, child_ids: Iterable[str], services: Iterable[str], *,
                             since: datetime, before: datetime, statuses: Iterable[str]
                             ) -> list[tuple[str, str, datetime, datetime]]:
        """`bookings_of_child` for many children at once: (child, service, start, end)."""
        r = orm.requests.c
        stmt = select(r.child_id, r.service, r.start, r.end).where(
            r.child_id.in_(list(child_ids)), r.service.in_(list(services)),
            r.status.in_(list(statuses)), r.start >= since, r.start < before).order_by(r.start)
        return [(child_id, service, start, end)
                for child_id, service, start, end in self.session.execute(stmt)]

    def deadlines_due(self, now: datetime, escalate_after_s: Mapping[str, int],
                      limit: int = 100) -> list[str]:
        """Ids of requests of these services with a deadline passed, oldest first: an open
        offer past its answer window (matching or escalated), or still matching after the
        service's SLA (`escalate_after_s[service]` seconds from its creation)."""
        if not escalate_after_s:
            return []
        r, o = orm.requests.c, orm.offers.c
        offer_due = exists().where(o.request_id == r.id, o.status == OfferStatus.OPEN.value,
                                   o.expires_at <= now)
        sla_due = or_(*(and_(r.service == service, r.created_at <= now - timedelta(seconds=s))
                        for service, s in escalate_after_s.items()))
        matching, escalated = RequestStatus.MATCHING.value, RequestStatus.ESCALATED.value
        stmt = select(r.id).where(
            r.service.in_(list(escalate_after_s)),
            or_(and_(r.status.in_([matching, escalated]), offer_due),
                and_(r.status == matching, sla_due)),
        ).order_by(r.created_at, r.id).limit(limit)
        return list(self.session.scalars(stmt))


class CarerProfile:
    """What candidate ranking reads of an available carer (on duty, not opted out), and
    what an offer to them needs (phone, language)."""

    __slots__ = ("id", "districts", "skills", "home_lat", "home_lon", "rating", "phone", "lang")
    on_duty = True
    opted_out = False

    def __init__(self, id: str, districts: list[str], skills: list[str],
                 home_lat: float | None, home_lon: float | None, rating: float, phone: str,
                 lang: str) -> None:
        self.id, self.districts, self.skills = id, districts, skills
        self.home_lat, self.home_lon, self.rating = home_lat, home_lon, rating
        self.phone, self.lang = phone, lang

    def has_skills(self, required: Iterable[str]) -> bool:
        return set(required) <= set(self.skills)


class Carers:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, carer: Carer) -> None:
        self.session.add(carer)

    def get(self, carer_id: str) -> Carer | None:
        return self.session.get(Carer, carer_id)

    def by_phone(self, phone: str) -> Carer | None:
        return self.session.scalars(select(Carer).where(orm.carers.c.phone == phone)).first()

    def all(self) -> Sequence[Carer]:
        return self.session.scalars(select(Carer).order_by(orm.carers.c.name)).all()

    def available(self) -> Sequence[Carer]:
        """On duty and reachable; skills and districts are filtered by the matcher."""
        return self.session.scalars(select(Carer).where(
            orm.carers.c.on_duty.is_(True), orm.carers.c.opted_out.is_(False))).all()

    def available_in_box(self, box: Box) -> list[Carer]:
        """On duty and reachable, living inside `box` (dispatch/domain/matching.py): the
        matcher's spatial prefilter, so it never loads every carer in the city.

        Read-only profiles, not mapped carers: only what ranking and an offer read, several
        times cheaper to load than the aggregate.
        """
        c = orm.carers.c
        rows = self.session.execute(select(
            c.id, c.districts, c.skills, c.home_lat, c.home_lon, c.rating, c.phone,
            c.lang).where(
            c.on_duty.is_(True), c.opted_out.is_(False),
            c.home_lat.between(box.south, box.north),
            c.home_lon.between(box.west, box.east)))
        return [cast(Carer, CarerProfile(*row)) for row in rows]

    def available_among(self, carer_ids: Iterable[str]) -> Sequence[Carer]:
        """Those of these carers who are on duty and reachable."""
        ids = list(carer_ids)
        if not ids:
            return []
        c = orm.carers.c
        return self.session.scalars(select(Carer).where(
            c.id.in_(ids), c.on_duty.is_(True), c.opted_out.is_(False))).all()

    def busy_between(self, start: datetime, end: datetime) -> set[str]:
        a = orm.assignments.c
        return set(self.session.scalars(select(a.carer_id).where(
            a.active.is_(True), a.start < end, a.end > start)))


    def commitments(self, *, busy_from: datetime, busy_until: datetime, jobs_since: datetime,
                    ended_from: datetime, ended_until: datetime) -> Commitments:
        """What matching needs to know of the carers' assignments, in one query (each one
        costs a round trip): who is busy in [busy_from, busy_until], how many jobs each
        took since `jobs_since`, and where each one's last job ending in
        [ended_from, ended_until] was, if it had coordinates (where they set off from)."""
        a, r = orm.assignments.c, orm.requests.c
        busy = and_(a.active.is_(True), a.start < busy_until, a.end > busy_from)
        recent = a.created_at >= jobs_since
        ended = and_(a.active.is_(True), a.end >= ended_from, a.end <= ended_until)
        rows = self.session.execute(
            select(a.carer_id, busy.label("busy"), recent.label("recent"),
                   ended.label("ended"), r.location)
            # Only an ended job's place is read (and decrypted).
            .outerjoin(orm.requests, and_(r.id == a.request_id, ended))
            .where(or_(busy, recent, ended)).order_by(a.end, a.id))
        found = Commitments(busy=set(), jobs={}, previous={})
        last: dict[str, Any] = {}
        for carer_id, is_busy, is_recent, has_ended, location in rows:
            if is_busy:
                found.busy.add(carer_id)
            if is_recent:
                found.jobs[carer_id] = found.jobs.get(carer_id, 0) + 1
            if has_ended:
                last[carer_id] = location  # ordered by end: the latest job wins
        found.previous.update(_places(last))
        return found

    def current_jobs(self) -> dict[str, str]:
        r = orm.requests.c
        rows = self.session.execute(select(r.carer_id, r.id).where(
            r.carer_id.is_not(None), r.status.in_(["assigned", "in_progress"])))
        return {carer_id: request_id for carer_id, request_id in rows}

    def open_offers(self, carer_id: str, now: datetime) -> list[tuple[Offer, str]]:
        """(offer, job code) of this carer's offers that can still be accepted."""
        o, r = orm.offers.c, orm.requests.c
        rows = self.session.execute(
            select(Offer, r.code).join(orm.requests, r.id == o.request_id).where(
                and_(o.carer_id == carer_id, o.status == OfferStatus.OPEN.value,
                     o.expires_at > now, r.status.in_([s.value for s in ACCEPTING_STATUSES]))))
        return [(offer, code) for offer, code in rows]


    def overlapping(self, carer_id: str, start: datetime, end: datetime) -> list[Assignment]:
        a = orm.assignments.c
        return list(self.session.scalars(select(Assignment).where(
            a.carer_id == carer_id, a.active.is_(True), a.start < end, a.end > start)))


class Families:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, family: Family) -> None:
        self.session.add(family)

    def get(self, family_id: str) -> Family | None:
        return self.session.get(Family, family_id)

    def by_phone(self, phone: str) -> Family | None:
        return self.session.scalars(
            select(Family).where(orm.families.c.guardian_phone == phone)).first()


@dataclass
class Commitments:
    busy: set[str]
    jobs: dict[str, int]
    previous: dict[str, tuple[float, float]]


def _places(locations: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """(lat, lon) of each location that has coordinates."""
    found: dict[str, tuple[float, float]] = {}
    for carer_id, location in locations.items():
        lat, lon = (location or {}).get("lat"), (location or {}).get("lon")
        if isinstance(lat, int | float) and isinstance(lon, int | float) \
                and not isinstance(lat, bool) and not isinstance(lon, bool):
            found[carer_id] = (float(lat), float(lon))
    return found


class Notifications:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, notification: Notification) -> None:
        self.session.add(notification)

    def get(self, notification_id: str, *, for_update: bool = False) -> Notification | None:
        stmt = select(Notification).where(orm.notifications.c.id == notification_id)
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return self.session.scalars(stmt).first()

    def get_many(self, notification_ids: Sequence[str], *, for_update: bool = False
                 ) -> list[Notification]:
        """In the order asked; ids not found are left out."""
        stmt = select(Notification).where(orm.notifications.c.id.in_(list(notification_ids)))
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        found = {n.id: n for n in self.session.scalars(stmt)}
        return [found[i] for i in notification_ids if i in found]

    def opted_out_among(self, phones: Iterable[str]) -> set[str]:
        """The numbers among `phones` of a carer or a family who opted out."""
        wanted = list(set(phones))
        if not wanted:
            return set()
        out = set(self.session.scalars(select(orm.carers.c.phone).where(
            orm.carers.c.phone.in_(wanted), orm.carers.c.opted_out.is_(True))))
        out.update(self.session.scalars(select(orm.families.c.guardian_phone).where(
            orm.families.c.guardian_phone.in_(wanted), orm.families.c.opted_out.is_(True))))
        return out

    def by_sid(self, sid: str, *, for_update: bool = False) -> Notification | None:
        stmt = select(Notification).where(orm.notifications.c.sid == sid)
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return self.session.scalars(stmt).first()

    def exists(self, event_id: str, recipient: str, kind: str) -> bool:
        n = orm.notifications.c
        found = self.session.scalar(select(func.count()).where(
            n.event_id == event_id, n.recipient == recipient, n.kind == kind))
        return bool(found)

    def for_request(self, request_id: str) -> Sequence[Notification]:
        n = orm.notifications.c
        return self.session.scalars(select(Notification).where(n.request_id == request_id)
                                    .order_by(n.created_at)).all()

    def recent(self, limit: int = 100) -> Sequence[Notification]:
        n = orm.notifications.c
        return self.session.scalars(
            select(Notification).order_by(n.created_at.desc()).limit(limit)).all()


class InboundMessages:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, message: InboundSms) -> None:
        self.session.add(message)

    def get(self, inbound_id: str) -> InboundSms | None:
        return self.session.get(InboundSms, inbound_id)

    def by_sid(self, message_sid: str) -> InboundSms | None:
        return self.session.scalars(
            select(InboundSms).where(orm.inbound_sms.c.message_sid == message_sid)).first()

    def for_request(self, request_id: str) -> Sequence[InboundSms]:
        i = orm.inbound_sms.c
        return self.session.scalars(select(InboundSms).where(i.request_id == request_id)
                                    .order_by(i.received_at)).all()

    def unmatched(self, limit: int = 100) -> Sequence[InboundSms]:
        """SMS not linked to any request, newest first: what a dispatcher may need to read."""
        i = orm.inbound_sms.c
        return self.session.scalars(select(InboundSms).where(i.request_id.is_(None))
                                    .order_by(i.received_at.desc(), i.id.desc())
                                    .limit(limit)).all()


class Drafts:
    """Requests parents asked for by SMS, waiting for their answer (dispatch/sms_intake.py)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, draft: SmsDraft) -> None:
        self.session.add(draft)

    def pending_for_phone(self, phone: str) -> list[SmsDraft]:
        """This phone's drafts still waiting for an answer, newest first (expired or not)."""
        d = orm.sms_drafts.c
        return list(self.session.scalars(
            select(SmsDraft).where(d.phone == phone, d.status == "pending")
            .order_by(d.created_at.desc(), d.id.desc()).with_for_update()
            .execution_options(populate_existing=True)))


class Tokens:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, token: ApiToken) -> None:
        self.session.add(token)

    def by_hash(self, token_hash: str) -> ApiToken | None:
        t = orm.api_tokens.c
        return self.session.scalars(select(ApiToken).where(
            t.token_hash == token_hash, t.revoked.is_(False))).first()


class Centers:
    """Centre mode: carers' shifts at a centre and the places booked in their groups."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add_shift(self, shift: Shift) -> None:
        self.session.add(shift)

    def add_booking(self, booking: CenterBooking) -> None:
        self.session.add(booking)

    def lock_carer(self, carer_id: str) -> Carer | None:
        """The carer, with its row locked: one shift change for a carer at a time."""
        return self.session.get(Carer, carer_id, with_for_update=True, populate_existing=True)

    def shifts_of_carer(self, carer_id: str, start: datetime, end: datetime) -> list[Shift]:
        """This carer's shifts overlapping [start, end), at any centre."""
        s = orm.shifts.c
        return list(self.session.scalars(select(Shift).where(
            s.carer_id == carer_id, s.start < end, s.end > start).order_by(s.start, s.id)))

    def shifts_covering(self, center_id: str, start: datetime, end: datetime, *,
                        lock: bool = False) -> list[Shift]:
        """The shifts at this centre that cover all of [start, end].

        lock=True takes their row locks, in id order (so two bookings never wait on each
        other crosswise): two bookings racing for a place in one group then run one after
        the other on PostgreSQL. SQLite already runs writers one at a time.
        """
        s = orm.shifts.c
        stmt = select(Shift).where(s.center_id == center_id, s.start <= start,
                                   s.end >= end).order_by(s.id)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return list(self.session.scalars(stmt))

    def shifts_at(self, center_id: str, at: datetime) -> list[Shift]:
        s = orm.shifts.c
        return list(self.session.scalars(select(Shift).where(
            s.center_id == center_id, s.start <= at, s.end > at).order_by(s.start, s.id)))

    def _taking_places(self) -> Any:
        """A booking holds its place while it is active and its request is assigned or in
        progress: a cancelled or completed request frees the place, whoever changed it."""
        b, r = orm.center_bookings.c, orm.requests.c
        return and_(b.active.is_(True), exists().where(
            r.id == b.request_id,
            r.status.in_([RequestStatus.ASSIGNED.value, RequestStatus.IN_PROGRESS.value])))

    def bookings_of(self, carer_ids: Iterable[str], start: datetime,
                    end: datetime) -> list[CenterBooking]:
        """The places these carers' groups hold during [start, end)."""
        ids = list(carer_ids)
        if not ids:
            return []
        b = orm.center_bookings.c
        return list(self.session.scalars(
            select(CenterBooking).where(b.carer_id.in_(ids), b.start < end, b.end > start,
                                        self._taking_places())
            .order_by(b.start, b.id).execution_options(populate_existing=True)))

    def booking_for(self, request_id: str, *, for_update: bool = False) -> CenterBooking | None:
        """The request's active place, if it has one."""
        b = orm.center_bookings.c
        stmt = select(CenterBooking).where(b.request_id == request_id, b.active.is_(True))
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return self.session.scalars(stmt).first()

    def bookings_for(self, request_ids: Iterable[str]) -> dict[str, CenterBooking]:
        """Active places of these requests, by request id (for lists)."""
        ids = list(request_ids)
        if not ids:
            return {}
        b = orm.center_bookings.c
        rows = self.session.scalars(select(CenterBooking).where(
            b.request_id.in_(ids), b.active.is_(True)))
        return {row.request_id: row for row in rows}


class AuditLog:
    """Who read which family's record, when and where (never updated, never purged)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, entry: AuditEntry) -> None:
        self.session.add(entry)

    def find(self, *, family_id: str | None = None, request_id: str | None = None,
             limit: int = 200) -> Sequence[AuditEntry]:
        """Newest first."""
        a = orm.audit_log.c
        stmt = select(AuditEntry).order_by(a.at.desc(), a.id.desc()).limit(limit)
        if family_id is not None:
            stmt = stmt.where(a.family_id == family_id)
        if request_id is not None:
            stmt = stmt.where(a.request_id == request_id)
        return self.session.scalars(stmt).all()
