"""Read models for the API and the console: plain dicts, straight from the tables."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from dispatch.domain.centers import Center, CenterRules, load_at
from dispatch.domain.model import Request, RequestStatus
from dispatch.domain.policy import ServicePolicy
from dispatch.handlers.common import fee_quote
from dispatch.unit_of_work import UnitOfWork
from schemas.phone import mask


def _iso(dt: Any) -> str | None:
    return dt.isoformat() if dt is not None else None


def request_fee(uow: UnitOfWork, request: Request,
                policies: Mapping[str, ServicePolicy] | None) -> dict[str, Any] | None:
    """The quote for this request, or None if its policy sets no fees (see fee_quote)."""
    policy = (policies or {}).get(request.service)
    priced = fee_quote(uow, request, policy) if policy is not None else None
    if priced is None:
        return None
    fee, usage = priced
    result = fee.as_dict()
    result["month_usage"] = {"uses": usage.uses, "minutes": usage.minutes}
    return result


def request_summary(uow: UnitOfWork, request: Request,
                    policies: Mapping[str, ServicePolicy] | None = None) -> dict[str, Any]:
    """`fee` is filled in when `policies` is given and the request's policy has fees."""
    carer = uow.carers.get(request.carer_id) if request.carer_id else None
    policy = (policies or {}).get(request.service)
    # The service's own clock (+09:00 in Gwangju): what the parent typed and reads in SMS.
    start, end = (request.start, request.end) if policy is None else (
        request.start.astimezone(policy.tz), request.end.astimezone(policy.tz))
    return {
        "id": request.id, "code": request.code, "service": request.service,
        "status": request.status, "family_id": request.family_id, "child_id": request.child_id,
        "start": _iso(start), "end": _iso(end),
        "location": request.location, "notes": request.notes, "channel": request.channel,
        "created_at": _iso(request.created_at), "updated_at": _iso(request.updated_at),
        "carer": {"id": carer.id, "name": carer.name} if carer else None,
        "fee": request_fee(uow, request, policies),
        # Centre mode: the centre, and whether the child's place still awaits a dispatcher.
        "center_id": request.location.get("center_id"),
        "provisional": _provisional(uow, request),
    }


def _provisional(uow: UnitOfWork, request: Request) -> bool:
    if not request.location.get("center_id") or request.status not in (
            RequestStatus.ASSIGNED, RequestStatus.IN_PROGRESS):
        return False
    booking = uow.centers.booking_for(request.id)
    return bool(booking is not None and booking.provisional)


def request_detail(uow: UnitOfWork, request: Request,
                   policies: Mapping[str, ServicePolicy] | None = None) -> dict[str, Any]:
    """The request and its whole story: state changes, offers, every SMS in and out."""
    timeline: list[dict[str, Any]] = [
        {"at": e.at, "seq": e.seq, "type": e.type, "actor": e.actor, "detail": e.detail}
        for e in request.timeline]
    for note in uow.notifications.for_request(request.id):
        timeline.append({"at": note.created_at, "seq": 100, "type": "sms_out", "actor": "system",
                         "detail": {"kind": note.kind, "to": mask(note.recipient),
                                    "status": note.status, "body": note.body,
                                    "error_code": note.error_code}})
    for sms in uow.inbound.for_request(request.id):
        timeline.append({"at": sms.received_at, "seq": 50, "type": "sms_in",
                         "actor": sms.sender_kind or "unknown",
                         "detail": {"from": mask(sms.from_phone), "body": sms.body,
                                    "verb": sms.verb, "outcome": sms.outcome}})
    timeline.sort(key=lambda e: (e["at"], e["seq"]))
    detail = request_summary(uow, request, policies)
    detail["offers"] = [{"carer_id": o.carer_id, "status": o.status,
                         "created_at": _iso(o.created_at), "expires_at": _iso(o.expires_at)}
                        for o in request.offers]
    detail["timeline"] = [{"at": _iso(e["at"]), "type": e["type"], "actor": e["actor"],
                           "detail": e["detail"]} for e in timeline]
    return detail


def carer_view(carer: Any, current_job: str | None = None) -> dict[str, Any]:
    return {"id": carer.id, "name": carer.name, "phone": carer.phone,
            "districts": carer.districts, "skills": carer.skills, "center_id": carer.center_id,
            "home": {"lat": carer.home_lat, "lon": carer.home_lon}
            if carer.home_lat is not None else None,
            "on_duty": carer.on_duty, "opted_out": carer.opted_out, "lang": carer.lang,
            "current_job": current_job}


def family_view(family: Any) -> dict[str, Any]:
    return {"id": family.id, "district": family.district,
            "guardian": {"name": family.guardian_name, "phone": family.guardian_phone},
            "children": [{"id": ch.id, "name": ch.name, "birth_date": ch.birth_date.isoformat(),
                          "disability": ch.disability} for ch in family.children],
            "consent": {"child_data": family.consent_child_data,
                        "health_data": family.consent_health_data}}


def center_groups(uow: UnitOfWork, center: Center, rules: CenterRules,
                  at: datetime) -> dict[str, Any]:
    """Each carer on shift at `center` at the moment `at`: the children in their group then,
    how many are sensitive, and the capacity that leaves (for the dispatcher's console)."""
    shifts = uow.centers.shifts_at(center.id, at)
    carer_ids = sorted({s.carer_id for s in shifts})
    held = uow.centers.bookings_of(carer_ids, at, at + timedelta(microseconds=1))
    groups = []
    for shift in shifts:
        carer = uow.carers.get(shift.carer_id)
        mine = [b for b in held if b.carer_id == shift.carer_id and b.start <= at < b.end]
        load = load_at(mine, at, ratio=rules.ratio, ratio_sensitive=rules.ratio_sensitive)
        groups.append({
            "carer": {"id": shift.carer_id, "name": carer.name if carer else None},
            "shift": {"id": shift.id, "start": _iso(shift.start), "end": _iso(shift.end)},
            "children": load.children, "sensitive": load.sensitive,
            "capacity": load.capacity, "free": load.free,
            "bookings": [{"request_id": b.request_id, "start": _iso(b.start),
                          "end": _iso(b.end), "sensitive": b.sensitive,
                          "provisional": b.provisional} for b in mine],
        })
    return {"center": {"id": center.id, "name": center.name, "name_ko": center.name_ko},
            "at": _iso(at), "groups": groups}
