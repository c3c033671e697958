"""Inbound SMS: stored first by the webhook, then read by the worker with the grammar."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from dispatch import commands as c
from dispatch.domain.errors import Conflict
from dispatch.domain.model import ACCEPTING_STATUSES, Actor, Request, RequestStatus
from dispatch.domain.policy import ServicePolicy
from dispatch.handlers.common import local_time, place_of, send_address
from dispatch.handlers.dispatcher import cancel_open_request
from dispatch.handlers.intake import store_request
from dispatch.handlers.matching import (
    close_overlapping_offers,
    offer_next,
    offer_waiting_requests,
    rescind_open_offers,
    withdraw_assignment,
)
from dispatch.ports import Clock, SmsGrammar
from dispatch.records import InboundSms
from dispatch.sms_intake import IntakeParser, SmsIntake
from dispatch.unit_of_work import UnitOfWork
from schemas import messages as m
from schemas.phone import mask

log = logging.getLogger(__name__)


def receive_sms(cmd: c.ReceiveSms, uow: UnitOfWork, clock: Clock, **_: Any) -> bool:
    """Store first, interpret later (in the worker): Twilio gets its answer at once."""
    now = clock()
    with uow:
        if uow.inbound.by_sid(cmd.message_sid) is not None:
            return False
        inbound = InboundSms(message_sid=cmd.message_sid, from_phone=cmd.from_phone,
                             to_phone=cmd.to_phone, body=cmd.body, received_at=now)
        uow.inbound.add(inbound)
        if cmd.rate_limited:
            # Kept for the dispatcher (GET /v1/sms/unmatched), never interpreted or answered.
            inbound.outcome, inbound.handled_at = "rate_limited", now
        else:
            uow.emit(m.SmsReceived(inbound_id=inbound.id), key=cmd.from_phone, now=now)
        uow.commit()
        return True


def handle_inbound_sms(cmd: c.HandleInboundSms, uow: UnitOfWork, clock: Clock,
                       policies: Mapping[str, ServicePolicy], grammar: SmsGrammar,
                       intake: IntakeParser, dispatcher_phone: str | None = None,
                       **_: Any) -> str:
    now = clock()
    with uow:
        if not uow.first_time(cmd.event_id, "sms", now):
            return "duplicate"
        inbound = uow.inbound.get(cmd.inbound_id)
        if inbound is None or inbound.handled_at is not None:
            uow.commit()
            return "duplicate"
        parsed = grammar(inbound.body)
        sms = _InboundContext(uow, inbound, parsed.verb, parsed.code, now, policies, intake,
                              dispatcher_phone=dispatcher_phone)
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
                 intake: IntakeParser, dispatcher_phone: str | None = None) -> None:
        self.uow, self.inbound, self.now, self.policies = uow, inbound, now, policies
        self.dispatcher_phone = dispatcher_phone
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
                                    "start": local_time(request.start, policy)})
        self.reply("accepted_ack", {"code": code, "place": place_of(request),
                                    "start": local_time(request.start, policy)}, request.id)
        send_address(self.uow, request, self.carer, result.assignment.id, self.now)
        self.uow.emit(m.RequestAssigned(request_id=request.id, carer_id=self.carer.id,
                                        assignment_id=result.assignment.id),
                      key=request.id, now=self.now)
        # The others' offers closed with this YES: tell them, so nobody sets off for nothing.
        rescind_open_offers(self.uow, request, self.now, "filled")
        close_overlapping_offers(self.uow, self.carer.id, request, self.policies, self.now,
                                 self.dispatcher_phone)
        return "assigned"

    def decline(self) -> str:
        assert self.carer is not None
        request = self._request_for_code(self.code)
        if request is not None and request.carer_id == self.carer.id \
                and request.status == RequestStatus.ASSIGNED:
            return self.withdraw(request)  # NO with the code of the job they took
        if request is None and self.code is None:
            open_offers = self.uow.carers.open_offers(self.carer.id, self.now)
            if len(open_offers) == 1:
                request = self.uow.requests.get(open_offers[0][0].request_id, for_update=True)
        if request is None or not request.decline(self.carer.id, self.now):
            self.reply("no_open_offer", {"code": self.code or ""})
            return "no_open_offer"
        self.inbound.request_id = request.id
        self.reply("declined_ack", {"code": request.code}, request.id)
        if request.status in ACCEPTING_STATUSES:  # a NO moves on at once, per the strategy
            offer_next(self.uow, request, self.policies[request.service], self.now,
                       self.dispatcher_phone)
        return "declined"

    def withdraw(self, request: Request) -> str:
        """The assigned carer can't go after all: release the job and find someone else."""
        assert self.carer is not None
        self.inbound.request_id = request.id
        withdraw_assignment(self.uow, request, self.carer, self.policies[request.service],
                            self.now, self.dispatcher_phone)
        self.reply("withdrawn_ack", {"code": request.code}, request.id)
        return "withdrawn"

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
        changed = self.carer.on_duty != on
        if changed:
            self.carer.on_duty = on
            self.uow.emit(m.CarerDutyChanged(carer_id=self.carer.id, on_duty=on),
                          key=self.carer.id, now=self.now)
        # The reply first: the carer reads "on duty" before any offer it brings.
        self.reply("duty_on" if on else "duty_off")
        if changed and on:
            offer_waiting_requests(self.uow, self.carer.id, self.policies, self.now,
                                   self.dispatcher_phone)
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
            cancel_open_request(self.uow, request, self.now, Actor.PARENT, "parent asked by SMS",
                                policies=self.policies, dispatcher_phone=self.dispatcher_phone)
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
