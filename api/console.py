"""Console-only reads for the dispatcher's live board (`/console`): the board's open requests
in one call, and the console SMS gateway's simulated phones.

Thin like the other routers: each route reads through `dispatch/views.py` and answers. The
actions on requests (assign, acknowledge, …) are the public /v1 routes in api/routes.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from api.auth import Caller, require
from dispatch import views
from dispatch.domain.errors import Conflict
from dispatch.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1/console")
Dispatcher = Annotated[Caller, Depends(require("dispatcher"))]


def _uow(request: Request) -> UnitOfWork:
    return request.app.state.uow_factory()  # type: ignore[no-any-return]


def sms_gateway(request: Request) -> str:
    """`twilio` when real SMS go out and come in by webhook, else `console` (simulated)."""
    return "twilio" if request.app.state.settings.twilio_enabled else "console"


@router.get("/board")
def board(request: Request, _: Dispatcher) -> dict[str, Any]:
    """Open requests, most urgent first (unacknowledged escalations, the other escalated
    ones, then by start), with what the board shows of each (child's age, running offer,
    escalation and its acknowledgement), read in a fixed number of queries; and the SMS
    gateway mode, so the page knows whether to show phones."""
    now = datetime.now(UTC)
    with _uow(request) as uow:
        rows = views.request_summaries(uow, uow.requests.recent(open_only=True),
                                       request.app.state.policies, with_fee=False, now=now)
    # An escalation nobody has taken on yet comes before one a dispatcher is handling; the
    # sort is stable, so otherwise the list keeps its order (escalated, then by start).
    rows.sort(key=lambda r: 0 if r["escalation"] and r["status"] == "escalated"
              and not r["escalation"]["acknowledged"] else 1)
    return {"now": now.isoformat(), "sms_gateway": sms_gateway(request), "requests": rows}


@router.get("/phones")
def phones(request: Request, _: Dispatcher) -> list[dict[str, Any]]:
    """One simulated phone per carer and guardian with its SMS in and out; 409 when Twilio is
    configured (then real phones exist and replies come by webhook)."""
    if sms_gateway(request) != "console":
        raise Conflict("Twilio is configured: there are no simulated phones",
                       code="twilio_configured")
    with _uow(request) as uow:
        return views.phones(uow, dispatcher_phone=request.app.state.settings.dispatcher_phone)
