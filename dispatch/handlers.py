"""Handlers: plain functions, one per command, each one transaction.

Every handler is idempotent. A message from Kafka is applied once per `event_id` (the
inbox), an SMS is queued once per (event, recipient, kind), and every transition checks
the current state first, so a replay changes nothing and sends nothing.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from dispatch import commands as c
from dispatch import delivery
from dispatch.domain.errors import Conflict, Ineligible, NotFound
from dispatch.domain.matching import select_candidates
from dispatch.domain.model import (
    Actor,
    Carer,
    Child,
    Family,
    Request,
    RequestStatus,
    new_job_code,
)
from dispatch.domain.policy import ServicePolicy, check_request
from dispatch.ports import Clock, SmsGrammar
from dispatch.records import ApiToken, InboundSms
from dispatch.sms_intake import IntakeParser, SmsIntake
from dispatch.unit_of_work import UnitOfWork
from schemas import messages as m
from schemas.phone import mask

log = logging.getLogger(__name__)

ROLES = ("dispatcher", "intake", "admin")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _local(dt: datetime, policy: ServicePolicy, fmt: str = "%m/%d %H:%M") -> str:
    return dt.astimezone(policy.tz).strftime(fmt)


# -- registration -------------------------------------------------------------------

def register_carer(cmd: c.RegisterCarer, uow: UnitOfWork, clock: Clock, **_: Any) -> Carer:
    with uow:
        if uow.carers.by_phone(cmd.phone) is not None:
            raise Conflict("a carer with this phone number is already registered",
                           code="phone_taken")
        carer = Carer(name=cmd.name, phone=cmd.phone, districts=cmd.districts, skills=cmd.skills,
                      home_lat=cmd.home_lat, home_lon=cmd.home_lon, center_id=cmd.center_id,
                      lang=cmd.lang, created_at=clock())
        uow.carers.add(carer)
        uow.commit()
        return carer


def set_duty(cmd: c.SetDuty, uow: UnitOfWork, clock: Clock, **_: Any) -> Carer:
    with uow:
        carer = uow.carers.get(cmd.carer_id)
        if carer is None:
            raise NotFound("no such carer")
        if carer.on_duty != cmd.on_duty:
            carer.on_duty = cmd.on_duty
            uow.emit(m.CarerDutyChanged(carer_id=carer.id, on_duty=cmd.on_duty), key=carer.id,
                     now=clock())
        uow.commit()
        return carer


def register_family(cmd: c.RegisterFamily, uow: UnitOfWork, clock: Clock, **_: Any) -> Family:
    # 개인정보보호법 §22-2: a child's data needs the guardian's recorded consent.
    if not cmd.consent_child_data:
        raise Ineligible("a guardian's consent to store the child's data is required "
                         "(consent.child_data = true)", code="consent_required")
    with uow:
        family = Family(
            guardian_name=cmd.guardian_name, guardian_phone=cmd.guardian_phone,
            district=cmd.district, address=cmd.address, pickup_guardians=cmd.pickup_guardians,
            consent_child_data=True, consent_health_data=cmd.consent_health_data,
            consent_at=clock(), lang=cmd.lang,
            children=[Child(name=ch.name, birth_date=ch.birth_date, disability=ch.disability)
                      for ch in cmd.children])
        uow.families.add(family)
        uow.commit()
        return family


# -- intake -------------------------------------------------------------------------

def submit_request(cmd: c.SubmitRequest, uow: UnitOfWork, clock: Clock,
                   policies: Mapping[str, ServicePolicy], **_: Any) -> tuple[Request, bool]:
    """Store a request and announce it. Returns (request, created); a repeated
    Idempotency-Key returns the first request and False."""
    policy = policies.get(cmd.service)
    if policy is None:
        raise Ineligible(f"unknown service {cmd.service!r}; known: {', '.join(sorted(policies))}",
                         code="unknown_service")
    now = clock()
    with uow:
        request, created = store_request(uow, cmd, policy, now)
        if created:
            uow.commit()
        return request, created


def store_request(uow: UnitOfWork, cmd: c.SubmitRequest, policy: ServicePolicy,
                  now: datetime) -> tuple[Request, bool]:
    """submit_request's work inside an open unit of work; the caller commits. Shared with
    SMS intake (dispatch/sms_intake.py), so a request asked for by SMS is the API's request."""
    if cmd.idempotency_key:
        earlier = uow.requests.by_idempotency_key(cmd.idempotency_key)
        if earlier is not None:
            return earlier, False
    family = uow.families.get(cmd.family_id)
    if family is None:
        raise NotFound("no such family")
    child = family.child(cmd.child_id)
    if child is None:
        raise NotFound("no such child in this family")
    check_request(policy, birth_date=child.birth_date, start=cmd.start, end=cmd.end,
                  location=cmd.location, now=now,
                  consent_health_data=family.consent_health_data)
    location = dict(cmd.location)
    location.setdefault("district", family.district)
    taken = uow.requests.open_codes()
    code = new_job_code()
    while code in taken:
        code = new_job_code()
    request = Request(service=policy.id, family_id=family.id, child_id=child.id,
                      start=cmd.start, end=cmd.end, location=location, code=code,
                      created_at=now, notes=cmd.notes, idempotency_key=cmd.idempotency_key,
                      created_by=cmd.created_by, channel=cmd.channel)
    request.record(now, "received", Actor.PARENT, {"channel": cmd.channel})
    uow.requests.add(request)
    uow.emit(m.RequestReceived(request_id=request.id, service=policy.id), key=request.id,
             now=now)
    uow.notify(event_id=f"received:{request.id}", recipient=family.guardian_phone,
               kind="request_received", lang=family.lang, request_id=request.id, now=now,
               params={"code": code, "service_label": policy.label,
                       "start": _local(cmd.start, policy)})
    return request, True


