"""`GET /v1/stream`: the outbox table as Server-Sent Events, for the dispatcher's console.

Every state change writes its outbox row in the same transaction, so the outbox is the log
of what happened: the SSE `id:` is the row id, `event:` the message type, `data:` the
envelope's payload (ids only, no personal data). A console that reconnects sends
`Last-Event-ID` (EventSource does so by itself) or `?last_event_id=` and gets every row after
it; without one the stream starts at the newest row. The stream only reads the table, so it
adds no load on the broker and needs nothing from the relay.

Also `GET /v1/sms/outbox`: recent outbound SMS, for the console's simulated phones and the
`dolbom demo` carers.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine, func, or_, select
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, require
from dispatch import orm
from dispatch.db import READ_ONLY
from schemas.envelope import Envelope

router = APIRouter(prefix="/v1")
Dispatcher = Annotated[Caller, Depends(require("dispatcher"))]

BATCH = 500
GAP_WAIT_S = 10.0
MAX_GAPS = 100


def _seconds(name: str, default: float) -> float:
    try:
        return max(0.01, float(os.environ.get(name, default)))
    except ValueError:
        return default


def _newest_id(engine: Engine) -> int:
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        return int(conn.scalar(select(func.max(orm.outbox.c.id))) or 0)


def _rows_after(engine: Engine, after: int, late: list[int],
                limit: int = BATCH) -> list[tuple[int, str, bytes]]:
    o = orm.outbox.c
    where = or_(o.id > after, o.id.in_(late)) if late else o.id > after
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        rows = conn.execute(select(o.id, o.type, o.body).where(where)
                            .order_by(o.id).limit(limit)).all()
    return [(int(r.id), str(r.type), bytes(r.body)) for r in rows]


def format_event(row_id: int, event_type: str, body: bytes) -> str:
    try:
        payload: Any = Envelope.from_bytes(body).payload
    except ValueError:
        payload = {}
    return f"id: {row_id}\nevent: {event_type}\ndata: {json.dumps(payload)}\n\n"


async def events(request: Request, engine: Engine, after: int | None, *, poll_s: float,
                 heartbeat_s: float) -> AsyncIterator[str]:
    last = after if after is not None else await run_in_threadpool(_newest_id, engine)
    # Reconnect after 2 s; also sends the first bytes at once so the client sees the stream open.
    yield "retry: 2000\n\n"
    beat = time.monotonic()
    # Ids skipped over. On PostgreSQL a sequence hands out ids before commit, so a row with a
    # lower id can become visible after a higher one; it is still sent if it appears within
    # GAP_WAIT_S (a rolled-back transaction's id never does). SQLite writers take the lock at
    # BEGIN, so there ids are in commit order and this stays empty.
    gaps: dict[int, float] = {}
    while not await request.is_disconnected():
        rows = await run_in_threadpool(_rows_after, engine, last, sorted(gaps))
        for row_id, event_type, body in rows:
            if row_id > last:
                if row_id - last <= MAX_GAPS and len(gaps) < 10 * MAX_GAPS:
                    gaps.update(dict.fromkeys(range(last + 1, row_id),
                                              time.monotonic() + GAP_WAIT_S))
                last = row_id
            elif gaps.pop(row_id, None) is None:
                continue
            yield format_event(row_id, event_type, body)
        now = time.monotonic()
        gaps = {i: until for i, until in gaps.items() if until > now}
        if len(rows) == BATCH:
            continue  # catching up: no sleep
        if time.monotonic() - beat >= heartbeat_s:
            yield ": heartbeat\n\n"
            beat = time.monotonic()
        elif rows:
            beat = time.monotonic()
        await asyncio.sleep(poll_s)


@router.get("/stream")
async def stream(request: Request, _: Dispatcher,
                 last_event_id: Annotated[int | None, Query(ge=0)] = None,
                 last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID",
                                                                    max_length=20)] = None,
                 ) -> StreamingResponse:
    after = last_event_id
    if last_event_id_header is not None and last_event_id_header.strip().isdecimal() \
            and last_event_id_header.strip().isascii():
        after = int(last_event_id_header.strip())  # what EventSource sends on reconnect wins
    body = events(request, request.app.state.engine, after,
                  poll_s=_seconds("DOLBOM_STREAM_POLL_S", 0.2),
                  heartbeat_s=_seconds("DOLBOM_STREAM_HEARTBEAT_S", 15.0))
    return StreamingResponse(body, media_type="text/event-stream", headers={
        "Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/sms/outbox")
def sms_outbox(request: Request, _: Dispatcher,
               since: Annotated[datetime | None, Query()] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 200) -> list[dict[str, Any]]:
    """Outbound SMS created after `since` (default: all), oldest first: what each simulated
    phone received. `code` is the job code the message is about, when it has one."""
    n = orm.notifications.c
    query = select(n.id, n.recipient, n.kind, n.body, n.params, n.status, n.request_id,
                   n.created_at).order_by(n.created_at, n.id).limit(limit)
    if since is not None:
        query = query.where(n.created_at > (since if since.tzinfo else since.replace(tzinfo=UTC)))
    with request.app.state.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        rows = conn.execute(query).all()
    return [{"id": r.id, "recipient": r.recipient, "kind": r.kind, "body": r.body,
             "code": (r.params or {}).get("code"), "status": r.status,
             "request_id": r.request_id, "created_at": r.created_at.isoformat()}
            for r in rows]
