"""What a dispatcher (or a parent) can do to a request: cancel it, assign a carer, send the
next offers now, add a note, acknowledge an escalation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from dispatch import commands as c
from dispatch.domain.errors import Conflict, NotFound
from dispatch.domain.model import ACCEPTING_STATUSES, Actor, Request, RequestStatus, TimelineEntry
from dispatch.domain.policy import ServicePolicy
from dispatch.handlers.centers import book_place, book_waitlisted
from dispatch.handlers.common import local_time, place_of, send_address
from dispatch.handlers.matching import (
    close_overlapping_offers,
    offer_next,
    rescind_open_offers,
)
from dispatch.ports import Clock
from dispatch.unit_of_work import UnitOfWork
from schemas import messages as m


def cancel_open_request(uow: UnitOfWork, request: Request, now: datetime, actor: Actor, reason: str,
                        by: str | None = None,
                        policies: Mapping[str, ServicePolicy] | None = None,
                        dispatcher_phone: str | None = None) -> None:
    """Cancel, tell the parent and the carer, close open offers; a centre place given up
    goes to a child waiting for one there (with `policies`)."""
    carer_id = request.carer_id
    gave_up_place = request.status in (RequestStatus.ASSIGNED, RequestStatus.IN_PROGRESS) \
        and policies is not None and policies[request.service].mode == "center"
    request.cancel(now, actor, reason, by=by)
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
    rescind_open_offers(uow, request, now, "cancelled")  # carers still holding an offer
    center_id = request.location.get("center_id")
    if gave_up_place and policies is not None and isinstance(center_id, str):
        book_waitlisted(uow, center_id, policies, now, dispatcher_phone)


def cancel_request(cmd: c.CancelRequest, uow: UnitOfWork, clock: Clock,
                   policies: Mapping[str, ServicePolicy] | None = None,
                   dispatcher_phone: str | None = None, **_: Any) -> Request:
    now = clock()
    with uow:
        request = uow.requests.get(cmd.request_id, for_update=True)
        if request is None or (cmd.owner_token is not None
                               and request.created_by != cmd.owner_token):
            raise NotFound("no such request")
        if request.status == RequestStatus.CANCELLED:
            return request
        cancel_open_request(uow, request, now, Actor(cmd.actor), cmd.reason, by=cmd.by,
                            policies=policies, dispatcher_phone=dispatcher_phone)
        uow.commit()
        return request


def assign_carer(cmd: c.AssignCarer, uow: UnitOfWork, clock: Clock,
                 policies: Mapping[str, ServicePolicy], dispatcher_phone: str | None = None,
                 **_: Any) -> Request:
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
        if policy.mode == "center":
            # A centre child joins the chosen carer's group, within the ratio, or not at all.
            book_place(uow, request, policy, now, None, only_carer=carer.id)
            request.record(now, "dispatcher_assigned", Actor.DISPATCHER,
                           {"dispatcher": cmd.dispatcher, "carer_id": carer.id})
            uow.commit()
            return request
        buffer = timedelta(minutes=policy.travel_buffer_minutes)
        if uow.carers.overlapping(carer.id, request.start - buffer, request.end + buffer):
            raise Conflict("the carer is busy in that window", code="carer_busy")
        if request.open_offer_for(carer.id) is None:
            request.make_offers([carer.id], now, now + timedelta(minutes=1))
        result = request.accept(carer.id, now)
        assert result.won and result.assignment is not None
        rescind_open_offers(uow, request, now, "filled")
        request.record(now, "dispatcher_assigned", Actor.DISPATCHER,
                       {"dispatcher": cmd.dispatcher, "carer_id": carer.id})
        family = uow.families.get(request.family_id)
        if family is not None:
            uow.notify(event_id=f"assigned:{result.assignment.id}",
                       recipient=family.guardian_phone, kind="assigned", lang=family.lang,
                       request_id=request.id, now=now,
                       params={"code": request.code, "carer_name": carer.name,
                               "start": local_time(request.start, policy)})
        uow.notify(event_id=f"assigned:{result.assignment.id}", recipient=carer.phone,
                   kind="accepted_ack", lang=carer.lang, request_id=request.id, now=now,
                   params={"code": request.code, "place": place_of(request),
                           "start": local_time(request.start, policy)})
        send_address(uow, request, carer, result.assignment.id, now)
        uow.emit(m.RequestAssigned(request_id=request.id, carer_id=carer.id,
                                   assignment_id=result.assignment.id), key=request.id, now=now)
        close_overlapping_offers(uow, carer.id, request, policies, now, dispatcher_phone)
        uow.commit()
        return request


def reoffer_request(cmd: c.ReofferRequest, uow: UnitOfWork, clock: Clock,
                    policies: Mapping[str, ServicePolicy], dispatcher_phone: str | None = None,
                    **_: Any) -> tuple[Request, int]:
    """Send the next wave of offers now, without waiting for the current ones to run out.
    Only for a request still looking for a carer (matching or escalated): 409 otherwise."""
    now = clock()
    with uow:
        request = uow.requests.get(cmd.request_id, for_update=True)
        if request is None:
            raise NotFound("no such request")
        if request.status not in ACCEPTING_STATUSES:
            raise Conflict(f"request is {request.status}: only a request that is matching or "
                           "escalated can be offered again", code="not_matching")
        policy = policies[request.service]
        if policy.mode != "visit":
            raise Conflict(f"{policy.label} books children into a centre: no offers to send",
                           code="not_matching")
        offered = offer_next(uow, request, policy, now, dispatcher_phone, force=True)
        request.record(now, "reoffered", Actor.DISPATCHER,
                       {"dispatcher": cmd.dispatcher, "offers": offered})
        uow.commit()
        return request, offered


def add_note(cmd: c.AddNote, uow: UnitOfWork, clock: Clock, **_: Any) -> TimelineEntry:
    """A dispatcher's note, kept on the request's timeline (never sent to Kafka)."""
    now = clock()
    with uow:
        request = uow.requests.get(cmd.request_id, for_update=True)
        if request is None:
            raise NotFound("no such request")
        entry = request.record(now, "note", Actor.DISPATCHER,
                               {"text": cmd.text, "dispatcher": cmd.dispatcher})
        uow.commit()
        return entry


ESCALATED = "escalated"
ACKNOWLEDGED = "escalation_acknowledged"


def escalation_state(entries: Iterable[tuple[str, datetime, dict[str, Any]]]
                     ) -> dict[str, Any] | None:
    """The latest escalation of a request and whether a dispatcher has acknowledged it, from
    its timeline as (type, at, detail) in order; None if it was never escalated.

    Derived from the timeline, not stored in a column: an acknowledgement answers the
    escalation before it, so a request escalated again (its carer withdrew) alarms again.
    """
    state: dict[str, Any] | None = None
    for type_, at, detail in entries:
        if type_ == ESCALATED:
            state = {"at": at, "reason": detail.get("reason"), "acknowledged_at": None,
                     "acknowledged_by": None}
        elif type_ == ACKNOWLEDGED and state is not None and state["acknowledged_at"] is None:
            state["acknowledged_at"] = at
            state["acknowledged_by"] = detail.get("dispatcher")
    return state


def acknowledge_escalation(cmd: c.AcknowledgeEscalation, uow: UnitOfWork, clock: Clock,
                           **_: Any) -> Request:
    """A dispatcher takes on an escalated request: recorded on its timeline with their name
    and announced, so every open board stops alarming. 409 unless the request is escalated;
    acknowledging an escalation already acknowledged changes nothing."""
    now = clock()
    with uow:
        request = uow.requests.get(cmd.request_id, for_update=True)
        if request is None:
            raise NotFound("no such request")
        if request.status != RequestStatus.ESCALATED:
            raise Conflict(f"request is {request.status}: only an escalated request can be "
                           "acknowledged", code="not_escalated")
        state = escalation_state((e.type, e.at, e.detail) for e in request.timeline)
        if state is not None and state["acknowledged_at"] is not None:
            return request
        request.record(now, ACKNOWLEDGED, Actor.DISPATCHER,
                       {"dispatcher": cmd.actor,
                        "reason": state["reason"] if state is not None else None})
        uow.emit(m.EscalationAcknowledged(request_id=request.id), key=request.id, now=now)
        uow.commit()
        return request
