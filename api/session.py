"""Console sign-in: a token typed once becomes an HttpOnly cookie (EventSource can't send headers).

The cookie is `<token id>.<issued at>.<HMAC-SHA256(secret, token hash and issued at)>`: nothing
about the token itself is in it, and it is checked against the `api_tokens` row on every request,
so revoking the token ends the session. It is good for one shift (`MAX_AGE_S`) from sign-in,
checked here: a copied cookie stops working then too, whatever the browser keeps. The secret is `DOLBOM_SESSION_SECRET`; when unset a random one is made when the API
starts, so sessions then end when the API restarts (and differ between several API processes:
set the variable when running more than one).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool

from dispatch import orm
from dispatch.db import READ_ONLY
from dispatch.handlers import hash_token

COOKIE = "dolbom_session"
MAX_AGE_S = 12 * 3600  # one dispatcher shift
CLOCK_SKEW_S = 60  # several API processes: a cookie issued by one a little ahead of another

router = APIRouter(prefix="/v1")


def session_secret() -> bytes:
    configured = os.environ.get("DOLBOM_SESSION_SECRET", "")
    return configured.encode() if configured else secrets.token_bytes(32)


def _mac(secret: bytes, token_hash: str, issued: int) -> str:
    return hmac.new(secret, f"{token_hash}.{issued}".encode(), hashlib.sha256).hexdigest()


def cookie_value(secret: bytes, token_id: str, token_hash: str, issued: int) -> str:
    return f"{token_id}.{issued}.{_mac(secret, token_hash, issued)}"


def token_from_cookie(request: Request) -> tuple[str, str, str] | None:
    """(token id, name, role) of the session cookie's token, if its signature holds, it was
    issued within `MAX_AGE_S` and the token is not revoked; None otherwise."""
    value = request.cookies.get(COOKIE, "")
    parts = value.split(".")
    if len(parts) != 3:
        return None
    token_id, issued_text, mac = parts
    if not token_id or not mac or len(token_id) > 64 or not issued_text.isdigit() \
            or len(issued_text) > 12:
        return None
    issued = int(issued_text)
    if not -CLOCK_SKEW_S <= time.time() - issued <= MAX_AGE_S:
        return None
    t = orm.api_tokens.c
    with request.app.state.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        row = conn.execute(select(t.token_hash, t.name, t.role).where(
            t.id == token_id, t.revoked.is_(False))).first()
    if row is None:
        return None
    expected = _mac(request.app.state.session_secret, row.token_hash, issued)
    if not hmac.compare_digest(expected, mac):
        return None
    return token_id, str(row.name), str(row.role)


def _token_row(engine: Engine, token: str) -> tuple[str, str, str, str] | None:
    """(id, name, role, hash) of the unrevoked token, or None."""
    t = orm.api_tokens.c
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        row = conn.execute(select(t.id, t.name, t.role, t.token_hash).where(
            t.token_hash == hash_token(token), t.revoked.is_(False))).first()
    return None if row is None else (str(row.id), str(row.name), str(row.role),
                                     str(row.token_hash))


@router.post("/session")
async def sign_in(request: Request, response: Response) -> dict[str, Any]:
    """Form field `token` or JSON `{"token": …}` → the session cookie; 401 for a bad token."""
    token = await _token_from_body(request)
    row = await run_in_threadpool(_token_row, request.app.state.engine, token)
    if row is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked token")
    secure = request.app.state.settings.public_url.startswith("https://")
    token_id, name, role, token_hash = row
    value = cookie_value(request.app.state.session_secret, token_id, token_hash,
                         int(time.time()))
    response.set_cookie(COOKIE, value, max_age=MAX_AGE_S, httponly=True, samesite="strict", secure=secure,
                        path="/")
    return {"name": name, "role": role}


@router.delete("/session", status_code=204)
def sign_out() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def _token_from_body(request: Request) -> str:
    kind = request.headers.get("content-type", "")
    try:
        if kind.startswith("application/json"):
            data = await request.json()
            value = data.get("token") if isinstance(data, dict) else None
        else:
            value = (await request.form()).get("token")
    except ValueError:
        value = None
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or malformed token")
    return value.strip()

