"""Centre mode: a child gets a place in the group of a carer on shift at the centre.

No offers and no YES (DOMAIN.md §1a): the parent brings the child, so a request is booked
into a group at once when one keeps its staff ratio for the whole stay
(dispatch/domain/centers.py), and escalated to a dispatcher ("center_full") when none does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from dispatch import commands as c
from dispatch.domain.centers import Booking, find_center, first_name, place_booking
from dispatch.domain.errors import Conflict, Ineligible, NotFound
from dispatch.domain.model import Actor, Request, RequestStatus
from dispatch.domain.policy import ServicePolicy, age_in_months
from dispatch.handlers.common import fee_quote, fee_text, local_time
from dispatch.handlers.matching import _escalate
from dispatch.ports import Clock
from dispatch.records import CenterBooking, Shift
from dispatch.unit_of_work import UnitOfWork
from schemas import messages as m

MAX_SHIFT = timedelta(hours=24)


def book_place(uow: UnitOfWork, request: Request, policy: ServicePolicy, now: datetime,
               dispatcher_phone: str | None, only_carer: str | None = None,
               waitlist: bool = True) -> int:
    """StartMatching for a centre-mode request (called by matching.start_matching, inside its
    unit of work, with the request row locked). 1 if the child got a place, else 0.

    `only_carer` is a dispatcher's choice of group: then no room there is a Conflict for the
    dispatcher to see, not a waitlisting. `waitlist=False` (a waiting child tried again):
    no room changes nothing, the request is already escalated."""
    rules = policy.center
    center = rules.center(request.location.get("center_id")) if rules is not None else None
    family = uow.families.get(request.family_id)
    child = family.child(request.child_id) if family is not None else None
    if rules is None or center is None or family is None or child is None:
        # Checked at intake; only a policy changed since (a centre removed) gets here.
        if waitlist:
            _escalate(uow, request, policy, now, "unknown_center", dispatcher_phone)
        return 0
    months = age_in_months(child.birth_date, request.start.astimezone(policy.tz).date())
    sensitive = rules.is_sensitive(months, child.disability)
    provisional = rules.is_provisional(months)

    # The lock on the shift rows is what makes "is there room?" and "take the place" one
    # decision: a second booking for the same groups waits here until this one commits, and
    # then counts this one's child.
    shifts = uow.centers.shifts_covering(center.id, request.start, request.end, lock=True)
    carer_ids = sorted({s.carer_id for s in shifts})
    if only_carer is not None:
        if only_carer not in carer_ids:
            raise Conflict("the carer has no shift at this centre for the whole window",
                           code="carer_not_on_shift")
        carer_ids = [only_carer]
    held = uow.centers.bookings_of(carer_ids, request.start, request.end)
    groups = {cid: [b for b in held if b.carer_id == cid] for cid in carer_ids}
    carer_id = place_booking(groups, Booking(request.start, request.end, sensitive),
                             ratio=rules.ratio, ratio_sensitive=rules.ratio_sensitive)
    if carer_id is None and only_carer is not None:
        raise Conflict("that carer's group has no room for this child in that window",
                       code="group_full")
    if carer_id is None and not waitlist:
        return 0
    if carer_id is None:
        request.record(now, "waitlisted", Actor.SYSTEM,
                       {"center_id": center.id, "groups": len(groups), "sensitive": sensitive})
        _escalate(uow, request, policy, now, "center_full", dispatcher_phone)
        return 0

    booking = CenterBooking(request_id=request.id, carer_id=carer_id, center_id=center.id,
                            start=request.start, end=request.end, sensitive=sensitive,
                            provisional=provisional, created_at=now)
    uow.centers.add_booking(booking)
    request.take_place(carer_id, now, detail={"center_id": center.id, "booking_id": booking.id,
                                              "sensitive": sensitive,
                                              "provisional": provisional})
    uow.emit(m.RequestAssigned(request_id=request.id, carer_id=carer_id,
                               assignment_id=booking.id), key=request.id, now=now)
    event = f"center_booked:{booking.id}"
    start = local_time(request.start, policy)
    carer = uow.carers.get(carer_id)
    if carer is not None:
        uow.notify(event_id=event, recipient=carer.phone, kind="center_child_arriving",
                   lang=carer.lang, request_id=request.id, now=now,
                   params={"code": request.code, "child_name": first_name(child.name),
                           "start": start, "center": center.label(carer.lang)})
    priced = fee_quote(uow, request, policy)
    parent = {"code": request.code, "center": center.label(family.lang), "start": start,
              "end": local_time(request.end, policy, "%H:%M"),
              "fee": fee_text(priced[0].total_krw, family.lang) if priced else ""}
    for kind in ("center_booked", "center_pickup_reminder") + (
            ("center_provisional",) if provisional else ()):
        uow.notify(event_id=event, recipient=family.guardian_phone, kind=kind, lang=family.lang,
                   request_id=request.id, now=now, params=parent)
    return 1


# How many waiting children one freed place or new shift looks at, soonest stay first.
WAITLIST_LOOK_AT = 50


def book_waitlisted(uow: UnitOfWork, center_id: str, policies: Mapping[str, ServicePolicy],
                    now: datetime, dispatcher_phone: str | None) -> int:
    """Room may have opened at `center_id` (a shift added, a place given up): children
    waitlisted there (escalated `center_full`) get a place if one now keeps the ratio, the
    soonest stay first. Returns how many got one; the rest stay with the dispatcher."""
    services = [s for s, p in policies.items() if p.mode == "center"]
    booked = 0
    for request_id in uow.requests.escalated_ids(ending_after=now, limit=WAITLIST_LOOK_AT,
                                                 services=services):
        request = uow.requests.get(request_id, for_update=True)
        if request is None or request.status != RequestStatus.ESCALATED \
                or request.location.get("center_id") != center_id:
            continue
        booked += book_place(uow, request, policies[request.service], now, dispatcher_phone,
                             waitlist=False)
    return booked


def add_shift(cmd: c.AddShift, uow: UnitOfWork, clock: Clock,
              policies: Mapping[str, ServicePolicy], dispatcher_phone: str | None = None,
              **_: Any) -> Shift:
    if cmd.start.tzinfo is None or cmd.end.tzinfo is None:
        raise Ineligible("times need an offset, e.g. 2026-11-26T18:00:00+09:00",
                         code="invalid_time")
    if not timedelta(0) < cmd.end - cmd.start <= MAX_SHIFT:
        raise Ineligible("a shift ends after it starts, at most 24 hours later",
                         code="invalid_time")
    if find_center((p.center for p in policies.values()), cmd.center_id) is None:
        raise Ineligible(f"unknown centre {cmd.center_id!r}", code="unknown_center")
    with uow:
        # The carer's row lock keeps two overlapping shifts for one carer from both passing.
        if uow.centers.lock_carer(cmd.carer_id) is None:
            raise NotFound("no such carer")
        if uow.centers.shifts_of_carer(cmd.carer_id, cmd.start, cmd.end):
            raise Conflict("the carer already has a shift in that window", code="shift_overlap")
        shift = Shift(carer_id=cmd.carer_id, center_id=cmd.center_id, start=cmd.start,
                      end=cmd.end)
        uow.centers.add_shift(shift)
        book_waitlisted(uow, cmd.center_id, policies, clock(), dispatcher_phone)
        uow.commit()
        return shift


def confirm_booking(cmd: c.ConfirmBooking, uow: UnitOfWork, clock: Clock,
                    policies: Mapping[str, ServicePolicy], **_: Any) -> Request:
    """A dispatcher confirms an infant's provisional place; 409 if there is none to confirm."""
    now = clock()
    with uow:
        request = uow.requests.get(cmd.request_id, for_update=True)
        if request is None:
            raise NotFound("no such request")
        booking = uow.centers.booking_for(request.id, for_update=True)
        if booking is None or not booking.provisional or request.status not in (
                RequestStatus.ASSIGNED, RequestStatus.IN_PROGRESS):
            raise Conflict("this request has no provisional centre booking to confirm",
                           code="nothing_to_confirm")
        booking.provisional = False
        request.record(now, "booking_confirmed", Actor.DISPATCHER,
                       {"dispatcher": cmd.dispatcher, "booking_id": booking.id,
                        "carer_id": booking.carer_id})
        policy = policies.get(request.service)
        family = uow.families.get(request.family_id)
        center = policy.center.center(booking.center_id) \
            if policy is not None and policy.center is not None else None
        if family is not None and policy is not None:
            uow.notify(event_id=f"center_confirmed:{booking.id}",
                       recipient=family.guardian_phone, kind="center_confirmed",
                       lang=family.lang, request_id=request.id, now=now,
                       params={"code": request.code,
                               "center": center.label(family.lang) if center
                               else booking.center_id,
                               "start": local_time(request.start, policy)})
        uow.commit()
        return request
