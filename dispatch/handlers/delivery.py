"""Sending SMS at most once, retrying only what is safe to retry, and following delivery.

Twilio has no idempotency key, so the rules are:
- a row goes to `sending` and commits *before* the gateway is called; a crash then leaves
  it `sending`, and the sweep treats it as an uncertain send;
- an uncertain send (timeout, 5xx, or a crash mid-call) is looked up at the provider
  before anything else happens: found → sent; not found → sent again;
- 429, 5xx and 30008 are retried with backoff; 21211, 21614, 30006 are not; 21610 means
  the person opted out with the carrier: they are marked opted out and the dispatcher told;
- an offer carries a validity period and is never sent after it has gone stale, nor once
  it has closed (another carer said YES, the request was cancelled); and a carer is told an
  offer was withdrawn only if that offer was actually sent to them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from dispatch import commands as c
from dispatch import orm
from dispatch.domain.model import Actor, OfferStatus, RequestStatus
from dispatch.domain.policy import ServicePolicy
from dispatch.handlers.matching import offer_next
from dispatch.ports import Clock, SmsSender, SmsTemplates
from dispatch.records import Notification, NotificationStatus
from dispatch.unit_of_work import UnitOfWork
from schemas.phone import mask

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (5, 20, 60, 180)
# How long an uncertain send waits before we ask the provider what became of it.
LOOKUP_AFTER_S = 20
# A row still `sending` after this long belongs to a sender that died mid-call.
STUCK_SENDING_S = 60
OPTED_OUT = 21610
# A pending row this old that was never tried lost its sms.requested message.
NEVER_NUDGED_S = 60

# Twilio's statuses, in the order they can follow each other; the last four are final.
PROVIDER_RANK = {"accepted": 1, "scheduled": 1, "queued": 2, "sending": 3, "sent": 4,
                 "receiving": 4, "received": 5, "delivered": 6, "read": 7, "undelivered": 6,
                 "failed": 6, "canceled": 6}
FINAL = frozenset({"delivered", "read", "undelivered", "failed", "canceled"})


def _opt_out(uow: UnitOfWork, phone: str) -> None:
    person = uow.carers.by_phone(phone) or uow.families.by_phone(phone)
    if person is not None:
        person.opted_out = True


def _tell_dispatcher(uow: UnitOfWork, note: Notification, now: datetime, reason: str,
                     dispatcher_phone: str | None) -> None:
    """Record on the request's timeline (the console's view) and text the dispatcher."""
    request = uow.requests.get(note.request_id) if note.request_id else None
    if request is not None:
        request.record(now, "sms_problem", Actor.SYSTEM,
                       {"kind": note.kind, "to": mask(note.recipient), "reason": reason})
    if dispatcher_phone and note.recipient != dispatcher_phone:
        uow.notify(event_id=f"sms-problem:{note.id}", recipient=dispatcher_phone,
                   kind="dispatcher_escalation", request_id=note.request_id, now=now,
                   params={"code": request.code if request else "-",
                           "service_label": note.kind, "reason": reason})


def deliver_notification(cmd: c.DeliverNotification, uow: UnitOfWork, clock: Clock,
                         sms: SmsSender, templates: SmsTemplates,
                         dispatcher_phone: str | None = None, **_: Any) -> str:
    now = clock()
    with uow:
        note = uow.notifications.get(cmd.notification_id, for_update=True)
        if note is None or note.status != NotificationStatus.PENDING:
            return "duplicate"
        if note.next_attempt_at is not None and note.next_attempt_at > now:
            return "not_due"
        if note.validity_s is not None and now > note.created_at + timedelta(
                seconds=note.validity_s):
            note.status = NotificationStatus.FAILED
            note.error = "stale: not sent after its validity period"
            uow.retire_sms_nudge(note.id)
            uow.commit()
            return "stale"
        closed = _closed_before_sending(uow, note)
        if closed is not None:
            note.status = NotificationStatus.SKIPPED
            note.error = closed
            uow.retire_sms_nudge(note.id)
            uow.commit()
            return "closed"
        person = uow.carers.by_phone(note.recipient) or uow.families.by_phone(note.recipient)
        if person is not None and person.opted_out:
            note.status = NotificationStatus.SKIPPED
            note.error = "recipient opted out"
            uow.retire_sms_nudge(note.id)
            uow.commit()
            return "skipped"
        body = note.body or templates(note.kind, note.params, note.lang)
        note.status = NotificationStatus.SENDING
        note.status_at = now
        note.attempts += 1
        note.body = body
        note.gateway = sms.name
        validity = None
        if note.validity_s is not None:
            validity = max(1, note.validity_s - int((now - note.created_at).total_seconds()))
        # The claim: `sending`, committed before the call. Under the row lock (PostgreSQL)
        # or the write lock taken at BEGIN (SQLite), so of two deliverers of one row (the
        # worker right after the commit, and the sms.requested message) exactly one gets
        # here; the other reads `sending` and stops. Its Kafka message is no longer needed.
        uow.retire_sms_nudge(note.id)
        uow.commit()
        recipient, attempts = note.recipient, note.attempts
    try:
        sent = sms.send(recipient, body, validity_period=validity)
    except Exception as exc:
        return _after_failure(cmd.notification_id, exc, attempts, uow, clock, dispatcher_phone)
    with uow:
        note = uow.notifications.get(cmd.notification_id, for_update=True)
        assert note is not None
        _mark_sent(note, sent.sid, sent.status, clock())
        uow.commit()
    return "sent"


# Handed to the provider, or possibly so: the carer may have the offer on their phone.
_OFFER_MAY_HAVE_ARRIVED = frozenset({NotificationStatus.SENDING, NotificationStatus.UNKNOWN,
                                     NotificationStatus.SENT, NotificationStatus.DELIVERED})


def _closed_before_sending(uow: UnitOfWork, note: Notification) -> str | None:
    """Why an offer (or its withdrawal) is no longer worth sending; None: send it."""
    o, n = orm.offers.c, orm.notifications.c
    if note.kind == "offer" and note.event_id.startswith("offer:"):
        status = uow.session.scalar(select(o.status).where(
            o.id == note.event_id.removeprefix("offer:")))
        if status is not None and status != OfferStatus.OPEN.value:
            return f"offer {status} before it was sent"
    elif note.kind == "offer_rescinded":
        offer_sms = uow.session.scalar(select(n.status).where(
            n.event_id == f"offer:{note.params.get('offer_id')}", n.kind == "offer",
            n.recipient == note.recipient))
        if offer_sms not in _OFFER_MAY_HAVE_ARRIVED:
            return "the offer itself was never sent"
    return None


def _mark_sent(note: Notification, sid: str, provider_status: str, now: datetime) -> None:
    note.status = NotificationStatus.SENT
    note.sid = sid
    note.provider_status = provider_status
    note.sent_at = note.status_at = now
    note.next_attempt_at = None
    if provider_status in FINAL:  # the console gateway "delivers" at once
        note.status = NotificationStatus(provider_status) \
            if provider_status in ("delivered", "undelivered", "failed") else note.status


def _after_failure(notification_id: str, exc: Exception, attempts: int, uow: UnitOfWork,
                   clock: Clock, dispatcher_phone: str | None) -> str:
    code = getattr(exc, "code", None)
    retryable = bool(getattr(exc, "retryable", False))
    unknown = bool(getattr(exc, "outcome_unknown", False)) or isinstance(exc, TimeoutError)
    now = clock()
    with uow:
        note = uow.notifications.get(notification_id, for_update=True)
        assert note is not None
        note.error_code = code
        note.error = str(exc)[:500]
        note.status_at = now
        if unknown:
            note.status = NotificationStatus.UNKNOWN
            note.next_attempt_at = now + timedelta(seconds=LOOKUP_AFTER_S)
            outcome = "unknown"
        elif retryable and attempts <= len(RETRY_DELAYS_S):
            note.status = NotificationStatus.PENDING
            note.next_attempt_at = now + timedelta(seconds=RETRY_DELAYS_S[attempts - 1])
            outcome = "retry"
        else:
            note.status = NotificationStatus.FAILED
            outcome = "failed"
            if code == OPTED_OUT:
                _opt_out(uow, note.recipient)
                _tell_dispatcher(uow, note, now, "opted_out", dispatcher_phone)
            elif note.kind in ("assigned", "request_received", "escalated", "cancelled"):
                _tell_dispatcher(uow, note, now, f"sms_failed_{code}", dispatcher_phone)
        uow.commit()
    log.warning("sms %s to %s: %s (%s)", notification_id, mask(note.recipient), outcome, exc)
    return outcome


def resolve_uncertain(notification_id: str, uow: UnitOfWork, clock: Clock, sms: SmsSender,
                      dispatcher_phone: str | None = None) -> str:
    """Ask the provider whether an uncertain send went out; only if not, let it go again."""
    now = clock()
    with uow:
        note = uow.notifications.get(notification_id, for_update=True)
        if note is None or note.status not in (NotificationStatus.UNKNOWN,
                                               NotificationStatus.SENDING):
            return "settled"
        recipient, body = note.recipient, note.body or ""
        known = set(uow.session.scalars(select(orm.notifications.c.sid).where(
            orm.notifications.c.recipient == recipient, orm.notifications.c.sid.is_not(None))))
    found = sms.find_sent(recipient, body, known)  # type: ignore[attr-defined]
    with uow:
        note = uow.notifications.get(notification_id, for_update=True)
        assert note is not None
        if found is not None:
            _mark_sent(note, found.sid, found.status, now)
            outcome = "found"
        elif note.attempts <= len(RETRY_DELAYS_S):
            note.status = NotificationStatus.PENDING
            note.next_attempt_at = now
            outcome = "resend"
        else:
            note.status = NotificationStatus.FAILED
            outcome = "failed"
        uow.commit()
    return outcome


def sweep_notifications(cmd: c.SweepNotifications, uow: UnitOfWork, clock: Clock,
                        sms: SmsSender, templates: SmsTemplates,
                        dispatcher_phone: str | None = None, **_: Any) -> dict[str, int]:
    """Run by every worker on a timer: retries that are due, uncertain sends to look up."""
    now = clock()
    n = orm.notifications.c
    with uow:
        due = list(uow.session.scalars(select(n.id).where(
            n.status == NotificationStatus.PENDING.value,
            # A retry that is due, or a first send whose Kafka message never came (lost with
            # an emptied broker): the row is the record, the message only a nudge.
            ((n.next_attempt_at.is_not(None) & (n.next_attempt_at <= now))
             | (n.next_attempt_at.is_(None)
                & (n.created_at <= now - timedelta(seconds=NEVER_NUDGED_S))))
        ).limit(cmd.limit)))
        uncertain = list(uow.session.scalars(select(n.id).where(
            ((n.status == NotificationStatus.UNKNOWN.value) & (n.next_attempt_at <= now))
            | ((n.status == NotificationStatus.SENDING.value)
               & (n.status_at <= now - timedelta(seconds=STUCK_SENDING_S)))).limit(cmd.limit)))
    counts = {"retried": 0, "looked_up": 0}
    for notification_id in uncertain:
        if resolve_uncertain(notification_id, uow, clock, sms, dispatcher_phone) == "resend":
            due.append(notification_id)
        counts["looked_up"] += 1
    for notification_id in due:
        deliver_notification(c.DeliverNotification(notification_id=notification_id), uow,
                             clock, sms, templates, dispatcher_phone)
        counts["retried"] += 1
    return counts


def record_delivery_status(cmd: c.RecordDeliveryStatus, uow: UnitOfWork, clock: Clock,
                           policies: Mapping[str, ServicePolicy],
                           dispatcher_phone: str | None = None, **_: Any) -> str:
    """A status callback: move forward only, whatever order or how often they arrive."""
    now = clock()
    with uow:
        note = uow.notifications.by_sid(cmd.sid, for_update=True)
        if note is None:
            return "unknown_sid"
        current = PROVIDER_RANK.get(note.provider_status or "", 0)
        if note.provider_status in FINAL or PROVIDER_RANK.get(cmd.status, 0) <= current:
            return "stale"
        note.provider_status = cmd.status
        note.status_at = now
        if cmd.error_code is not None:
            note.error_code = cmd.error_code
        if cmd.status == "delivered":
            note.status = NotificationStatus.DELIVERED
        elif cmd.status in ("undelivered", "failed"):
            note.status = NotificationStatus.UNDELIVERED
            if cmd.error_code == OPTED_OUT:
                _opt_out(uow, note.recipient)
            if note.kind == "offer":
                _offer_undelivered(uow, note, now, policies, dispatcher_phone)
            elif note.kind != "dispatcher_escalation":
                _tell_dispatcher(uow, note, now, f"sms_{cmd.status}_{cmd.error_code or ''}"
                                 .rstrip("_"), dispatcher_phone)
        uow.commit()
        return note.status


def _offer_undelivered(uow: UnitOfWork, note: Notification, now: datetime,
                       policies: Mapping[str, ServicePolicy], dispatcher_phone: str | None
                       ) -> None:
    """The carer never got the offer: count it as a NO and offer the next carer at once."""
    request = uow.requests.get(note.request_id, for_update=True) if note.request_id else None
    carer = uow.carers.by_phone(note.recipient)
    if request is None or carer is None:
        return
    offer = request.open_offer_for(carer.id)
    if offer is None:
        return
    offer.status = OfferStatus.DECLINED
    offer.answered_at = now
    request.record(now, "offer_undelivered", Actor.SYSTEM, {"carer_id": carer.id})
    if request.status in (RequestStatus.MATCHING, RequestStatus.ESCALATED):
        offer_next(uow, request, policies[request.service], now, dispatcher_phone)
