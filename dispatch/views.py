"""Read models for the API and the console: plain dicts, straight from the tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dispatch import orm
from dispatch.domain.centers import Booking, Center, CenterRules, load_at, place_booking
from dispatch.domain.fees import Quote, Usage
from dispatch.domain.matching import is_qualified
from dispatch.domain.model import OfferStatus, Request, RequestStatus
from dispatch.domain.policy import ServicePolicy, age_in_months
from dispatch.handlers.common import fee_quotes
from dispatch.handlers.dispatcher import ACKNOWLEDGED, ESCALATED, escalation_state
from dispatch.handlers.matching import find_candidates
from dispatch.unit_of_work import UnitOfWork
from schemas.phone import mask


def _iso(dt: Any) -> str | None:
    return dt.isoformat() if dt is not None else None


def _fee_dict(priced: tuple[Quote, Usage] | None) -> dict[str, Any] | None:
    """The quote for a request, or None if its policy sets no fees (see fee_quote)."""
    if priced is None:
        return None
    fee, usage = priced
    result = fee.as_dict()
    result["month_usage"] = {"uses": usage.uses, "minutes": usage.minutes}
    return result


def request_summary(uow: UnitOfWork, request: Request,
                    policies: Mapping[str, ServicePolicy] | None = None) -> dict[str, Any]:
    """`fee` is filled in when `policies` is given and the request's policy has fees."""
    return request_summaries(uow, [request], policies)[0]


def child_age_label(months: int) -> str:
    """A child's age as a Korean dispatcher says it: months under two (the ratio and the
    after-midnight rule count in months), whole years (만 나이) after."""
    return f"{months}개월" if months < 24 else f"{months // 12}세"


def request_summaries(uow: UnitOfWork, requests: Sequence[Request],
                      policies: Mapping[str, ServicePolicy] | None = None, *,
                      with_fee: bool = True, now: datetime | None = None
                      ) -> list[dict[str, Any]]:
    """Summaries of many requests in a fixed number of queries (not a few per request),
    for the board and the list. With `now`, only open offers still running then count for
    `offer_expires_at` (without it, every open offer)."""
    if not requests:
        return []
    ids = [r.id for r in requests]
    c_, ca, o, t = orm.children.c, orm.carers.c, orm.offers.c, orm.timeline.c
    births = dict(uow.session.execute(
        select(c_.id, c_.birth_date).where(c_.id.in_({r.child_id for r in requests}))).all())
    carer_ids = {r.carer_id for r in requests if r.carer_id}
    names = dict(uow.session.execute(
        select(ca.id, ca.name).where(ca.id.in_(carer_ids))).all()) if carer_ids else {}
    offers: dict[str, list[tuple[str, datetime]]] = {}
    for request_id, status, expires_at in uow.session.execute(
            select(o.request_id, o.status, o.expires_at).where(o.request_id.in_(ids))):
        offers.setdefault(request_id, []).append((status, expires_at))
    escalations: dict[str, list[tuple[str, datetime, dict[str, Any]]]] = {}
    for request_id, type_, at, detail in uow.session.execute(
            select(t.request_id, t.type, t.at, t.detail)
            .where(t.request_id.in_(ids), t.type.in_([ESCALATED, ACKNOWLEDGED]))
            .order_by(t.at, t.seq)):
        escalations.setdefault(request_id, []).append((type_, at, detail or {}))
    booked = uow.centers.bookings_for([r.id for r in requests if r.location.get("center_id")])
    fees = fee_quotes(uow, requests, policies or {}) if with_fee else {}
    return [_summary(r, (policies or {}).get(r.service), births.get(r.child_id),
                     names.get(r.carer_id) if r.carer_id else None, offers.get(r.id, []),
                     escalations.get(r.id, []), booked, _fee_dict(fees.get(r.id)), now=now)
            for r in requests]


