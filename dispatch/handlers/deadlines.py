"""Deadlines of visit-mode requests, kept in the database and swept by every worker's timer.

Two deadlines matter: an offer's answer window (`offers.expires_at`) and the service's SLA
(`created_at + escalate_after_s`). Both are stored, so a worker that restarts, or another
worker, finds them where the last one left off. Several workers may sweep at once: each
request is handled in its own transaction under its row lock, and everything is checked
again after the lock is taken, so a request another worker has just handled is skipped and
a sweep repeated changes nothing and sends nothing.

The sweep also re-drives requests stuck in `received`: the database is the record, the broker
(Tansu, memory only) is not, so a `request.received` the relay published to a broker that then
restarted empty is gone. A request still `received` after `DOLBOM_REDRIVE_RECEIVED_AFTER_S`
(30 s by default) is announced again with a fresh `request.received`; StartMatching dedupes by
event id and acts only on a `received` request, so an extra announcement changes nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from dispatch import commands as c
from dispatch import orm
from dispatch.domain.model import ACCEPTING_STATUSES, RequestStatus
from dispatch.domain.policy import ServicePolicy
from dispatch.handlers.matching import _escalate, offer_next, sla_deadline
from dispatch.ports import Clock
from dispatch.unit_of_work import UnitOfWork
from schemas import messages as m

log = logging.getLogger(__name__)


def sweep_deadlines(cmd: c.SweepDeadlines, uow: UnitOfWork, clock: Clock,
                    policies: Mapping[str, ServicePolicy], dispatcher_phone: str | None = None,
                    **_: Any) -> dict[str, int]:
    """Expire offers past their window and offer the next carers; escalate past the SLA.

    Oldest requests first (by original `created_at`, which a withdrawal keeps), so a request
    that has waited longest is served before newer ones.
    """
    now = clock()
    redrive_received(uow, now, limit=cmd.limit)
    visit = {service: policy.escalate_after_s for service, policy in policies.items()
             if policy.mode == "visit"}
    with uow:
        due = uow.requests.deadlines_due(now, visit, limit=cmd.limit)
    counts = {"requests": 0, "expired": 0, "offered": 0, "escalated": 0}
    for request_id in due:
        try:
            outcome = _sweep_one(request_id, uow, now, policies, dispatcher_phone)
        except Exception:
            # One broken request must not hold up the others (it stays due: next tick).
            log.exception("deadline sweep failed for request %s", request_id)
            continue
        if outcome is not None:
            counts["requests"] += 1
            for key, value in outcome.items():
                counts[key] += value
    return counts


def _sweep_one(request_id: str, uow: UnitOfWork, now: datetime,
               policies: Mapping[str, ServicePolicy],
               dispatcher_phone: str | None) -> dict[str, int] | None:
    with uow:
        request = uow.requests.get(request_id, for_update=True)
        policy = policies.get(request.service) if request is not None else None
        if request is None or policy is None or request.status not in ACCEPTING_STATUSES:
            return None  # changed since it was listed: a YES, a cancel, another worker
        expired = request.expire_offers(now)
        escalated = 0
        # The SLA first: when it has passed, that is what the dispatcher needs to hear, even
        # if the same tick also finds nobody left to ask (offer_next won't escalate twice).
        if request.status == RequestStatus.MATCHING and now >= sla_deadline(request, policy):
            _escalate(uow, request, policy, now, "sla", dispatcher_phone)
            escalated = 1
        offered = offer_next(uow, request, policy, now, dispatcher_phone) if expired else 0
        if not expired and not escalated:
            return None  # nothing was due any more
        uow.commit()
        return {"expired": len(expired), "offered": offered, "escalated": escalated}


def redrive_received(uow: UnitOfWork, now: datetime, *, after_s: float | None = None,
                     limit: int = 100) -> int:
    """Announce again the requests still `received` `after_s` seconds after their last
    announcement (the broker lost it); one fresh `request.received` each. Returns how many.

    A request whose announcement is still waiting for the relay (unpublished), or was made
    less than `after_s` ago, is left alone, so a long outage does not pile up copies."""
    if after_s is None:
        after_s = float(os.environ.get("DOLBOM_REDRIVE_RECEIVED_AFTER_S", "30"))
    cutoff = now - timedelta(seconds=after_s)
    r, ob = orm.requests.c, orm.outbox.c
    with uow:
        stuck = list(uow.session.scalars(
            select(r.id).where(r.status == RequestStatus.RECEIVED.value, r.created_at <= cutoff)
            .order_by(r.created_at, r.id).limit(limit)))
        if not stuck:
            return 0
        pending = set(uow.session.scalars(select(ob.key).where(
            ob.type == m.RequestReceived.type, ob.key.in_(stuck),
            (ob.published_at.is_(None)) | (ob.created_at > cutoff))))
        redriven = 0
        for request_id in stuck:
            if request_id in pending:
                continue
            request = uow.requests.get(request_id, for_update=True)
            if request is None or request.status != RequestStatus.RECEIVED:
                continue  # matched since it was listed
            uow.emit(m.RequestReceived(request_id=request.id, service=request.service),
                     key=request.id, now=now)
            redriven += 1
        uow.commit()
    if redriven:
        log.warning("re-drove %d request(s) stuck in received for over %.0fs", redriven, after_s)
    return redriven