# -- matching -----------------------------------------------------------------------

def start_matching(cmd: c.StartMatching, uow: UnitOfWork, clock: Clock,
                   policies: Mapping[str, ServicePolicy], dispatcher_phone: str | None = None,
                   **_: Any) -> int:
    now = clock()
    with uow:
        if not uow.first_time(cmd.event_id, "matching", now):
            return 0
        request = uow.requests.get(cmd.request_id, for_update=True)
        if request is None or request.status != RequestStatus.RECEIVED:
            uow.commit()
            return 0
        offered = offer_next(uow, request, policies[request.service], now, dispatcher_phone)
        uow.commit()
        return offered


def offer_next(uow: UnitOfWork, request: Request, policy: ServicePolicy, now: datetime,
               dispatcher_phone: str | None, limit: int | None = None) -> int:
    """Offer the job to the next best carers not yet asked; escalate when nobody is left."""
    buffer = timedelta(minutes=policy.travel_buffer_minutes)
    candidates = select_candidates(
        policy, uow.carers.available(), district=request.location.get("district"),
        busy=uow.carers.busy_between(request.start - buffer, request.end + buffer),
        exclude=request.offered_carer_ids(),
        jobs_today=uow.carers.jobs_since(now - timedelta(hours=24)),
        lat=request.location.get("lat"), lon=request.location.get("lon"),
        limit=limit or policy.offers.wave_size)
    if not candidates:
        if request.status != RequestStatus.ESCALATED and not any(o.is_open for o in request.offers):
            _escalate(uow, request, policy, now, "no_candidates", dispatcher_phone)
        return 0
    expires = now + timedelta(seconds=policy.offers.timeout_s)
    offers = request.make_offers([cand.carer.id for cand in candidates], now, expires)
    by_id = {cand.carer.id: cand.carer for cand in candidates}
    for offer in offers:
        carer = by_id[offer.carer_id]
        uow.notify(event_id=f"offer:{offer.id}", recipient=carer.phone, kind="offer",
                   lang=carer.lang, request_id=request.id, now=now,
                   validity_s=policy.offers.timeout_s,
                   params={"code": request.code, "service_label": policy.label,
                           "place": _place(request), "start": _local(request.start, policy),
                           "end": _local(request.end, policy, "%H:%M"),
                           "valid_until": _local(expires, policy, "%H:%M")})
    uow.emit(m.RequestMatching(request_id=request.id, offers=len(offers)), key=request.id,
             now=now)
    return len(offers)


def _place(request: Request) -> str:
    return " ".join(str(request.location[k]) for k in ("hospital", "ward")
                    if request.location.get(k)) or str(request.location.get("district", ""))


