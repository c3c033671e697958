"""Finding carers for a request and offering them the job; escalating when nobody is left.

Whom to offer next is the policy's offer strategy (dispatch/domain/strategies.py); this module
applies it: after a request comes in, after a NO, after offers expire (dispatch/handlers/
deadlines.py), after the assigned carer withdraws. It also closes offers that can no longer
win (a YES won, the request was cancelled) and tells those carers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, time, timedelta
from typing import Any

from dispatch import commands as c
from dispatch.domain.matching import (
    SEARCH_RADII_KM,
    Candidate,
    select_candidates,
    select_nearest,
)
from dispatch.domain.model import (
    ACCEPTING_STATUSES,
    Actor,
    Carer,
    OfferStatus,
    Request,
    RequestStatus,
)
from dispatch.domain.policy import OfferRules, ServicePolicy
from dispatch.domain.strategies import next_offers
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
        if policies[request.service].mode == "center":
            # Centre mode: a place in a carer's group, no offers (dispatch/handlers/centers.py).
            from dispatch.handlers.centers import book_place

            booked = book_place(uow, request, policies[request.service], now, dispatcher_phone)
            uow.commit()
            return booked
        offered = offer_next(uow, request, policies[request.service], now, dispatcher_phone)
        uow.commit()
        return offered


def find_candidates(uow: UnitOfWork, request: Request, policy: ServicePolicy, now: datetime,
                    exclude: Iterable[str] = (), *, enough: int | None = None
                    ) -> list[Candidate]:
    """The carers who could take `request` now, best first, as matching ranks them.

    Matching and the dispatcher's assign picker both ask here, so the board shows the
    order the engine would offer in. With `enough`, only the head of that ranking is
    wanted (at least `enough` carers, when there are that many): for a job with
    coordinates it is found through a box around the job that widens as needed
    (`select_nearest`), not by loading and ranking every carer on duty; the carers are then
    light profiles (id, phone, language and what ranking reads), not loaded aggregates.
    """
    buffer = timedelta(minutes=policy.travel_buffer_minutes)
    day_start = datetime.combine(request.start.astimezone(policy.tz).date(), time(0),
                                 policy.tz)
    district = request.location.get("district")
    known = uow.carers.commitments(
        busy_from=request.start - buffer, busy_until=request.end + buffer,
        jobs_since=now - timedelta(hours=24), ended_from=day_start, ended_until=request.start)
    busy, jobs_today, previous = known.busy, known.jobs, known.previous
    lat, lon = _coordinates(request.location)
    if enough is not None and lat is not None and lon is not None:
        # Start one step below the radius that sufficed last time for this service: each
        # box is a query, and most jobs of a service need about the same radius. Any start
        # gives the same answer (select_nearest), only the number of queries changes.
        start = max(0, _radius_hint.get(policy.id, 0) - 1)
        nearest = select_nearest(
            policy, uow.carers.available_in_box, enough=max(1, enough), lat=lat, lon=lon,
            district=district, busy=busy, exclude=set(exclude), jobs_today=jobs_today,
            previous_location=previous, elsewhere=uow.carers.available_among(previous),
            radii_km=SEARCH_RADII_KM[start:])
        if nearest is not None:
            farthest = max(cand.distance_km or 0.0 for cand in nearest)
            _radius_hint[policy.id] = next(
                (i for i, r in enumerate(SEARCH_RADII_KM) if r >= farthest),
                len(SEARCH_RADII_KM) - 1)
            # Light profiles (repository.CarerProfile), read in this transaction: what an
            # offer needs, without loading each carer again.
            return nearest
    return select_candidates(
        policy, uow.carers.available(), district=district, busy=busy, exclude=set(exclude),
        jobs_today=jobs_today, lat=request.location.get("lat"),
        lon=request.location.get("lon"), previous_location=previous)


# Per service: the index in SEARCH_RADII_KM of the smallest radius that held the last head.
_radius_hint: dict[str, int] = {}


def _coordinates(location: Mapping[str, Any]) -> tuple[float | None, float | None]:
    lat, lon = location.get("lat"), location.get("lon")
    if isinstance(lat, int | float) and isinstance(lon, int | float) \
            and not isinstance(lat, bool) and not isinstance(lon, bool):
        return float(lat), float(lon)
    return None, None


def _enough_for(rules: OfferRules) -> int | None:
    """How many of the best candidates the strategy can ask at once (None: all of them)."""
    if rules.strategy == "waves":
        return rules.wave_size
    if rules.strategy == "sequential":
        return 1
    return None


def offer_next(uow: UnitOfWork, request: Request, policy: ServicePolicy, now: datetime,
               dispatcher_phone: str | None, limit: int | None = None,
               force: bool = False) -> int:
    """Offer the job to the next carers the policy's strategy names; escalate when nobody is left.

    Offers past their answer window are expired first, so the strategy sees what is really
    open. `force` (a dispatcher's "offer again now") sends the next offers even while some
    are open; `limit` caps how many go out.
    """
    request.expire_offers(now)
    candidates = find_candidates(uow, request, policy, now, exclude=request.offered_carer_ids(),
                                 enough=None if force else _enough_for(policy.offers))
    ranked = [cand.carer.id for cand in candidates]
    # Candidates never include anyone already asked, so a forced round asks nobody twice.
    chosen = next_offers(policy.offers, [] if force else request.offers, ranked)
    if limit is not None:
        chosen = chosen[:limit]
    if not chosen:
        if not candidates and request.status != RequestStatus.ESCALATED \
                and not any(o.is_open for o in request.offers):
            _escalate(uow, request, policy, now, "no_candidates", dispatcher_phone)
        return 0
    expires = now + timedelta(seconds=policy.offers.timeout_s)
    offers = request.make_offers(chosen, now, expires)
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


# How many escalated requests one carer coming on duty brings back to matching at most:
# the most urgent first; the deadlines sweep and the dispatcher have the rest.
REOFFER_ON_DUTY_MAX = 20


def offer_waiting_requests(uow: UnitOfWork, carer_id: str,
                           policies: Mapping[str, ServicePolicy], now: datetime,
                           dispatcher_phone: str | None) -> int:
    """A carer came on duty: escalated requests that ran out of carers may have one now.

    Each escalated request that has not ended, has no open offer and is matched by offers
    (not a centre place) gets the policy's next offers, this carer among them if they
    qualify. It stays `escalated` (on the dispatcher's board) until someone says YES.
    """
    offered = 0
    for request_id in uow.requests.escalated_ids(ending_after=now, limit=REOFFER_ON_DUTY_MAX):
        request = uow.requests.get(request_id, for_update=True)
        if request is None or request.status != RequestStatus.ESCALATED:
            continue
        request.expire_offers(now)
        if any(o.is_open for o in request.offers):
            continue
        policy = policies[request.service]
        if policy.mode == "center":
            continue
        made = offer_next(uow, request, policy, now, dispatcher_phone)
        if made:
            request.record(now, "reoffered_on_duty", Actor.SYSTEM,
                           {"carer_id": carer_id, "offers": made})
        offered += made
    return offered


def close_overlapping_offers(uow: UnitOfWork, carer_id: str, taken: Request,
                             policies: Mapping[str, ServicePolicy], now: datetime,
                             dispatcher_phone: str | None) -> int:
    """The carer has just taken `taken`: their open offers for jobs that overlap it (with
    each job's travel buffer) could only end in "busy". Close them now, as a NO would, so
    those jobs ask their next carers at once instead of waiting out the answer window."""
    closed = 0
    for offer, _ in uow.carers.open_offers(carer_id, now):
        if offer.request_id == taken.id:
            continue
        # Skipped if another transaction holds it: this carer saying YES to it at the same
        # moment would deadlock with us (each waiting on the other's assignment), and whoever
        # holds it will settle the offer, or it runs out as before.
        other = uow.requests.get(offer.request_id, for_update=True, skip_locked=True)
        if other is None or other.status not in ACCEPTING_STATUSES:
            continue
        policy = policies[other.service]
        buffer = timedelta(minutes=policy.travel_buffer_minutes)
        if not (other.start - buffer < taken.end and taken.start < other.end + buffer):
            continue
        if other.close_offer_taken_elsewhere(carer_id, now):
            closed += 1
            offer_next(uow, other, policy, now, dispatcher_phone)
    return closed


def rescind_open_offers(uow: UnitOfWork, request: Request, now: datetime, reason: str) -> int:
    """Close every open offer of `request` and tell each carer by SMS, once.

    Call it after the transition that ends the search (a YES won, the request was cancelled):
    the domain has already marked the others rescinded then, and those carers are told too.
    Not told: a carer whose answer window had already closed (the offer said until when).
    Safe to call twice: one SMS per offer, ever. Returns how many carers were told now.
    """
    told: list[str] = []
    for offer in request.offers:
        if offer.is_open:
            offer.status = OfferStatus.RESCINDED
        if offer.status != OfferStatus.RESCINDED or offer.expires_at <= now:
            continue
        carer = uow.carers.get(offer.carer_id)
        if carer is None:
            continue
        note = uow.notify(event_id=f"rescinded:{offer.id}", recipient=carer.phone,
                          kind="offer_rescinded", lang=carer.lang, request_id=request.id,
                          now=now, params={"code": request.code, "offer_id": offer.id})
        if note is not None:
            told.append(carer.id)
    if told:
        request.record(now, "offers_rescinded", Actor.SYSTEM,
                       {"reason": reason, "carers": told})
    return len(told)


def withdraw_assignment(uow: UnitOfWork, request: Request, carer: Carer,
                        policy: ServicePolicy, now: datetime,
                        dispatcher_phone: str | None) -> int:
    """The assigned carer pulled out: the parent is told, and matching starts again at once.

    The request keeps its original `created_at`, so it stays ahead of newer requests in the
    deadline sweep and keeps its SLA; the carer who withdrew is never offered it again.
    Returns how many new offers went out.
    """
    assignment = request.withdraw(carer.id, now)
    family = uow.families.get(request.family_id)
    if family is not None:
        uow.notify(event_id=f"withdrawn:{assignment.id}", recipient=family.guardian_phone,
                   kind="carer_withdrew", lang=family.lang, request_id=request.id, now=now,
                   params={"code": request.code})
    return offer_next(uow, request, policy, now, dispatcher_phone)


def sla_deadline(request: Request, policy: ServicePolicy) -> datetime:
    return request.created_at + timedelta(seconds=policy.escalate_after_s)


def _escalate(uow: UnitOfWork, request: Request, policy: ServicePolicy, now: datetime,
              reason: str, dispatcher_phone: str | None) -> None:
    # A request can be escalated again (assigned, then the carer withdrew): each escalation
    # is its own event, so the parent and the dispatcher hear of each one, once.
    earlier = sum(1 for e in request.timeline if e.type == "escalated")
    event_id = f"escalated:{request.id}" + (f":{earlier + 1}" if earlier else "")
    request.status = RequestStatus.ESCALATED
    request.record(now, "escalated", Actor.SYSTEM, {"reason": reason})
    uow.emit(m.RequestEscalated(request_id=request.id, reason=reason), key=request.id, now=now)
    family = uow.families.get(request.family_id)
    if family is not None:
        uow.notify(event_id=event_id, recipient=family.guardian_phone,
                   kind="escalated", lang=family.lang, request_id=request.id, now=now,
                   params={"code": request.code})
    if dispatcher_phone:
        uow.notify(event_id=event_id, recipient=dispatcher_phone,
                   kind="dispatcher_escalation", request_id=request.id, now=now,
                   params={"code": request.code, "service_label": policy.label,
                           "reason": reason})
