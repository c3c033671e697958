"""Deadlines of visit-mode requests, kept in the database and swept by every worker's timer.

Two deadlines matter: an offer's answer window (`offers.expires_at`) and the service's SLA
(`created_at + escalate_after_s`). Both are stored, so a worker that restarts, or another
worker, finds them where the last one left off. Several workers may sweep at once: each
request is handled in its own transaction under its row lock, and everything is checked
again after the lock is taken, so a request another worker has just handled is skipped and
a sweep repeated changes nothing and sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dispatch import commands as c
from dispatch.domain.model import ACCEPTING_STATUSES, RequestStatus
from dispatch.domain.policy import ServicePolicy
from dispatch.handlers.matching import _escalate, offer_next, sla_deadline
from dispatch.ports import Clock
from dispatch.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


def sweep_deadlines(cmd: c.SweepDeadlines, uow: UnitOfWork, clock: Clock,
                    policies: Mapping[str, ServicePolicy], dispatcher_phone: str | None = None,
                    **_: Any) -> dict[str, int]:
    """Expire offers past their window and offer the next carers; escalate past the SLA.

    Oldest requests first (by original `created_at`, which a withdrawal keeps), so a request
    that has waited longest is served before newer ones.
    """
    now = clock()
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
