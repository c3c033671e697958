"""Finding carers for a request and offering them the job; escalating when nobody is left."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from dispatch import commands as c
from dispatch.domain.matching import select_candidates
from dispatch.domain.model import Actor, Request, RequestStatus
from dispatch.domain.policy import ServicePolicy
from dispatch.handlers.common import local_time, place_of
from dispatch.ports import Clock
from dispatch.unit_of_work import UnitOfWork
from schemas import messages as m


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
                           "place": place_of(request), "start": local_time(request.start, policy),
                           "end": local_time(request.end, policy, "%H:%M"),
                           "valid_until": local_time(expires, policy, "%H:%M")})
    uow.emit(m.RequestMatching(request_id=request.id, offers=len(offers)), key=request.id,
             now=now)
    return len(offers)


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
