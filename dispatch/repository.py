"""Repositories: how handlers find and keep aggregates, in the domain's words."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, selectinload

from dispatch import orm
from dispatch.domain.model import (
    ACCEPTING_STATUSES,
    Assignment,
    Carer,
    Family,
    Offer,
    OfferStatus,
    Request,
)
from dispatch.records import ApiToken, InboundSms, Notification, SmsDraft


class Requests:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, request: Request) -> None:
        self.session.add(request)

    def get(self, request_id: str, *, for_update: bool = False) -> Request | None:
        stmt = select(Request).where(orm.requests.c.id == request_id).options(
            selectinload(Request.offers),  # type: ignore[misc,arg-type]
            selectinload(Request.assignments),  # type: ignore[misc,arg-type]
            selectinload(Request.timeline))  # type: ignore[misc,arg-type]
        if for_update:
            # The row lock is the "first YES wins" decision on PostgreSQL; SQLite
            # already holds the database write lock (BEGIN IMMEDIATE).
            # populate_existing: the lock may have waited for another transaction's
            # commit, and what this session loaded before it is stale by now.
            stmt = stmt.with_for_update(of=orm.requests).execution_options(
                populate_existing=True)
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

    def open_for_family(self, family_id: str) -> list[Request]:
        return list(self.session.scalars(
            select(Request).where(orm.requests.c.family_id == family_id,
                                  orm.requests.c.open_code.is_not(None))
            .order_by(orm.requests.c.created_at.desc())))

    def recent(self, status: str | None = None, created_by: str | None = None,
               limit: int = 200) -> Sequence[Request]:
        stmt = select(Request).order_by(orm.requests.c.created_at.desc()).limit(limit)
        if status:
            stmt = stmt.where(orm.requests.c.status == status)
        if created_by:
            stmt = stmt.where(orm.requests.c.created_by == created_by)
        return self.session.scalars(stmt).all()


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

    def busy_between(self, start: datetime, end: datetime) -> set[str]:
        a = orm.assignments.c
        return set(self.session.scalars(select(a.carer_id).where(
            a.active.is_(True), a.start < end, a.end > start)))

    def jobs_since(self, since: datetime) -> dict[str, int]:
        a = orm.assignments.c
        rows = self.session.execute(select(a.carer_id, func.count()).where(
            a.created_at >= since).group_by(a.carer_id))
        return {carer_id: count for carer_id, count in rows}

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