def _escalate(uow: UnitOfWork, request: Request, policy: ServicePolicy, now: datetime,
              reason: str, dispatcher_phone: str | None) -> None:
    request.status = RequestStatus.ESCALATED
    request.record(now, "escalated", Actor.SYSTEM, {"reason": reason})
    uow.emit(m.RequestEscalated(request_id=request.id, reason=reason), key=request.id, now=now)
    family = uow.families.get(request.family_id)
    if family is not None:
        uow.notify(event_id=f"escalated:{request.id}", recipient=family.guardian_phone,
                   kind="escalated", lang=family.lang, request_id=request.id, now=now,
                   params={"code": request.code})
    if dispatcher_phone:
        uow.notify(event_id=f"escalated:{request.id}", recipient=dispatcher_phone,
                   kind="dispatcher_escalation", request_id=request.id, now=now,
                   params={"code": request.code, "service_label": policy.label,
                           "reason": reason})


# -- SMS in -------------------------------------------------------------------------

def receive_sms(cmd: c.ReceiveSms, uow: UnitOfWork, clock: Clock, **_: Any) -> bool:
    """Store first, interpret later (in the worker): Twilio gets its answer at once."""
    now = clock()
    with uow:
        if uow.inbound.by_sid(cmd.message_sid) is not None:
            return False
        inbound = InboundSms(message_sid=cmd.message_sid, from_phone=cmd.from_phone,
                             to_phone=cmd.to_phone, body=cmd.body, received_at=now)
        uow.inbound.add(inbound)
        uow.emit(m.SmsReceived(inbound_id=inbound.id), key=cmd.from_phone, now=now)
        uow.commit()
        return True


def handle_inbound_sms(cmd: c.HandleInboundSms, uow: UnitOfWork, clock: Clock,
                       policies: Mapping[str, ServicePolicy], grammar: SmsGrammar,
                       intake: IntakeParser, **_: Any) -> str:
    now = clock()
    with uow:
        if not uow.first_time(cmd.event_id, "sms", now):
            return "duplicate"
        inbound = uow.inbound.get(cmd.inbound_id)
        if inbound is None or inbound.handled_at is not None:
            uow.commit()
            return "duplicate"
        parsed = grammar(inbound.body)
        sms = _InboundContext(uow, inbound, parsed.verb, parsed.code, now, policies, intake)
        outcome = sms.route()
        inbound.verb = parsed.verb
        inbound.outcome = outcome
        inbound.handled_at = now
        uow.commit()
        log.info("sms from %s: %s -> %s", mask(inbound.from_phone), parsed.verb, outcome)
        return outcome