def _summary(request: Request, policy: ServicePolicy | None,
             birth: date | None, carer_name: str | None,
             offers: list[tuple[str, datetime]],
             escalations: list[tuple[str, datetime, dict[str, Any]]],
             booked: Mapping[str, Any], fee: dict[str, Any] | None, *,
             now: datetime | None) -> dict[str, Any]:
    # The service's own clock (+09:00 in Gwangju): what the parent typed and reads in SMS.
    start, end = (request.start, request.end) if policy is None else (
        request.start.astimezone(policy.tz), request.end.astimezone(policy.tz))
    months = age_in_months(birth, start.date()) if birth is not None else None
    center_id = request.location.get("center_id")
    center = policy.center.center(center_id) if policy and policy.center and center_id else None
    running = [exp for status, exp in offers
               if status == OfferStatus.OPEN.value and (now is None or exp > now)]
    counts: dict[str, int] = {}
    for status, _ in offers:
        counts[status] = counts.get(status, 0) + 1
    escalation = escalation_state(escalations)
    booking = booked.get(request.id)
    return {
        "id": request.id, "code": request.code, "service": request.service,
        "service_label": policy.label if policy is not None else request.service,
        "status": request.status, "family_id": request.family_id, "child_id": request.child_id,
        "start": _iso(start), "end": _iso(end),
        "location": request.location, "notes": request.notes, "channel": request.channel,
        "created_at": _iso(request.created_at), "updated_at": _iso(request.updated_at),
        "carer": {"id": request.carer_id, "name": carer_name} if request.carer_id else None,
        "fee": fee,
        # Centre mode: the centre, and whether the child's place still awaits a dispatcher.
        "center_id": center_id,
        "center_name": center.name_ko if center is not None else None,
        "provisional": bool(booking is not None and booking.provisional and request.status in (
            RequestStatus.ASSIGNED, RequestStatus.IN_PROGRESS)),
        # Age at the start of the stay: the age the service's rules count.
        "child_age_months": months,
        "child_age": child_age_label(months) if months is not None else None,
        # When the last offer still running closes: the board's countdown.
        "offer_expires_at": _iso(max(running)) if running else None,
        "offer_counts": counts,
        "sla_due_at": _iso(request.created_at + timedelta(seconds=policy.escalate_after_s))
        if policy is not None else None,
        "escalation": None if escalation is None else {
            "at": _iso(escalation["at"]), "reason": escalation["reason"],
            "acknowledged": escalation["acknowledged_at"] is not None,
            "acknowledged_at": _iso(escalation["acknowledged_at"]),
            "acknowledged_by": escalation["acknowledged_by"]},
    }


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
    offered = {o.carer_id for o in request.offers}
    names = dict(uow.session.execute(select(orm.carers.c.id, orm.carers.c.name).where(
        orm.carers.c.id.in_(offered))).all()) if offered else {}
    detail["offers"] = [{"carer_id": o.carer_id, "carer_name": names.get(o.carer_id),
                         "status": o.status, "created_at": _iso(o.created_at),
                         "expires_at": _iso(o.expires_at),
                         "answered_at": _iso(o.answered_at)}
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


def _carer_brief(carer: Any) -> dict[str, Any]:
    return {"id": carer.id, "name": carer.name, "districts": carer.districts,
            "skills": carer.skills, "center_id": carer.center_id}


def assign_candidates(uow: UnitOfWork, request: Request, policy: ServicePolicy,
                      now: datetime) -> dict[str, Any]:
    """Whom a dispatcher could put on `request`, in the order the engine would choose them,
    with why: `candidates` (ranked), `busy` (qualified but taken in that window, or their
    centre group is full) and `others` (on duty, but not for this job: district or skills).

    Visit mode ranks with the matching engine itself (find_candidates); centre mode asks the
    centre's placement rule (place_booking) again and again, so the first is the group the
    child would join, the next the group it would join without the first, and so on.
    """
    if policy.mode == "center":
        return _center_candidates(uow, request, policy)
    offers = {o.carer_id: o.status for o in request.offers}
    ranked = find_candidates(uow, request, policy, now)
    buffer = timedelta(minutes=policy.travel_buffer_minutes)
    busy_ids = uow.carers.busy_between(request.start - buffer, request.end + buffer)
    jobs = uow.carers.current_jobs()
    district = request.location.get("district")
    listed = {cand.carer.id for cand in ranked}
    busy, others = [], []
    for carer in sorted(uow.carers.available(), key=lambda c: (c.name, c.id)):
        if carer.id in listed:
            continue
        entry = {"carer": _carer_brief(carer), "offer": offers.get(carer.id),
                 "current_job": jobs.get(carer.id)}
        if carer.id == request.carer_id:
            busy.append({**entry, "reason": "this_request"})  # already on this job
        elif is_qualified(carer, policy, district) and carer.id in busy_ids:
            busy.append({**entry, "reason": "busy"})
        elif not is_qualified(carer, policy, district):
            reason = "skills" if not carer.has_skills(policy.required_skills) else "district"
            others.append({**entry, "reason": reason})
    return {
        "request_id": request.id, "mode": "visit",
        "candidates": [{"rank": i, "carer": _carer_brief(cand.carer),
                        "distance_km": None if cand.distance_km is None
                        else round(cand.distance_km, 1),
                        "jobs_today": cand.jobs_today, "offer": offers.get(cand.carer.id),
                        "current_job": jobs.get(cand.carer.id)}
                       for i, cand in enumerate(ranked, start=1)],
        "busy": busy, "others": others,
    }


def _center_candidates(uow: UnitOfWork, request: Request, policy: ServicePolicy
                       ) -> dict[str, Any]:
    rules = policy.center
    center = rules.center(request.location.get("center_id")) if rules is not None else None
    family = uow.families.get(request.family_id)
    child = family.child(request.child_id) if family is not None else None
    if rules is None or center is None or child is None:
        return {"request_id": request.id, "mode": "center", "candidates": [], "busy": [],
                "others": []}
    months = age_in_months(child.birth_date, request.start.astimezone(policy.tz).date())
    new = Booking(request.start, request.end, rules.is_sensitive(months, child.disability))
    shifts = uow.centers.shifts_covering(center.id, request.start, request.end)
    carer_ids = sorted({s.carer_id for s in shifts})
    held = [b for b in uow.centers.bookings_of(carer_ids, request.start, request.end)
            if b.request_id != request.id]
    groups = {cid: [b for b in held if b.carer_id == cid] for cid in carer_ids}
    order: list[str] = []
    left = dict(groups)
    while (pick := place_booking(left, new, ratio=rules.ratio,
                                 ratio_sensitive=rules.ratio_sensitive)) is not None:
        order.append(pick)
        del left[pick]

    def entry(carer_id: str) -> dict[str, Any]:
        carer = uow.carers.get(carer_id)
        load = load_at(groups[carer_id], request.start, ratio=rules.ratio,
                       ratio_sensitive=rules.ratio_sensitive)
        return {"carer": _carer_brief(carer) if carer else {"id": carer_id, "name": None},
                "children": load.children, "capacity": load.capacity}

    return {
        "request_id": request.id, "mode": "center", "center_id": center.id,
        "sensitive": new.sensitive,
        "candidates": [{"rank": i, **entry(cid)} for i, cid in enumerate(order, start=1)],
        "busy": [{**entry(cid), "reason": "group_full"} for cid in sorted(left)],
        "others": [],
    }


def phones(uow: UnitOfWork, *, dispatcher_phone: str | None = None,
           per_phone: int = 30) -> list[dict[str, Any]]:
    """The console gateway's simulated phones: every carer and every guardian (and the
    dispatcher's own phone, when set), each with its latest SMS out (what we sent it) and in
    (what it sent us), oldest first. The most recently active phones come first."""
    owners: dict[str, dict[str, Any]] = {}
    for carer in uow.carers.all():
        owners[carer.phone] = {"phone": carer.phone, "kind": "carer", "id": carer.id,
                               "name": carer.name, "on_duty": carer.on_duty}
    f = orm.families.c
    for family_id, name, phone in uow.session.execute(
            select(f.id, f.guardian_name, f.guardian_phone).where(f.purged_at.is_(None))
            .order_by(f.guardian_name)):  # a purged family has no phone left to show
        owners.setdefault(phone, {"phone": phone, "kind": "parent", "id": family_id,
                                  "name": name})
    if dispatcher_phone:
        owners.setdefault(dispatcher_phone, {"phone": dispatcher_phone, "kind": "dispatcher",
                                             "id": None, "name": "상황실"})
    messages: dict[str, list[dict[str, Any]]] = {phone: [] for phone in owners}
    n, i = orm.notifications.c, orm.inbound_sms.c
    for row in uow.session.execute(
            select(n.id, n.recipient, n.kind, n.body, n.status, n.created_at, n.request_id,
                   n.params).where(n.recipient.in_(list(owners)))
            .order_by(n.created_at.desc(), n.id.desc()).limit(per_phone * 50)):
        messages[row.recipient].append({
            "id": row.id, "direction": "out", "kind": row.kind, "body": row.body,
            "status": row.status, "at": row.created_at, "request_id": row.request_id,
            "code": (row.params or {}).get("code")})
    for sms in uow.session.execute(
            select(i.id, i.from_phone, i.body, i.received_at, i.request_id, i.verb, i.outcome)
            .where(i.from_phone.in_(list(owners)))
            .order_by(i.received_at.desc(), i.id.desc()).limit(per_phone * 50)):
        messages[sms.from_phone].append({
            "id": sms.id, "direction": "in", "kind": sms.verb, "body": sms.body,
            "status": sms.outcome, "at": sms.received_at, "request_id": sms.request_id,
            "code": None})
    found = []
    for phone, owner in owners.items():
        mine = sorted(messages[phone], key=lambda msg: msg["at"])[-per_phone:]
        found.append((mine[-1]["at"].timestamp() if mine else None, owner, mine))
    found.sort(key=lambda f: (f[0] is None, -(f[0] or 0.0), f[1]["kind"], f[1]["name"] or ""))
    return [{**owner, "last_at": _iso(mine[-1]["at"]) if mine else None,
             "messages": [{**msg, "at": _iso(msg["at"])} for msg in mine]}
            for _, owner, mine in found]
