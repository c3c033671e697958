"""Small helpers the handlers share."""

from __future__ import annotations

from datetime import datetime

from dispatch.domain.model import Request
from dispatch.domain.policy import ServicePolicy


def local_time(dt: datetime, policy: ServicePolicy, fmt: str = "%m/%d %H:%M") -> str:
    """A time as the people of this service read it (their timezone, short)."""
    return dt.astimezone(policy.tz).strftime(fmt)


def place_of(request: Request) -> str:
    return " ".join(str(request.location[k]) for k in ("hospital", "ward")
                    if request.location.get(k)) or str(request.location.get("district", ""))
