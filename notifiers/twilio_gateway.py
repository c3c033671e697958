"""The Twilio adapter for the SmsGateway port, on the real `twilio` client.

Twilio's send has no idempotency key (DESIGN.md §5), so the adapter's main job beyond
sending is to say precisely *how* a send failed: whether trying again can help
(`retryable`) and whether the message may have gone out anyway (`outcome_unknown`), and
to offer `lookup` / `recent_to` so a caller can check before it ever resends.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import NewConnectionError

from notifiers.gateway import SentSms, SmsSendError

DEFAULT_API_BASE_URL = "https://api.twilio.com"

# Twilio codes that say "this recipient cannot be reached", so a retry only repeats the
# failure: invalid number, not a mobile, landline/unreachable, opted out.
PERMANENT_CODES = frozenset({21211, 21614, 30006, 21610})
# Twilio codes that are transient even when not a 5xx.
TRANSIENT_CODES = frozenset({30008})

# twilio's HTTP client logs every request at INFO, query string included, and
# recent_to() puts the recipient's number there; keep phone numbers out of logs.
_http_log = logging.getLogger(__name__ + ".http")
_http_log.setLevel(logging.WARNING)

# Twilio echoes the recipient in some error texts ("The 'To' number +8210... is not valid");
# error messages end up in logs, so only the last digits may survive.
_PHONE_LIKE = re.compile(r"\+?\d[\d\- ]{5,}(\d{4})")


def mask_numbers(text: str) -> str:
    return _PHONE_LIKE.sub(lambda m: "***" + m.group(1), text)


class TwilioGateway:
    """SmsGateway on Twilio's Messages API (or any Twilio-compatible endpoint)."""

    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        api_base_url: str | None = None,
        status_callback_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if (from_number is None) == (messaging_service_sid is None):
            raise ValueError("give exactly one of from_number or messaging_service_sid")
        if not account_sid or not auth_token:
            raise ValueError("account_sid and auth_token are required")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.status_callback_url = status_callback_url
        self.api_base_url = (api_base_url or DEFAULT_API_BASE_URL).rstrip("/")
        self.timeout = timeout
        self._credentials = (account_sid, auth_token)
        # One Twilio client per thread: TwilioHttpClient keeps each response on itself and
        # returns it from there, so two threads sending at once (the worker sends from its
        # agents and its sweep) could each get the other's answer and record the wrong SID.
        self._local = threading.local()

    @property
    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._new_client()
        return client

    def _new_client(self) -> Client:
        # The timeout covers connect and each socket read, so a hung Twilio costs at most
        # `timeout` per call instead of blocking a notifier thread forever.
        http_client = TwilioHttpClient(timeout=self.timeout, logger=_http_log)
        client = Client(*self._credentials, http_client=http_client)
        if self.api_base_url != DEFAULT_API_BASE_URL:
            # Domain.base_url is the public attribute every Messages URL (and the next_page_uri
            # of a listing) is joined onto, so setting it is the supported redirect; no
            # transport rewriting or private patching needed.
            client.api.base_url = self.api_base_url
            # TWILIO_EDGE / TWILIO_REGION in the environment would rewrite the host to
            # api.<edge>.<region>.twilio.com; a custom endpoint must be used as given.
            client.edge = None
            client.region = None
        return client

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        kwargs: dict[str, Any] = {"to": to, "body": body}
        if self.from_number is not None:
            kwargs["from_"] = self.from_number
        else:
            kwargs["messaging_service_sid"] = self.messaging_service_sid
        if self.status_callback_url:
            kwargs["status_callback"] = self.status_callback_url
        if validity_period is not None:
            kwargs["validity_period"] = validity_period
        try:
            message = self._client.messages.create(**kwargs)
        except Exception as exc:
            raise _to_send_error(exc, "send") from exc
        if not message.sid:
            # A 2xx without a SID means we cannot track it; treat it as possibly sent.
            raise SmsSendError(
                "Twilio accepted the send but returned no SID",
                retryable=True,
                outcome_unknown=True,
            )
        return SentSms(sid=message.sid, status=str(message.status or "queued"))

    def lookup(self, sid: str) -> SentSms | None:
        """The message's current status, or None if Twilio has no such message."""
        try:
            message = self._client.messages(sid).fetch()
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise _to_send_error(exc, "lookup") from exc
        except Exception as exc:
            raise _to_send_error(exc, "lookup") from exc
        return SentSms(sid=str(message.sid), status=str(message.status))

    def find_sent(self, to: str, body: str, exclude: set[str]) -> SentSms | None:
        # A send left `sending` by a dead worker is looked up a minute later; a busy carer
        # can get dozens of SMS in that minute (52 in the failover test), so look well back.
        for sid, status, sent_body in self.recent_to(to, limit=200):
            if sent_body == body and sid not in exclude:
                return SentSms(sid=sid, status=status)
        return None

    def recent_to(self, to: str, limit: int = 20) -> list[tuple[str, str, str]]:
        """(sid, status, body) of the newest messages sent to `to`, newest first.

        Meant for an uncertain send: if a message with the same body is there, it went out.
        """
        try:
            messages = self._client.messages.list(to=to, limit=limit)
        except Exception as exc:
            raise _to_send_error(exc, "recent_to") from exc
        return [(str(m.sid), str(m.status), str(m.body or "")) for m in messages]


def _to_send_error(exc: Exception, action: str) -> SmsSendError:
    if isinstance(exc, TwilioRestException):
        return _from_rest_error(exc.status, exc.code, exc.msg, action)
    if isinstance(exc, TwilioException):
        # A failed listing raises a bare TwilioException("...", response); an RFC 9457
        # error body gives a TwilioServiceException with .status and .code.
        response = exc.args[1] if len(exc.args) > 1 else None
        status = getattr(exc, "status", None) or getattr(response, "status_code", None)
        code = getattr(exc, "code", None)
        return _from_rest_error(
            status if isinstance(status, int) else None,
            code if isinstance(code, int) else None,
            str(exc.args[0]) if exc.args else repr(exc),
            action,
        )
    if isinstance(exc, requests.exceptions.RequestException):
        if _never_reached_twilio(exc):
            return SmsSendError(
                f"Twilio {action}: could not connect: {exc}",
                retryable=True,
                outcome_unknown=False,
            )
        if isinstance(exc, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
            # The request may have been read and acted on; only the answer was lost.
            return SmsSendError(
                f"Twilio {action}: no answer ({type(exc).__name__}): {exc}",
                retryable=True,
                outcome_unknown=True,
            )
        return SmsSendError(f"Twilio {action}: request failed: {exc}")
    return SmsSendError(f"Twilio {action}: unexpected error: {exc!r}")


def _from_rest_error(
    status: int | None, code: int | None, message: str, action: str
) -> SmsSendError:
    server_side = status is not None and status >= 500
    retryable = server_side or status == 429 or code in TRANSIENT_CODES
    if code in PERMANENT_CODES:
        retryable = False
    return SmsSendError(
        f"Twilio {action} failed (HTTP {status}, code {code}): {mask_numbers(message)}",
        code=code,
        http_status=status,
        retryable=retryable,
        # A 5xx may come after Twilio queued the message; only a lookup can tell.
        outcome_unknown=server_side,
    )


def _never_reached_twilio(exc: requests.exceptions.RequestException) -> bool:
    """True when the failure happened before any byte of the request could be read."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, NewConnectionError)
    return False
