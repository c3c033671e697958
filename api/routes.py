"""The /v1 API: parse, hand a command to the bus, answer. Nothing else happens here."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response

from api.auth import Caller, require
from dispatch import commands as c
from dispatch import views
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
def register_family(data: body.FamilyIn, request: Request, _: Intake) -> dict[str, Any]:
    family = _bus(request).handle(c.RegisterFamily(
        guardian_name=data.guardian.name, guardian_phone=data.guardian.phone,
        district=data.district, address=data.address, pickup_guardians=list(data.pickup_guardians),
        children=[c.ChildDetails(name=ch.name, birth_date=ch.birth_date, disability=ch.disability)
                  for ch in data.children],
        consent_child_data=data.consent.child_data, consent_health_data=data.consent.health_data,
        lang=data.lang))
    return views.family_view(family)


# -- requests -----------------------------------------------------------------------

@router.post("/requests", status_code=202)
def submit_request(data: body.RequestIn, request: Request, response: Response, caller: Intake,
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
        return views.request_summary(uow, created)


def _visible(caller: Caller, created_by: str | None) -> bool:
    return caller.role == "dispatcher" or created_by == caller.token_id


@router.get("/requests")
def list_requests(request: Request, caller: Intake,
                  status: Annotated[str | None, Query(max_length=20)] = None
                  ) -> list[dict[str, Any]]:
    with _uow(request) as uow:
        mine = None if caller.role == "dispatcher" else caller.token_id
        return [views.request_summary(uow, r)
                for r in uow.requests.recent(status=status, created_by=mine)]


@router.get("/requests/{request_id}")
def get_request(request_id: str, request: Request, caller: Intake) -> dict[str, Any]:
    with _uow(request) as uow:
        found = uow.requests.get(request_id)
        if found is None or not _visible(caller, found.created_by):
            raise HTTPException(404, "no such request")
        return views.request_detail(uow, found)


@router.post("/requests/{request_id}/cancel")
def cancel_request(request_id: str, data: body.CancelIn, request: Request,
                   caller: Dispatcher) -> dict[str, Any]:
    cancelled = _bus(request).handle(c.CancelRequest(
        request_id=request_id, reason=data.reason or f"cancelled by {caller.name}",
        actor="dispatcher"))
    with _uow(request) as uow:
        return views.request_summary(uow, cancelled)


@router.post("/requests/{request_id}/assign")
def assign_carer(request_id: str, data: body.AssignIn, request: Request,
                 caller: Dispatcher) -> dict[str, Any]:
    assigned = _bus(request).handle(c.AssignCarer(request_id=request_id, carer_id=data.carer_id,
                                                  dispatcher=caller.name))
    with _uow(request) as uow:
        return views.request_summary(uow, assigned)


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
