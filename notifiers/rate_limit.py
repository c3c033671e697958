"""A per-sender rate limit in front of a gateway.

Carriers and Twilio throttle a long code (about 1 message a second); sending faster only
moves the queue to Twilio, where a stale offer can wait past its validity. Waiting here
keeps the queue ours: visible (`backlog`) and ordered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from notifiers.gateway import SentSms, SmsGateway


class RateLimitedGateway:
    def __init__(self, inner: SmsGateway, per_second: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.inner = inner
        self.name = inner.name
        self.interval = 1.0 / per_second
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self.backlog = 0  # sends waiting for their slot right now

    def _wait_for_slot(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
            self.backlog += 1
        try:
            if slot > now:
                self._sleep(slot - now)
        finally:
            with self._lock:
                self.backlog -= 1

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        self._wait_for_slot()
        return self.inner.send(to, body, validity_period=validity_period)

    def find_sent(self, to: str, body: str, exclude: set[str]) -> SentSms | None:
        return self.inner.find_sent(to, body, exclude)
