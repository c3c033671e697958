"""Bearer tokens with roles. Tokens are stored hashed; `dolbom token create` prints one."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from api.session import token_from_cookie
from dispatch.handlers import hash_token


@dataclass(frozen=True)
class Caller:
    token_id: str
    name: str
    role: str


def authenticate(request: Request) -> Caller:
    """The bearer token, or else the console's session cookie (api/session.py)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        session = token_from_cookie(request) if not header else None
        if session is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        return Caller(token_id=session[0], name=session[1], role=session[2])
    uow = request.app.state.uow_factory()
    with uow:
        found = uow.tokens.by_hash(hash_token(token.strip()))
        if found is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        return Caller(token_id=found.id, name=found.name, role=found.role)


def require(*roles: str):  # type: ignore[no-untyped-def]
    """A dependency: the caller must hold one of `roles`."""

    def check(request: Request) -> Caller:
        caller = authenticate(request)
        if caller.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"role {caller.role!r} may not do this")
        return caller

    return check