class _InboundContext:
    """Interprets one inbound SMS against who sent it and what they have open."""

    def __init__(self, uow: UnitOfWork, inbound: InboundSms, verb: str, code: str | None,
                 now: datetime, policies: Mapping[str, ServicePolicy],
                 intake: IntakeParser) -> None:
        self.uow, self.inbound, self.now, self.policies = uow, inbound, now, policies
        self.verb, self.code, self.intake_parser = verb, code, intake
        self.carer = uow.carers.by_phone(inbound.from_phone)
        self.family = uow.families.by_phone(inbound.from_phone) if self.carer is None else None
        inbound.sender_kind = "carer" if self.carer else "parent" if self.family else "unknown"

    def reply(self, kind: str, params: dict[str, Any] | None = None,
              request_id: str | None = None) -> None:
        lang = self.carer.lang if self.carer else self.family.lang if self.family else "ko"
        self.uow.notify(event_id=f"reply:{self.inbound.id}", recipient=self.inbound.from_phone,
                        kind=kind, params=params or {}, lang=lang,
                        request_id=request_id or self.inbound.request_id, now=self.now)

    def route(self) -> str:
        verb = self.verb
        if verb == "twilio_keyword":
            return self.opt_out_keyword()
        if self.carer is not None:
            handler = {"accept": self.accept, "decline": self.decline,
                       "arrived": self.arrived, "done": self.done,
                       "on_duty": lambda: self.duty(True),
                       "off_duty": lambda: self.duty(False)}.get(verb)
        elif self.family is not None:
            handler = {"cancel": self.cancel, "status": self.status,
                       "accept": self.confirm_draft, "decline": self.decline_draft,
                       "unknown": self.intake}.get(verb)
        else:
            self.reply("unknown_number")
            return "unknown_number"
        if handler is None:
            self.reply("help")
            return "help"
        return handler()

    def opt_out_keyword(self) -> str:
        # Twilio itself answers STOP/START; we only remember the person's choice.
        word = self.inbound.body.strip().upper()
        person = self.carer or self.family
        if person is None:
            return "keyword_unknown_sender"
        if word.startswith(("START", "UNSTOP")):
            person.opted_out = False
            return "opted_in"
        if word.startswith(("HELP", "INFO")):
            return "twilio_help"
        person.opted_out = True
        return "opted_out"

    def _request_for_code(self, code: str | None) -> Request | None:
        if code is not None:
            found = self.uow.requests.by_open_code(code)
            return self.uow.requests.get(found.id, for_update=True) if found else None
        return None

    def accept(self) -> str:
        assert self.carer is not None
        code = self.code
        if code is None:
            open_offers = self.uow.carers.open_offers(self.carer.id, self.now)
            if len(open_offers) > 1:
                self.reply("which_code", {"codes": ", ".join(sorted(cd for _, cd in open_offers))})
                return "ambiguous"
            if not open_offers:
                self.reply("no_open_offer", {"code": ""})
                return "no_open_offer"
            code = open_offers[0][1]
        request = self._request_for_code(code)
        if request is None or self.carer.id not in request.offered_carer_ids():
            self.reply("no_open_offer", {"code": code})
            return "no_open_offer"
        self.inbound.request_id = request.id
        policy = self.policies[request.service]
        buffer = timedelta(minutes=policy.travel_buffer_minutes)
        if request.status in (RequestStatus.MATCHING, RequestStatus.ESCALATED) and \
                self.uow.carers.overlapping(self.carer.id, request.start - buffer,
                                            request.end + buffer):
            self.reply("busy_conflict", {"code": code}, request.id)
            request.record(self.now, "accept_refused_busy", Actor.CARER,
                           {"carer_id": self.carer.id})
            return "busy"
        result = request.accept(self.carer.id, self.now)
        if not result.won:
            kind = "already_filled" if result.reason == "already_filled" else "no_open_offer"
            self.reply(kind, {"code": code}, request.id)
            return result.reason
        assert result.assignment is not None
        family = self.uow.families.get(request.family_id)
        # The parent first: with a per-sender rate limit, queue order is send order.
        if family is not None:
            self.uow.notify(event_id=f"assigned:{result.assignment.id}",
                            recipient=family.guardian_phone, kind="assigned", lang=family.lang,
                            request_id=request.id, now=self.now,
                            params={"code": code, "carer_name": self.carer.name,
                                    "start": _local(request.start, policy)})
        self.reply("accepted_ack", {"code": code, "place": _place(request),
                                    "start": _local(request.start, policy)}, request.id)
        self.uow.emit(m.RequestAssigned(request_id=request.id, carer_id=self.carer.id,
                                        assignment_id=result.assignment.id),
                      key=request.id, now=self.now)
        return "assigned"

    def decline(self) -> str:
        assert self.carer is not None
        request = self._request_for_code(self.code)
        if request is None and self.code is None:
            open_offers = self.uow.carers.open_offers(self.carer.id, self.now)
            if len(open_offers) == 1:
                request = self.uow.requests.get(open_offers[0][0].request_id, for_update=True)
        if request is None or not request.decline(self.carer.id, self.now):
            self.reply("no_open_offer", {"code": self.code or ""})
            return "no_open_offer"
        self.inbound.request_id = request.id
        self.reply("declined_ack", {"code": request.code}, request.id)
        return "declined"

    def _my_job(self) -> Request | None:
        assert self.carer is not None
        request = self._request_for_code(self.code)
        if request is None and self.code is None:
            job = self.uow.carers.current_jobs().get(self.carer.id)
            request = self.uow.requests.get(job, for_update=True) if job else None
        return request if request is not None and request.carer_id == self.carer.id else None

    def arrived(self) -> str:
        request = self._my_job()
        if request is None or request.status != RequestStatus.ASSIGNED:
            self.reply("no_open_offer", {"code": self.code or ""})
            return "no_job"
        self.inbound.request_id = request.id
        request.mark_arrived(self.carer.id, self.now)  # type: ignore[union-attr]
        self._tell_parent(request, "arrived")
        return "arrived"

    def done(self) -> str:
        request = self._my_job()
        if request is None or request.status not in (RequestStatus.ASSIGNED,
                                                     RequestStatus.IN_PROGRESS):
            self.reply("no_open_offer", {"code": self.code or ""})
            return "no_job"
        self.inbound.request_id = request.id
        request.mark_done(self.carer.id, self.now)  # type: ignore[union-attr]
        self._tell_parent(request, "completed")
        return "completed"

    def _tell_parent(self, request: Request, kind: str) -> None:
        family = self.uow.families.get(request.family_id)
        if family is not None:
            self.uow.notify(event_id=f"{kind}:{request.id}", recipient=family.guardian_phone,
                            kind=kind, lang=family.lang, request_id=request.id, now=self.now,
                            params={"code": request.code,
                                    "carer_name": self.carer.name if self.carer else ""})

    def duty(self, on: bool) -> str:
        assert self.carer is not None
        if self.carer.on_duty != on:
            self.carer.on_duty = on
            self.uow.emit(m.CarerDutyChanged(carer_id=self.carer.id, on_duty=on),
                          key=self.carer.id, now=self.now)
        self.reply("duty_on" if on else "duty_off")
        return "on_duty" if on else "off_duty"

    def _family_request(self) -> Request | None:
        assert self.family is not None
        open_requests = self.uow.requests.open_for_family(self.family.id)
        if self.code is not None:
            open_requests = [r for r in open_requests if r.code == self.code]
        return self.uow.requests.get(open_requests[0].id, for_update=True) \
            if len(open_requests) == 1 else None

    def cancel(self) -> str:
        request = self._family_request()
        if request is None:
            self.reply("help")
            return "no_request"
        self.inbound.request_id = request.id
        try:
            _cancel(self.uow, request, self.now, Actor.PARENT, "parent asked by SMS")
        except Conflict:
            self.reply("status", {"code": request.code, "status_label": request.status})
            return "not_cancellable"
        return "cancelled"

    def status(self) -> str:
        request = self._family_request()
        if request is None:
            self.reply("help")
            return "no_request"
        self.inbound.request_id = request.id
        self.reply("status", {"code": request.code, "status_label": STATUS_LABELS.get(
            request.status, request.status)}, request.id)
        return "status"

    # A parent asking for care by SMS (dispatch/sms_intake.py).
    def _sms_intake(self) -> SmsIntake:
        assert self.family is not None
        return SmsIntake(self.uow, self.inbound, self.family, self.now, self.policies,
                         self.intake_parser, self.reply, store_request)

    def intake(self) -> str:
        outcome = self._sms_intake().answer()
        if outcome is None:
            self.reply("help")
            return "help"
        return outcome

    def confirm_draft(self) -> str:
        if self.code is not None:  # 네 4821 is a carer's answer, not a parent's
            self.reply("help")
            return "help"
        outcome = self._sms_intake().confirm()
        if outcome is None:  # e.g. a second 네: say where the request stands
            self.status()
            return "no_draft"
        return outcome

    def decline_draft(self) -> str:
        outcome = self._sms_intake().decline() if self.code is None else None
        if outcome is None:
            self.reply("help")
            return "help"
        return outcome


