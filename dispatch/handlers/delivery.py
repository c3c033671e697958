"""Sending SMS at most once, retrying only what is safe to retry, and following delivery.

Twilio has no idempotency key, so the rules are:
- a row goes to `sending`, naming its sender, and commits *before* the gateway is called;
  while that sender lives (dispatch/senders.py) the row is its own, however long it waits
  behind the rate limit; once it has died, or has let go of the row without settling it,
  the sweep treats it as an uncertain send;
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
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from dispatch import commands as c
from dispatch import orm
from dispatch.domain.model import Actor, OfferStatus, RequestStatus
from dispatch.domain.policy import ServicePolicy
from dispatch.handlers.matching import offer_next
from dispatch.ports import Clock, SenderClaims, SmsSender, SmsTemplates
from dispatch.records import Notification, NotificationStatus
from dispatch.senders import LocalClaims, live_senders
from dispatch.unit_of_work import UnitOfWork
from schemas.phone import mask

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (5, 20, 60, 180)
# How long an uncertain send waits before we ask the provider what became of it.
LOOKUP_AFTER_S = 20
# A row still `sending` after this long, claimed by a process that keeps no heartbeat
# (claimed_by is NULL), belongs to a sender that died mid-call.
STUCK_SENDING_S = 60
OPTED_OUT = 21610
# A pending row this old that was never tried was never going to be: the worker that queued
# it died before sending it, or its sms.requested message was lost with an emptied broker.
# A live worker sends within milliseconds of its commit; the claim keeps a slow one and
# the sweep from both sending.
NEVER_NUDGED_S = 10

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
                         dispatcher_phone: str | None = None,
                         claims: SenderClaims | None = None, **_: Any) -> str:
    return deliver_notifications(
        c.DeliverNotifications(notification_ids=(cmd.notification_id,)), uow, clock, sms,
        templates, dispatcher_phone, claims=claims)[cmd.notification_id]


@dataclass(frozen=True)
class _Claim:
    notification_id: str
    recipient: str
    body: str
    validity_s: int | None
    attempts: int
    created_at: datetime
    kind: str = ""


# Which SMS of a batch go first when the provider takes one a second: news that stops
# someone acting on what is no longer true (an offer closed, a job cancelled), then the
# answers people are waiting for; offers and the rest after.
URGENT_KINDS = frozenset({"offer_rescinded", "job_cancelled", "carer_withdrew",
                          "dispatcher_escalation"})
AWAITED_KINDS = frozenset({"assigned", "cancelled", "escalated", "request_received",
                           "accepted_ack", "job_address"})


def _priority(claim: _Claim) -> int:
    return 0 if claim.kind in URGENT_KINDS else 1 if claim.kind in AWAITED_KINDS else 2


def deliver_notifications(cmd: c.DeliverNotifications, uow: UnitOfWork, clock: Clock,
                          sms: SmsSender, templates: SmsTemplates,
                          dispatcher_phone: str | None = None,
                          send_pool: Executor | None = None,
                          claims: SenderClaims | None = None, **_: Any) -> dict[str, str]:
    """Send the SMS one transaction queued: one transaction claims them all, one records
    them sent. Returns each notification's outcome: sent, duplicate, not_due, stale,
    closed, skipped, or what `_after_failure` made of an error."""
    claims = claims or LocalClaims()
    now = clock()
    ids = list(dict.fromkeys(cmd.notification_ids))
    outcomes = dict.fromkeys(ids, "duplicate")
    to_send: list[_Claim] = []
    with uow:
        notes = [n for n in uow.notifications.get_many(ids, for_update=True)
                 if n.status == NotificationStatus.PENDING]
        closed = _closed_before_sending(uow, notes)
        opted_out = uow.notifications.opted_out_among(n.recipient for n in notes)
        settled: list[str] = []
        for note in notes:
            outcome = _claim(note, now, closed.get(note.id), note.recipient in opted_out,
                             sms.name, templates, claims.id)
            if outcome == "not_due":
                outcomes[note.id] = outcome
                continue
            settled.append(note.id)
            if outcome is None:
                assert note.body is not None
                to_send.append(_Claim(note.id, note.recipient, note.body,
                                      _validity_left(note, now), note.attempts,
                                      note.created_at, note.kind))
            else:
                outcomes[note.id] = outcome
        if not settled:
            return outcomes
        # The claim: `sending`, committed before the call. Under the row locks (PostgreSQL)
        # or the write lock taken at BEGIN (SQLite), so of two deliverers of one row (the
        # worker right after the commit, a sms.requested message, the sweep) exactly one
        # gets here; the other reads `sending` and stops. Messages not yet on Kafka that
        # would only find this claim are retired.
        uow.retire_sms_nudges(settled)
        # Held from before the claim commits until the rows are settled: a `sending` row of
        # this process that is not held is one it let go of unsettled (see the sweep).
        held = [claim.notification_id for claim in to_send]
        claims.hold(held)
        try:
            uow.commit()
        except BaseException:
            claims.let_go(held)
            raise
    try:
        _send_and_settle(to_send, outcomes, uow, clock, sms, dispatcher_phone, send_pool)
    finally:
        claims.let_go(held)
    return outcomes


def _send_and_settle(to_send: list[_Claim], outcomes: dict[str, str], uow: UnitOfWork,
                     clock: Clock, sms: SmsSender, dispatcher_phone: str | None,
                     send_pool: Executor | None) -> None:
    sent: dict[str, Any] = {}
    for claim, result in _send_all(sms, to_send, send_pool):
        if isinstance(result, Exception):
            outcomes[claim.notification_id] = _after_failure(
                claim.notification_id, result, claim.attempts, uow, clock, dispatcher_phone)
        else:
            sent[claim.notification_id] = result
    if sent:
        with uow:
            done = clock()
            for note in uow.notifications.get_many(list(sent), for_update=True):
                _mark_sent(note, sent[note.id].sid, sent[note.id].status, done)
                outcomes[note.id] = "sent"
            uow.commit()


def _send_all(sms: SmsSender, claims: list[_Claim], pool: Executor | None
              ) -> list[tuple[_Claim, Any]]:
    """Each claim with what the gateway answered, or the exception it raised. Different
    people's SMS go side by side, the most urgent people's first (`_priority`); one
    person's go one after another, oldest first, so a parent never reads "assigned" before
    "received"."""
    def send(claim: _Claim) -> Any:
        try:
            return sms.send(claim.recipient, claim.body, validity_period=claim.validity_s)
        except Exception as exc:
            return exc

    def send_in_turn(turn: list[_Claim]) -> list[tuple[_Claim, Any]]:
        return [(claim, send(claim)) for claim in sorted(turn, key=lambda c: c.created_at)]

    by_recipient: dict[str, list[_Claim]] = {}
    for claim in claims:
        by_recipient.setdefault(claim.recipient, []).append(claim)
    turns = sorted(by_recipient.values(),
                   key=lambda turn: (min(map(_priority, turn)), min(c.created_at for c in turn)))
    if pool is None or len(turns) < 2:
        return [pair for turn in turns for pair in send_in_turn(turn)]
    return [pair for result in pool.map(send_in_turn, turns) for pair in result]


def _claim(note: Notification, now: datetime, closed: str | None, opted_out: bool,
           gateway: str, templates: SmsTemplates, sender_id: str | None) -> str | None:
    """Settle a pending row without sending (returns why), or claim it for sending (None)."""
    if note.next_attempt_at is not None and note.next_attempt_at > now:
        return "not_due"
    if note.validity_s is not None and now > note.created_at + timedelta(
            seconds=note.validity_s):
        note.status = NotificationStatus.FAILED
        note.error = "stale: not sent after its validity period"
        return "stale"
    if closed is not None:
        note.status = NotificationStatus.SKIPPED
        note.error = closed
        return "closed"
    if opted_out:
        note.status = NotificationStatus.SKIPPED
        note.error = "recipient opted out"
        return "skipped"
    try:
        note.body = note.body or templates(note.kind, note.params, note.lang)
    except Exception as exc:  # a bug in a template must not hold up the rest of the batch
        log.exception("sms %s (%s) could not be written", note.id, note.kind)
        note.status = NotificationStatus.FAILED
        note.error = f"template failed: {type(exc).__name__}"
        return "failed"
    note.status = NotificationStatus.SENDING
    note.status_at = now
    note.attempts += 1
    note.gateway = gateway
    note.claimed_by = sender_id
    return None


def _validity_left(note: Notification, now: datetime) -> int | None:
    if note.validity_s is None:
        return None
    return max(1, note.validity_s - int((now - note.created_at).total_seconds()))


# Handed to the provider, or possibly so: the carer may have the offer on their phone.
_OFFER_MAY_HAVE_ARRIVED = frozenset({NotificationStatus.SENDING, NotificationStatus.UNKNOWN,
                                     NotificationStatus.SENT, NotificationStatus.DELIVERED})


def _closed_before_sending(uow: UnitOfWork, notes: list[Notification]) -> dict[str, str]:
    """Why an offer (or its withdrawal) is no longer worth sending, by notification id;
    the ones left out are to be sent. Two queries for any number of notes."""
    o, n = orm.offers.c, orm.notifications.c
    offers = {note.event_id.removeprefix("offer:"): note for note in notes
              if note.kind == "offer" and note.event_id.startswith("offer:")}
    rescinds = {f"offer:{note.params.get('offer_id')}": note for note in notes
                if note.kind == "offer_rescinded"}
    closed: dict[str, str] = {}
    if offers:
        for offer_id, status in uow.session.execute(
                select(o.id, o.status).where(o.id.in_(list(offers)))):
            if status != OfferStatus.OPEN.value:
                closed[offers[offer_id].id] = f"offer {status} before it was sent"
    if rescinds:
        arrived = {(event_id, recipient) for event_id, recipient, status in uow.session.execute(
            select(n.event_id, n.recipient, n.status).where(
                n.event_id.in_(list(rescinds)), n.kind == "offer"))
            if status in _OFFER_MAY_HAVE_ARRIVED}
        for event_id, note in rescinds.items():
            if (event_id, note.recipient) not in arrived:
                closed[note.id] = "the offer itself was never sent"
    return closed


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


def _abandoned_sending(now: datetime, sender_id: str | None) -> Any:
    """`sending` rows whose claimer will not settle them: a sender that is dead (no recent
    heartbeat, or forgotten), or a claimer that keeps no heartbeat, after a while."""
    n = orm.notifications.c
    others = n.claimed_by.is_not(None) if sender_id is None \
        else (n.claimed_by.is_not(None) & (n.claimed_by != sender_id))
    return (n.status == NotificationStatus.SENDING.value) & (
        (n.claimed_by.is_(None) & (n.status_at <= now - timedelta(seconds=STUCK_SENDING_S)))
        | (others & n.claimed_by.not_in(live_senders(now))))


def sweep_notifications(cmd: c.SweepNotifications, uow: UnitOfWork, clock: Clock,
                        sms: SmsSender, templates: SmsTemplates,
                        dispatcher_phone: str | None = None,
                        claims: SenderClaims | None = None, **_: Any) -> dict[str, int]:
    """Run by every worker on a timer: retries that are due, uncertain sends to look up."""
    claims = claims or LocalClaims()
    now = clock()
    n = orm.notifications.c
    with uow:
        due = list(uow.session.scalars(select(n.id).where(
            n.status == NotificationStatus.PENDING.value,
            # A retry that is due, or a first send nobody made (the worker that queued it
            # died before sending it; its message was lost with an emptied broker).
            ((n.next_attempt_at.is_not(None) & (n.next_attempt_at <= now))
             | (n.next_attempt_at.is_(None)
                & (n.created_at <= now - timedelta(seconds=NEVER_NUDGED_S))))
        ).limit(cmd.limit)))
        uncertain = list(uow.session.scalars(select(n.id).where(
            ((n.status == NotificationStatus.UNKNOWN.value) & (n.next_attempt_at <= now))
            | _abandoned_sending(now, claims.id)).limit(cmd.limit)))
        mine = set(uow.session.scalars(select(n.id).where(
            n.status == NotificationStatus.SENDING.value, n.claimed_by == claims.id))) \
            if claims.id is not None else set()
    # Taken after the query: a row of ours still held then is being sent; one not held was
    # let go unsettled (its settle failed) and no call of ours is sending it any more.
    uncertain += sorted(mine - claims.held())
    counts = {"retried": 0, "looked_up": 0}
    for notification_id in uncertain:
        if resolve_uncertain(notification_id, uow, clock, sms, dispatcher_phone) == "resend":
            due.append(notification_id)
        counts["looked_up"] += 1
    if due:
        deliver_notifications(c.DeliverNotifications(notification_ids=tuple(due)), uow,
                              clock, sms, templates, dispatcher_phone, claims=claims)
        counts["retried"] = len(set(due))
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
