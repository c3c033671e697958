"""A gateway that sends only while this process's claim on its SMS still stands.

The claim is a heartbeat (streams/lease.py): once it has lapsed, other workers may already
have found the message missing at the provider and sent it themselves, so this process
must not start the send. It sits innermost, after the rate limit's wait, so the check is
made right before the provider is called, not before a wait of minutes.
"""

from __future__ import annotations

from collections.abc import Callable

from notifiers.gateway import SentSms, SmsGateway, SmsSendError


class FencedGateway:
    def __init__(self, inner: SmsGateway, may_send: Callable[[], bool]) -> None:
        self.inner = inner
        self.name = inner.name
        self.may_send = may_send

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        if not self.may_send():
            # Never handed over, so safe to try again: by this worker once its heartbeat
            # is back, or by another once this one is counted dead.
            raise SmsSendError("not sent: this worker's heartbeat has lapsed", retryable=True)
        return self.inner.send(to, body, validity_period=validity_period)

    def find_sent(self, to: str, body: str, exclude: set[str]) -> SentSms | None:
        return self.inner.find_sent(to, body, exclude)