STATUS_LABELS = {
    "received": "접수됨", "matching": "돌봄 인력 찾는 중", "assigned": "배정 완료",
    "in_progress": "돌봄 중", "completed": "완료", "cancelled": "취소됨",
    "escalated": "상황실 담당자 확인 중",
}


def _cancel(uow: UnitOfWork, request: Request, now: datetime, actor: Actor, reason: str) -> None:
    carer_id = request.carer_id
    request.cancel(now, actor, reason)
    uow.emit(m.RequestCancelled(request_id=request.id), key=request.id, now=now)
    family = uow.families.get(request.family_id)
    if family is not None:
        uow.notify(event_id=f"cancelled:{request.id}", recipient=family.guardian_phone,
                   kind="cancelled", lang=family.lang, request_id=request.id, now=now,
                   params={"code": request.code})
    carer = uow.carers.get(carer_id) if carer_id else None
    if carer is not None:
        uow.notify(event_id=f"cancelled:{request.id}", recipient=carer.phone,
                   kind="job_cancelled", lang=carer.lang, request_id=request.id, now=now,
                   params={"code": request.code})


def cancel_request(cmd: c.CancelRequest, uow: UnitOfWork, clock: Clock, **_: Any) -> Request:
    now = clock()
    with uow:
        request = uow.requests.get(cmd.request_id, for_update=True)
        if request is None:
            raise NotFound("no such request")
        if request.status == RequestStatus.CANCELLED:
            return request
        _cancel(uow, request, now, Actor(cmd.actor), cmd.reason)
        uow.commit()
        return request


