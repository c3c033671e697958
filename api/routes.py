"""The /v1 API: parse, hand a command to the bus, answer. Nothing else happens here."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import AwareDatetime

from api.auth import Caller, require
from api.limits import FamiliesQuota, RequestsQuota
from dispatch import commands as c
from dispatch import views
from dispatch.domain.policy import ServicePolicy
from dispatch.messagebus import MessageBus
from dispatch.unit_of_work import UnitOfWork
from schemas import api as body
from schemas.phone import mask

router = APIRouter(prefix="/v1")

Dispatcher = Annotated[Caller, Depends(require("dispatcher"))]
Intake = Annotated[Caller, Depends(require("dispatcher", "intake"))]
Admin = Annotated[Caller, Depends(require("admin"))]


def _bus(request: Request) -> MessageBus:
    return request.app.state.bus  # type: ignore[no-any-return]


def _uow(request: Request) -> UnitOfWork:
    return request.app.state.uow_factory()  # type: ignore[no-any-return]


def _policies(request: Request) -> Mapping[str, ServicePolicy]:
    return request.app.state.policies  # type: ignore[no-any-return]


# -- carers -------------------------------------------------------------------------

@router.post("/carers", status_code=201)
def register_carer(data: body.CarerIn, request: Request, _: Dispatcher) -> dict[str, Any]:
    carer = _bus(request).handle(c.RegisterCarer(
        name=data.name, phone=data.phone, districts=list(data.districts), skills=list(data.skills),
        home_lat=data.home.lat if data.home else None, home_lon=data.home.lon if data.home else None,
        center_id=data.center_id, lang=data.lang))
    return views.carer_view(carer)


@router.get("/carers")
def list_carers(request: Request, _: Dispatcher) -> list[dict[str, Any]]:
    with _uow(request) as uow:
        jobs = uow.carers.current_jobs()
        return [views.carer_view(carer, jobs.get(carer.id)) for carer in uow.carers.all()]


@router.get("/carers/{carer_id}")
def get_carer(carer_id: str, request: Request, _: Dispatcher) -> dict[str, Any]:
    with _uow(request) as uow:
        carer = uow.carers.get(carer_id)
        if carer is None:
            raise HTTPException(404, "no such carer")
        return views.carer_view(carer, uow.carers.current_jobs().get(carer.id))


@router.put("/carers/{carer_id}/duty")
def set_duty(carer_id: str, data: body.DutyIn, request: Request,
             caller: Dispatcher) -> dict[str, Any]:
    carer = _bus(request).handle(c.SetDuty(carer_id=carer_id, on_duty=data.on_duty,
                                           actor=caller.name))
    return views.carer_view(carer)


# -- families -----------------------------------------------------------------------

@router.post("/families", status_code=201)
def register_family(data: body.FamilyIn, request: Request, _: Intake,
                    __: FamiliesQuota) -> dict[str, Any]:
    family = _bus(request).handle(c.RegisterFamily(
        guardian_name=data.guardian.name, guardian_phone=data.guardian.phone,
        district=data.district, address=data.address, pickup_guardians=list(data.pickup_guardians),
        children=[c.ChildDetails(name=ch.name, birth_date=ch.birth_date, disability=ch.disability)
                  for ch in data.children],
        consent_child_data=data.consent.child_data, consent_health_data=data.consent.health_data,
        lang=data.lang))
    return views.family_view(family)


@router.get("/families/{family_id}")
def get_family(family_id: str, request: Request, caller: Dispatcher) -> dict[str, Any]:
    """A family's record (guardian, children, consent): the read is in the audit log first."""
    family = _bus(request).handle(c.ReadFamily(family_id=family_id, reader=caller.name,
                                               role=caller.role,
                                               action="GET /v1/families/{family_id}"))
    return views.family_view(family)


