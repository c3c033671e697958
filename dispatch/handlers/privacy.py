"""Privacy (개인정보보호법): audited reads of a family's record, the purge, key rotation.

- §23 (health data) and §22-2 (children): who read a family's record is in the audit log
  before the record is shown; a read that found nothing is not an access and is not logged.
- §21 (destroy data once its purpose ends): `purge_personal_data` anonymises requests
  finished longer ago than the operator says, and families with nothing open or recent,
  in place. Rows stay, so every statistic still counts them (service, district or centre,
  times, status, time to assign, offers); what named or reached a person goes: names, phone
  numbers, birth dates (the child's age at the request is kept), addresses, hospital and
  ward, notes, SMS texts and numbers, free text on the timeline. Running it twice changes
  nothing the second time (each row is marked, or no longer matches).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, literal, not_, or_, select, update

from dispatch import commands as c
from dispatch import orm
from dispatch.domain.errors import Ineligible, NotFound
from dispatch.domain.model import Family, Request, RequestStatus
from dispatch.domain.policy import ServicePolicy, age_in_months
from dispatch.ports import Clock
from dispatch.records import AuditEntry, NotificationStatus
from dispatch.unit_of_work import UnitOfWork

FINISHED = (RequestStatus.COMPLETED.value, RequestStatus.CANCELLED.value)
# birth_date is NOT NULL: a purged child's is this, and the family's purged_at says why.
PURGED_BIRTH_DATE = date(1900, 1, 1)
# Stands in for a phone number in a purged SMS row: not a number, and unique per row (the
# notification's (event, recipient, kind) stays unique).
PURGED_PHONE_PREFIX = "purged:"
# Timeline details a purged request keeps: ids and counts, nothing typed by a person.
KEEP_IN_TIMELINE = frozenset({"carer_id", "offer_id", "assignment_id", "offers", "carers",
                              "channel", "center_id", "provisional", "sensitive", "wave"})
# Whatever these say, they are about the service, not the family: kept where they appear.
KEEP_FOR_TYPES = {"escalated": frozenset({"reason"})}
_SENT = [s.value for s in (NotificationStatus.SENT, NotificationStatus.DELIVERED,
                           NotificationStatus.UNDELIVERED, NotificationStatus.FAILED,
                           NotificationStatus.SKIPPED)]


# -- audited reads -------------------------------------------------------------------

def read_family(cmd: c.ReadFamily, uow: UnitOfWork, clock: Clock, **_: Any) -> Family:
    with uow:
        family = uow.families.get(cmd.family_id)
        if family is None:
            raise NotFound("no such family")
        list(family.children)  # loaded now: the caller reads it after the session closes
        uow.audit.add(AuditEntry(at=clock(), actor=cmd.reader, role=cmd.role,
                                 action=cmd.action, family_id=family.id))
        uow.commit()
        return family


def read_request(cmd: c.ReadRequest, uow: UnitOfWork, clock: Clock, **_: Any) -> Request:
    with uow:
        request = uow.requests.get(cmd.request_id)
        if request is None or (cmd.owner_token is not None
                               and request.created_by != cmd.owner_token):
            raise NotFound("no such request")
        uow.audit.add(AuditEntry(at=clock(), actor=cmd.reader, role=cmd.role,
                                 action=cmd.action, family_id=request.family_id,
                                 request_id=request.id))
        uow.commit()
        return request


# -- the purge -----------------------------------------------------------------------

def purge_personal_data(cmd: c.PurgePersonalData, uow: UnitOfWork, clock: Clock,
                        policies: Mapping[str, ServicePolicy], **_: Any) -> dict[str, int]:
    """Returns how many rows of each kind were (or, with dry_run, would be) anonymised."""
    if cmd.older_than.total_seconds() <= 0:
        raise Ineligible("older_than must be positive", code="invalid_input")
    now = clock()
    cutoff = now - cmd.older_than
    with uow:
        counts = {"requests": 0, "families": 0, "children": 0, "notifications": 0,
                  "inbound_sms": 0, "sms_drafts": 0, "timeline": 0, "outbox": 0}
        _purge_requests(uow, cutoff, now, policies, counts)
        _purge_families(uow, cutoff, now, counts)
        _purge_stray_sms(uow, cutoff, counts)
        if cmd.dry_run:
            uow.rollback()
        else:
            uow.commit()
        return counts


def _purge_requests(uow: UnitOfWork, cutoff: datetime, now: datetime,
                    policies: Mapping[str, ServicePolicy], counts: dict[str, int]) -> None:
    r, ch, t = orm.requests.c, orm.children.c, orm.timeline.c
    rows = uow.session.execute(
        select(r.id, r.service, r.start, r.location, ch.birth_date)
        .join(orm.children, ch.id == r.child_id)
        .where(r.status.in_(FINISHED), r.updated_at <= cutoff, r.purged_at.is_(None))
        .order_by(r.id)).all()
    for request_id, service, start, location, birth_date in rows:
        policy = policies.get(service)
        day = start.astimezone(policy.tz if policy is not None else UTC).date()
        age = age_in_months(birth_date, day) if birth_date != PURGED_BIRTH_DATE else None
        kept = {k: v for k, v in (location or {}).items() if k in ("district", "center_id")}
        uow.session.execute(update(orm.requests).where(r.id == request_id).values(
            location=kept, notes=None, idempotency_key=None, child_age_months=age,
            purged_at=now))
        for entry_id, entry_type, detail in uow.session.execute(
                select(t.id, t.type, t.detail).where(t.request_id == request_id)):
            keep = KEEP_IN_TIMELINE | KEEP_FOR_TYPES.get(entry_type, frozenset())
            scrubbed = {k: v for k, v in (detail or {}).items() if k in keep}
            if scrubbed != detail:
                uow.session.execute(update(orm.timeline).where(t.id == entry_id)
                                    .values(detail=scrubbed))
                counts["timeline"] += 1
        n, i = orm.notifications.c, orm.inbound_sms.c
        counts["notifications"] += _anonymise_notifications(uow, n.request_id == request_id)
        counts["inbound_sms"] += _anonymise_inbound(uow, i.request_id == request_id)
        counts["sms_drafts"] += _rowcount(uow.session.execute(
            delete(orm.sms_drafts).where(orm.sms_drafts.c.request_id == request_id)))
    counts["requests"] += len(rows)


def _purge_families(uow: UnitOfWork, cutoff: datetime, now: datetime,
                    counts: dict[str, int]) -> None:
    """Families registered before the cutoff whose every request is finished and purged."""
    f, r, ch = orm.families.c, orm.requests.c, orm.children.c
    still_needed = exists().where(r.family_id == f.id, or_(
        r.status.not_in(FINISHED), r.updated_at > cutoff, r.purged_at.is_(None)))
    rows = uow.session.execute(
        select(f.id, f.guardian_phone).where(
            f.purged_at.is_(None), or_(f.consent_at.is_(None), f.consent_at <= cutoff),
            not_(still_needed)).order_by(f.id)).all()
    n, i = orm.notifications.c, orm.inbound_sms.c
    for family_id, phone in rows:
        # Only what is older than the cutoff: the same number may belong to someone active.
        counts["notifications"] += _anonymise_notifications(
            uow, and_(n.recipient == phone, n.created_at <= cutoff))
        counts["inbound_sms"] += _anonymise_inbound(
            uow, and_(i.from_phone == phone, i.received_at <= cutoff))
        counts["sms_drafts"] += _rowcount(uow.session.execute(
            delete(orm.sms_drafts).where(orm.sms_drafts.c.family_id == family_id)))
        counts["children"] += _rowcount(uow.session.execute(
            update(orm.children).where(ch.family_id == family_id).values(
                name="", birth_date=PURGED_BIRTH_DATE, disability=False)))
        uow.session.execute(update(orm.families).where(f.id == family_id).values(
            guardian_name="", guardian_phone="", address=None, pickup_guardians=[],
            purged_at=now))
    counts["families"] += len(rows)


def _purge_stray_sms(uow: UnitOfWork, cutoff: datetime, counts: dict[str, int]) -> None:
    """SMS older than the cutoff that belong to no request: unknown senders, help replies."""
    n, i = orm.notifications.c, orm.inbound_sms.c
    counts["notifications"] += _anonymise_notifications(uow, and_(
        n.request_id.is_(None), n.created_at <= cutoff, n.status.in_(_SENT)))
    counts["inbound_sms"] += _anonymise_inbound(uow, and_(
        i.request_id.is_(None), i.received_at <= cutoff))
    # SMS topics are keyed by phone number (one person's messages in order); the payloads
    # carry ids only (schemas/messages.py), so the key, in the row and in the envelope, is
    # all there is to remove.
    o = orm.outbox.c
    for row_id, body in uow.session.execute(select(o.id, o.body).where(
            o.created_at <= cutoff, o.key.startswith("+"))).all():
        envelope = json.loads(body)
        envelope["key"] = PURGED_PHONE_PREFIX
        uow.session.execute(update(orm.outbox).where(o.id == row_id).values(
            key=PURGED_PHONE_PREFIX,
            body=json.dumps(envelope, separators=(",", ":")).encode("utf-8")))
        counts["outbox"] += 1


def _anonymise_notifications(uow: UnitOfWork, where: Any) -> int:
    n = orm.notifications.c
    return _rowcount(uow.session.execute(
        update(orm.notifications)
        .where(where, not_(n.recipient.startswith(PURGED_PHONE_PREFIX)))
        .values(recipient=literal(PURGED_PHONE_PREFIX) + func.substr(n.id, 1, 13),
                params={}, body=None, error=None)))


def _anonymise_inbound(uow: UnitOfWork, where: Any) -> int:
    i = orm.inbound_sms.c
    return _rowcount(uow.session.execute(
        update(orm.inbound_sms)
        .where(where, not_(i.from_phone.startswith(PURGED_PHONE_PREFIX)))
        .values(from_phone=literal(PURGED_PHONE_PREFIX) + func.substr(i.id, 1, 13), body="")))


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)


# -- key rotation ----------------------------------------------------------------------

# Every encrypted column (dispatch/orm.py), read with the keyring's old keys and written
# back with the current one.
ENCRYPTED = ((orm.children, ("disability",)), (orm.requests, ("location", "notes")),
             (orm.timeline, ("detail",)), (orm.notifications, ("params", "body")),
             (orm.inbound_sms, ("body",)))


def rotate_data_key(cmd: c.RotateDataKey, uow: UnitOfWork, **_: Any) -> int:
    """Re-encrypt every sensitive field with the current key; returns the rows rewritten.
    Afterwards DOLBOM_DATA_KEY_PREVIOUS can be dropped."""
    rewritten = 0
    with uow:
        for table, columns in ENCRYPTED:
            cols = [table.c[name] for name in columns]
            for row in uow.session.execute(select(table.c.id, *cols)).all():
                uow.session.execute(update(table).where(table.c.id == row[0]).values(
                    dict(zip(columns, row[1:], strict=True))))
                rewritten += 1
        uow.commit()
    return rewritten