def assign_carer(cmd: c.AssignCarer, uow: UnitOfWork, clock: Clock,
                 policies: Mapping[str, ServicePolicy], **_: Any) -> Request:
    now = clock()
    with uow:
        request = uow.requests.get(cmd.request_id, for_update=True)
        if request is None:
            raise NotFound("no such request")
        carer = uow.carers.get(cmd.carer_id)
        if carer is None:
            raise NotFound("no such carer")
        if request.carer_id == carer.id and request.status == RequestStatus.ASSIGNED:
            return request
        if request.status not in (RequestStatus.RECEIVED, RequestStatus.MATCHING,
                                  RequestStatus.ESCALATED):
            raise Conflict(f"request is {request.status}", code="not_assignable")
        policy = policies[request.service]
        buffer = timedelta(minutes=policy.travel_buffer_minutes)
        if uow.carers.overlapping(carer.id, request.start - buffer, request.end + buffer):
            raise Conflict("the carer is busy in that window", code="carer_busy")
        if request.open_offer_for(carer.id) is None:
            request.make_offers([carer.id], now, now + timedelta(minutes=1))
        result = request.accept(carer.id, now)
        assert result.won and result.assignment is not None
        request.record(now, "dispatcher_assigned", Actor.DISPATCHER,
                       {"dispatcher": cmd.dispatcher, "carer_id": carer.id})
        family = uow.families.get(request.family_id)
        if family is not None:
            uow.notify(event_id=f"assigned:{result.assignment.id}",
                       recipient=family.guardian_phone, kind="assigned", lang=family.lang,
                       request_id=request.id, now=now,
                       params={"code": request.code, "carer_name": carer.name,
                               "start": _local(request.start, policy)})
        uow.notify(event_id=f"assigned:{result.assignment.id}", recipient=carer.phone,
                   kind="accepted_ack", lang=carer.lang, request_id=request.id, now=now,
                   params={"code": request.code, "place": _place(request),
                           "start": _local(request.start, policy)})
        uow.emit(m.RequestAssigned(request_id=request.id, carer_id=carer.id,
                                   assignment_id=result.assignment.id), key=request.id, now=now)
        uow.commit()
        return request


# -- tokens -------------------------------------------------------------------------

def create_token(cmd: c.CreateToken, uow: UnitOfWork, clock: Clock, **_: Any) -> str:
    if cmd.role not in ROLES:
        raise Ineligible(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
    token = "dlb_" + secrets.token_urlsafe(32)
    with uow:
        uow.tokens.add(ApiToken(name=cmd.name, role=cmd.role, token_hash=hash_token(token),
                                created_at=clock()))
        uow.commit()
    return token


HANDLERS: dict[type[c.Command], Callable[..., Any]] = {
    c.RegisterCarer: register_carer,
    c.SetDuty: set_duty,
    c.RegisterFamily: register_family,
    c.SubmitRequest: submit_request,
    c.StartMatching: start_matching,
    c.ReceiveSms: receive_sms,
    c.HandleInboundSms: handle_inbound_sms,
    c.DeliverNotification: delivery.deliver_notification,
    c.SweepNotifications: delivery.sweep_notifications,
    c.RecordDeliveryStatus: delivery.record_delivery_status,
    c.CancelRequest: cancel_request,
    c.AssignCarer: assign_carer,
    c.CreateToken: create_token,
}
