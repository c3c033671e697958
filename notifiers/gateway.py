"""The SmsGateway port: what the rest of dolbom needs from an SMS provider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SentSms:
    """What the provider said when it took the message (Twilio sends no callback for it)."""

    sid: str
    status: str  # queued | accepted | sent | delivered ...


class SmsSendError(Exception):
    """The provider refused or failed the send.

    `retryable` says whether trying again later can help (429, 5xx, 30008); `code` is the
    provider's error code when it gave one (21211 invalid number, 21610 opted out, ...).
    `outcome_unknown` is set when the message may have been accepted anyway (a timeout
    or a 5xx after the request was sent): it must be looked up before any retry.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        retryable: bool = False,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.retryable = retryable
        self.outcome_unknown = outcome_unknown


class SmsGateway(Protocol):
    name: str

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        """Hand one SMS to the provider. `to` is E.164. Raises SmsSendError."""
        ...

    def find_sent(self, to: str, body: str, exclude: set[str]) -> SentSms | None:
        """After an uncertain send: the provider's record of this text to `to`, if it went out.

        `exclude` holds SIDs already accounted for by other notifications.
        """
        ...
