"""Read models for the API and the console: plain dicts, straight from the tables."""

from __future__ import annotations

from typing import Any

from dispatch.domain.model import Request
from dispatch.unit_of_work import UnitOfWork
from schemas.phone import mask


def _iso(dt: Any) -> str | None:
    return dt.isoformat() if dt is not None else None


def request_summary(uow: UnitOfWork, request: Request) -> dict[str, Any]:
    carer = uow.carers.get(request.carer_id) if request.carer_id else None
    return {
        "id": request.id, "code": request.code, "service": request.service,
        "status": request.status, "family_id": request.family_id, "child_id": request.child_id,
        "start": _iso(request.start), "end": _iso(request.end),
        "location": request.location, "notes": request.notes, "channel": request.channel,
        "created_at": _iso(request.created_at), "updated_at": _iso(request.updated_at),
        "carer": {"id": carer.id, "name": carer.name} if carer else None,
    }


def request_detail(uow: UnitOfWork, request: Request) -> dict[str, Any]:
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
    detail = request_summary(uow, request)
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
