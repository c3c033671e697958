"""Taking a request in: checked against its policy, stored, announced, the parent told."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dispatch import commands as c
from dispatch.domain.errors import Ineligible, NotFound
from dispatch.domain.model import Actor, Request, new_job_code
from dispatch.domain.policy import ServicePolicy, check_request
from dispatch.handlers.common import local_time
from dispatch.handlers.registration import HEALTH_CONSENT_MESSAGE
from dispatch.ports import Clock
from dispatch.unit_of_work import UnitOfWork
from schemas import messages as m


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
    # §23: a disabled child's request carries health data (the centre ratio, the carer's
    # skills). The policy checks a hospital admission; this covers every service and every
    # channel (API, SMS, phone), including a family registered before this check existed.
    if child.disability and not family.consent_health_data:
        raise Ineligible(HEALTH_CONSENT_MESSAGE, code="health_consent_required")
    # A double tap, an SMS sent twice, a call after a web request: a child is cared for in
    # one place at a time, and two requests would send two carers.
    twin = uow.requests.open_for_child(child.id, cmd.start, cmd.end)
    if twin is not None:
        raise Ineligible(f"this child already has request {twin.code} ({twin.status}) at an "
                         "overlapping time; cancel it first, or retry with the same "
                         "Idempotency-Key to get it back", code="duplicate_request")
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
                       "start": local_time(cmd.start, policy)})
    return request, True
