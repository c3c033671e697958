"""Limits at the edge: oversized bodies (413) before anything reads them, and intake rate
limits (429 with Retry-After) per API token and per sending phone number."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.session import COOKIE
from dispatch.handlers import hash_token

MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised while a body without Content-Length streams in. An HTTPException, because
    FastAPI turns any other error from reading the body into a 400."""

    def __init__(self, max_bytes: int = MAX_BODY_BYTES) -> None:
        super().__init__(413, f"bodies are limited to {max_bytes} bytes")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"code": "body_too_large",
                           "message": f"bodies are limited to {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# -- intake rate limits --------------------------------------------------------------
#
# Token buckets, in this process. One bucket per key holds at most `capacity` tokens and
# refills at `rate` tokens a second; a call takes one token or is refused with the seconds
# until one is back. The API keys them by credential (POST /v1/requests, /v1/families) and
# by sending phone number (inbound SMS that are not a command: api/webhooks.py).


class TokenBucketLimiter:
    """`per_minute` calls a minute per key, up to a minute's worth at once. Thread-safe:
    FastAPI runs sync endpoints and their dependencies on a thread pool."""

    # A full bucket is the same as no bucket; forget idle keys past this many, so a flood
    # of distinct keys (random phone numbers) cannot grow memory without bound.
    MAX_KEYS = 10_000

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.capacity = max(1.0, float(per_minute))
        self.rate = per_minute / 60.0  # tokens a second
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._noticed: set[str] = set()  # keys told "too many" since they last got through

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 if allowed, else the seconds until one is back."""
        with self._lock:
            now = self._clock()
            tokens = self._level(key, now)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                self._noticed.discard(key)
                self._forget_idle(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def first_refusal(self, key: str) -> bool:
        """True once per spell of refusals for `key` (until a call of theirs gets through
        again): whoever is answered "too many messages" is answered once, not per message."""
        with self._lock:
            if key in self._noticed:
                return False
            self._noticed.add(key)
            return True

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) <= self.MAX_KEYS:
            return
        for key in [k for k in self._buckets if self._level(k, now) >= self.capacity]:
            del self._buckets[key]
            self._noticed.discard(key)
        while len(self._buckets) > self.MAX_KEYS:  # still too many: drop the oldest
            oldest = min(self._buckets, key=lambda k: self._buckets[k][1])
            del self._buckets[oldest]


class RateLimited(HTTPException):
    """429 with Retry-After in whole seconds; api/errors.py answers `code: rate_limited`."""

    def __init__(self, retry_after_s: float, what: str) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(429, f"too many {what} from this token; try again in {seconds} s",
                         headers={"Retry-After": str(seconds)})


_limiters_lock = threading.Lock()


def limiter(request: Request, name: str, per_minute: float) -> TokenBucketLimiter:
    """The app's limiter called `name`, made on first use from the app's settings."""
    state = request.app.state
    with _limiters_lock:
        limiters: dict[str, TokenBucketLimiter] = getattr(state, "rate_limiters", None) or {}
        state.rate_limiters = limiters
        if name not in limiters:
            limiters[name] = TokenBucketLimiter(per_minute)
        return limiters[name]


def _credential(request: Request) -> str:
    """Who is calling, without a database lookup: the bearer token's hash (as stored), or
    the console session's token id. Runs after the route's auth dependency, so it is valid."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hash_token(token.strip())
    return "session:" + request.cookies.get(COOKIE, "").partition(".")[0]


def _per_token(what: str) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        settings = request.app.state.settings
        wait = limiter(request, what, settings.intake_rate_per_min).take(_credential(request))
        if wait > 0:
            raise RateLimited(wait, what)

    check.__name__ = f"limit_{what}"
    return check


# Route dependencies (api/routes.py): list them after the caller, so 401/403 come first.
requests_quota = _per_token("requests")
families_quota = _per_token("families")
RequestsQuota = Annotated[None, Depends(requests_quota)]
FamiliesQuota = Annotated[None, Depends(families_quota)]