@router.get("/audit")
def audit_log(request: Request, _: Admin,
              family_id: Annotated[str | None, Query(max_length=64)] = None,
              request_id: Annotated[str | None, Query(max_length=64)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    """Who read a family's record, newest first (admin)."""
    with _uow(request) as uow:
        return [{"at": e.at.isoformat(), "actor": e.actor, "role": e.role, "action": e.action,
                 "family_id": e.family_id, "request_id": e.request_id}
                for e in uow.audit.find(family_id=family_id, request_id=request_id,
                                        limit=limit)]


# -- requests -----------------------------------------------------------------------

@router.post("/requests", status_code=202)
def submit_request(data: body.RequestIn, request: Request, response: Response, caller: Intake,
                   _: RequestsQuota,
                   idempotency_key: Annotated[str | None, Header(max_length=200)] = None
                   ) -> dict[str, Any]:
    created, _ = _bus(request).handle(c.SubmitRequest(
        service=data.service, family_id=data.family_id, child_id=data.child_id,
        start=data.start, end=data.end, location=data.location.model_dump(exclude_none=True),
        notes=data.notes, created_by=caller.token_id,
        # Scoped to the caller, so two clients' keys can never collide.
        idempotency_key=f"{caller.token_id}:{idempotency_key}" if idempotency_key else None))
    response.headers["Location"] = f"/v1/requests/{created.id}"
    with _uow(request) as uow:
        return views.request_summary(uow, created, _policies(request))


def _visible(caller: Caller, created_by: str | None) -> bool:
    return caller.role == "dispatcher" or created_by == caller.token_id


@router.get("/requests")
def list_requests(request: Request, caller: Intake,
                  status: Annotated[str | None, Query(max_length=20)] = None,
                  service: Annotated[str | None, Query(max_length=40)] = None,
                  open: Annotated[bool | None, Query()] = None,
                  ) -> list[dict[str, Any]]:
    """Newest first; `open=true`: only open requests, most urgent first (escalated, then
    by start time); `open=false`: only closed ones."""
    with _uow(request) as uow:
        mine = None if caller.role == "dispatcher" else caller.token_id
        return views.request_summaries(
            uow, uow.requests.recent(status=status, created_by=mine, service=service,
                                     open_only=open), _policies(request))


@router.get("/requests/{request_id}")
def get_request(request_id: str, request: Request, caller: Intake) -> dict[str, Any]:
    """The request with its family's details: the read is in the audit log first."""
    found = _bus(request).handle(c.ReadRequest(
        request_id=request_id, reader=caller.name, role=caller.role,
        action="GET /v1/requests/{request_id}",
        owner_token=None if caller.role == "dispatcher" else caller.token_id))
    with _uow(request) as uow:
        return views.request_detail(uow, found, _policies(request))


@router.post("/requests/{request_id}/cancel")
def cancel_request(request_id: str, data: body.CancelIn, request: Request,
                   caller: Intake) -> dict[str, Any]:
    """A dispatcher cancels any request; an intake token (a parent's app) only the requests
    it created, as the parent: 404 for any other."""
    parent = caller.role != "dispatcher"
    cancelled = _bus(request).handle(c.CancelRequest(
        request_id=request_id, reason=data.reason or f"cancelled by {caller.name}",
        actor="parent" if parent else "dispatcher", by=caller.name,
        owner_token=caller.token_id if parent else None))
    with _uow(request) as uow:
        return views.request_summary(uow, cancelled, _policies(request))


@router.post("/requests/{request_id}/assign")
def assign_carer(request_id: str, data: body.AssignIn, request: Request,
                 caller: Dispatcher) -> dict[str, Any]:
    assigned = _bus(request).handle(c.AssignCarer(request_id=request_id, carer_id=data.carer_id,
                                                  dispatcher=caller.name))
    with _uow(request) as uow:
        return views.request_summary(uow, assigned, _policies(request))


@router.post("/requests/{request_id}/reoffer")
def reoffer_request(request_id: str, request: Request, caller: Dispatcher) -> dict[str, Any]:
    """Send the next offers now; 409 unless the request is matching or escalated."""
    found, offered = _bus(request).handle(c.ReofferRequest(request_id=request_id,
                                                            dispatcher=caller.name))
    with _uow(request) as uow:
        return {**views.request_summary(uow, found, _policies(request)),
                "offers_sent": offered}


@router.post("/requests/{request_id}/notes", status_code=201)
def add_note(request_id: str, data: body.NoteIn, request: Request,
             caller: Dispatcher) -> dict[str, Any]:
    entry = _bus(request).handle(c.AddNote(request_id=request_id, text=data.text,
                                           dispatcher=caller.name))
    return {"at": entry.at.isoformat(), "type": entry.type, "actor": entry.actor,
            "detail": entry.detail}


# -- operations ---------------------------------------------------------------------

@router.post("/tokens", status_code=201)
def create_token(data: body.TokenIn, request: Request, _: Admin) -> dict[str, str]:
    token = _bus(request).handle(c.CreateToken(name=data.name, role=data.role))
    return {"token": token, "role": data.role, "name": data.name}


@router.get("/policies")
def list_policies(request: Request, _: Annotated[Caller, Depends(require("admin", "dispatcher"))]
                  ) -> list[dict[str, Any]]:
    return [p.model_dump(mode="json") for p in request.app.state.policies.values()]


@router.post("/console/sms", status_code=202)
def console_sms(data: body.ConsoleSmsIn, request: Request, _: Dispatcher) -> dict[str, Any]:
    """Play a carer's or parent's reply when no real SMS provider is configured."""
    if request.app.state.settings.twilio_enabled:
        raise HTTPException(409, "Twilio is configured: real SMS arrive by webhook")
    sid = "CNIN" + uuid.uuid4().hex
    _bus(request).handle(c.ReceiveSms(message_sid=sid, from_phone=data.from_,
                                      to_phone="console", body=data.body))
    return {"message_sid": sid}


@router.get("/sms/unmatched")
def unmatched_sms(request: Request, _: Dispatcher,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
    """Inbound SMS linked to no request, newest first: what a person may need to read."""
    with _uow(request) as uow:
        return [{"id": sms.id, "from": mask(sms.from_phone), "body": sms.body,
                 "received_at": sms.received_at.isoformat(), "sender_kind": sms.sender_kind,
                 "verb": sms.verb, "outcome": sms.outcome}
                for sms in uow.inbound.unmatched(limit)]


# -- centres (centre mode) ----------------------------------------------------------

@router.post("/shifts", status_code=201)
def add_shift(data: body.ShiftIn, request: Request, _: Dispatcher) -> dict[str, Any]:
    shift = _bus(request).handle(c.AddShift(carer_id=data.carer_id, center_id=data.center_id,
                                            start=data.start, end=data.end))
    return {"id": shift.id, "carer_id": shift.carer_id, "center_id": shift.center_id,
            "start": shift.start.isoformat(), "end": shift.end.isoformat()}


@router.get("/centers/{center_id}/groups")
def center_groups(center_id: str, request: Request, _: Dispatcher,
                  at: Annotated[AwareDatetime | None, Query()] = None) -> dict[str, Any]:
    """Each carer on shift at the centre at `at` (default: now), with their group then."""
    for policy in _policies(request).values():
        rules = policy.center
        center = rules.center(center_id) if rules is not None else None
        if rules is not None and center is not None:
            with _uow(request) as uow:
                return views.center_groups(uow, center, rules, at or datetime.now(UTC))
    raise HTTPException(404, "no such centre")


@router.post("/requests/{request_id}/confirm")
def confirm_booking(request_id: str, request: Request, caller: Dispatcher) -> dict[str, Any]:
    """Confirm an infant's provisional place at a centre; 409 if there is none to confirm."""
    confirmed = _bus(request).handle(c.ConfirmBooking(request_id=request_id,
                                                      dispatcher=caller.name))
    with _uow(request) as uow:
        return views.request_summary(uow, confirmed, _policies(request))


# -- the dispatcher's board (issue 5) ----------------------------------------------------

@router.post("/requests/{request_id}/acknowledge")
def acknowledge_escalation(request_id: str, request: Request,
                           caller: Dispatcher) -> dict[str, Any]:
    """A dispatcher takes on an escalated request (the board stops alarming); 409 unless it
    is escalated; once acknowledged, again changes nothing."""
    found = _bus(request).handle(c.AcknowledgeEscalation(request_id=request_id,
                                                         actor=caller.name))
    with _uow(request) as uow:
        return views.request_summary(uow, found, _policies(request))


@router.get("/requests/{request_id}/candidates")
def assign_candidates(request_id: str, request: Request, _: Dispatcher) -> dict[str, Any]:
    """Carers for the assign picker, in the matching engine's rank order, with why."""
    with _uow(request) as uow:
        found = uow.requests.get(request_id)
        if found is None:
            raise HTTPException(404, "no such request")
        policy = _policies(request).get(found.service)
        if policy is None:
            raise HTTPException(404, "this request's service has no policy any more")
        return views.assign_candidates(uow, found, policy, datetime.now(UTC))
