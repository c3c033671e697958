"""Small helpers the handlers share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from dispatch.domain.fees import Quote, Usage, month_bounds, quote, usage_of
from dispatch.domain.model import Carer, Request, RequestStatus
from dispatch.domain.policy import ServicePolicy
from dispatch.unit_of_work import UnitOfWork

# The bookings that count towards a child's monthly subsidy cap.
USED_STATUSES = (RequestStatus.ASSIGNED.value, RequestStatus.IN_PROGRESS.value,
                 RequestStatus.COMPLETED.value)


def local_time(dt: datetime, policy: ServicePolicy, fmt: str = "%m/%d %H:%M") -> str:
    """A time as the people of this service read it (their timezone, short)."""
    return dt.astimezone(policy.tz).strftime(fmt)


def place_of(request: Request) -> str:
    return " ".join(str(request.location[k]) for k in ("hospital", "ward")
                    if request.location.get(k)) or str(request.location.get("district", ""))


def fee_quote(uow: UnitOfWork, request: Request, policy: ServicePolicy
              ) -> tuple[Quote, Usage] | None:
    """The price of this request and the child's usage this month, or None without [fees].

    Usage is the child's assigned, in-progress and completed requests of the same service
    that start earlier in the same calendar month (the policy's time zone)."""
    if policy.fees is None:
        return None
    first, _ = month_bounds(policy, request.start)
    usage = usage_of(uow.requests.bookings_of_child(
        request.child_id, request.service, since=first, before=request.start,
        statuses=USED_STATUSES))
    return quote(policy, request.start, request.end, usage), usage


def fee_quotes(uow: UnitOfWork, requests: Sequence[Request],
               policies: Mapping[str, ServicePolicy]) -> dict[str, tuple[Quote, Usage]]:
    """`fee_quote` of many requests with one query, by request id (those whose policy sets
    no fees are left out): for lists, which would otherwise ask once per row."""
    priced = [(r, policies[r.service]) for r in requests
              if r.service in policies and policies[r.service].fees is not None]
    if not priced:
        return {}
    months = {r.id: month_bounds(p, r.start)[0] for r, p in priced}
    earlier: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}
    for child_id, service, start, end in uow.requests.bookings_of_children(
            {r.child_id for r, _ in priced}, {r.service for r, _ in priced},
            since=min(months.values()), before=max(r.start for r, _ in priced),
            statuses=USED_STATUSES):
        earlier.setdefault((child_id, service), []).append((start, end))
    quotes = {}
    for r, policy in priced:
        usage = usage_of((start, end) for start, end in earlier.get((r.child_id, r.service), ())
                         if months[r.id] <= start < r.start)
        quotes[r.id] = (quote(policy, r.start, r.end, usage), usage)
    return quotes


def fee_text(total_krw: int, lang: str) -> str:
    return f"KRW {total_krw:,}" if lang == "en" else f"{total_krw:,}원"


def send_address(uow: UnitOfWork, request: Request, carer: Carer, assignment_id: str,
                 now: datetime) -> None:
    """A home visit's address, in its own SMS, to the carer who took the job and nobody else:
    the offer names the district only, so a family's address never goes to a whole wave."""
    address = request.location.get("address")
    if address:
        uow.notify(event_id=f"address:{assignment_id}", recipient=carer.phone,
                   kind="job_address", lang=carer.lang, request_id=request.id, now=now,
                   params={"code": request.code, "address": address})
