"""A local Twilio-compatible HTTP stub, good enough for the real `twilio` client.

Tests, benchmarks and local play point `TWILIO_API_BASE_URL` at it. It speaks the small
part of the Messages API dolbom uses (create, fetch, list), answers with Twilio's JSON
shapes and error codes, records every accepted message, and can inject the failures
that matter for dispatch: errors, rate limits, opt-outs, and a send that hangs after
being taken (the "Twilio took it but the answer was lost" case from DESIGN.md §5).

It can also play Twilio's side of webhooks: signed status callbacks and inbound SMS.

    with TwilioStub() as stub:
        gw = TwilioGateway(stub.account_sid, stub.auth_token, from_number="+15005550006",
                           api_base_url=stub.base_url)
        gw.send("+821012345678", "hello")
        stub.wait_for(lambda m: m["to"] == "+821012345678")

Run `python -m infra.twilio_stub --port 8088` to play with it by hand.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)

# Deliberately not shaped like real SIDs ("AC" + 32 hex) so a pre-commit secret check
# never flags them and nobody mistakes them for a live account.
DEFAULT_ACCOUNT_SID = "ACdolbomstub"
DEFAULT_AUTH_TOKEN = "stub-auth-token"
# Twilio's documented magic test sender; any E.164 string works against the stub.
DEFAULT_FROM_NUMBER = "+15005550006"

API_VERSION = "2010-04-01"
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_MESSAGE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")

# Twilio's messages for the codes a test is likely to inject; anything else gets a generic text.
_ERROR_TEXT: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service Unavailable",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21624: "Invalid validity period value",
    30006: "Landline or unreachable carrier",
    30008: "Unknown error",
}

# The fields of a stored message that belong to Twilio's Message resource; the rest
# (raw params, arrival times, callback URL) are the stub's own bookkeeping.
_RESOURCE_KEYS = (
    "account_sid",
    "api_version",
    "body",
    "date_created",
    "date_sent",
    "date_updated",
    "direction",
    "error_code",
    "error_message",
    "from",
    "messaging_service_sid",
    "num_media",
    "num_segments",
    "price",
    "price_unit",
    "sid",
    "status",
    "subresource_uris",
    "to",
    "uri",
)

_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")


def sign(url: str, params: dict[str, str], auth_token: str) -> str:
    """The X-Twilio-Signature Twilio would send for a form POST of `params` to `url`."""
    return str(RequestValidator(auth_token).compute_signature(url, params))


def count_segments(body: str) -> int:
    """SMS segments as Twilio counts them (GSM-7 160/153, otherwise UCS-2 70/67).

    Hangul forces UCS-2, which is why DESIGN.md asks templates to stay short.
    """
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENDED for ch in body):
        septets = sum(2 if ch in _GSM7_EXTENDED else 1 for ch in body)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


def new_message_sid() -> str:
    return "SM" + uuid.uuid4().hex


def _rfc2822_now() -> str:
    return format_datetime(datetime.now(UTC))


def _error_body(status: int, code: int, message: str | None = None) -> dict[str, Any]:
    return {
        "code": code,
        "message": message or _ERROR_TEXT.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@dataclass(frozen=True)
class _Failure:
    http_status: int
    code: int
    message: str | None
    accepted: bool


@dataclass(frozen=True)
class _Hang:
    seconds: float
    # True: taken and recorded, only the answer is late (Twilio has it). False: nothing was
    # taken; the late answer is a 500 (the request died inside Twilio, or before it).
    accepted: bool = True


class _StubError(Exception):
    """Raised inside a handler to answer with a Twilio-shaped error."""

    def __init__(self, status: int, code: int, message: str | None = None) -> None:
        super().__init__(message or _ERROR_TEXT.get(code, "Error"))
        self.status = status
        self.code = code
        self.message = message


class TwilioStub:
    """A Twilio Messages API on 127.0.0.1, served from a background thread.

    All public methods are thread-safe. `messages` are the *accepted* sends in arrival
    order; `attempts` records every authenticated send attempt with its outcome, so a
    test can assert that a caller did (or did not) retry.
    """

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_alive: bool = False,
    ) -> None:
        self.account_sid = account_sid
        # HTTP/1.1 keep-alive, as the real API: the benchmarks use it, so that each SMS
        # costs an HTTP exchange on an open connection, not a TCP connection and a thread.
        self.keep_alive = keep_alive
        self.auth_token = auth_token
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._messages: list[dict[str, Any]] = []
        self._by_sid: dict[str, dict[str, Any]] = {}
        self._attempts: list[dict[str, Any]] = []
        self._injections: deque[_Failure | _Hang] = deque()
        # Set on stop() so handlers sleeping in a hang injection return at once.
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> TwilioStub:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer((self._host, self._port), _make_handler(self))
        # Handler threads may be parked in a hang injection; they must never block exit.
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"twilio-stub:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> TwilioStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("TwilioStub is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def env(self, from_number: str = DEFAULT_FROM_NUMBER) -> dict[str, str]:
        """The CONTRACT.md environment that points a dolbom process at this stub."""
        return {
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_FROM_NUMBER": from_number,
            "TWILIO_API_BASE_URL": self.base_url,
        }

    # -- inspection --------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Accepted messages in arrival order (copies: mutate freely).

        Each has Twilio's resource fields (`sid`, `to`, `from`, `body`, `status`, ...)
        plus `status_callback`, `validity_period` (int or None), `params` (the raw form),
        `received_at` (time.monotonic()) and `received_at_wall` (time.time()).
        """
        with self._lock:
            return [_copy(m) for m in self._messages]

    @property
    def attempts(self) -> list[dict[str, Any]]:
        """Every authenticated send attempt: {params, http_status, code, sid, received_at,
        injected}."""
        with self._lock:
            return [dict(a, params=dict(a["params"])) for a in self._attempts]

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            msg = self._by_sid.get(sid)
            return _copy(msg) if msg is not None else None

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first accepted message (oldest first) matching `predicate`, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for msg in self._messages:
                    if predicate(_copy(msg)):
                        return _copy(msg)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    arrived = [_describe(m) for m in self._messages]
                    break
                self._changed.wait(remaining)
        listing = "\n  ".join(arrived) if arrived else "(none)"
        raise TimeoutError(
            f"no matching SMS within {timeout:.1f}s; {len(arrived)} arrived:\n  {listing}"
        )

    def clear(self) -> None:
        """Forget messages, attempts and any pending failure injections."""
        with self._lock:
            self._messages.clear()
            self._by_sid.clear()
            self._attempts.clear()
            self._injections.clear()

    # -- failure injection -------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        http_status: int = 500,
        code: int = 20500,
        message: str | None = None,
        *,
        accepted: bool = False,
    ) -> None:
        """Make the next `n` authenticated sends answer with this Twilio error.

        With `accepted=True` the message is recorded as taken anyway, which is what an
        "outcome unknown" 5xx can mean in production.
        Examples: (429, 20429) rate limit; (400, 21610) opted-out recipient.
        """
        with self._lock:
            self._injections.extend(
                _Failure(http_status, code, message, accepted) for _ in range(n)
            )

    def fail_next_timeout(self, n: int = 1, seconds: float = 30.0, *,
                          accepted: bool = True) -> None:
        """Make the next `n` sends be answered only after `seconds` (a client with a shorter
        timeout sees a read timeout). With `accepted=True` (the default) each is recorded
        as taken when it arrives: the SMS went out and only the answer was lost, so sending
        it again would text the person twice. With `accepted=False` nothing is recorded and
        the late answer is a 500: the same timeout for the client, but nothing went out."""
        with self._lock:
            self._injections.extend(_Hang(seconds, accepted) for _ in range(n))

    @property
    def pending_failures(self) -> int:
        """Injected failures not yet used by a send."""
        with self._lock:
            return len(self._injections)

    # -- Twilio's side of webhooks -----------------------------------------------------

    def set_status(self, message_sid: str, status: str, error_code: int | None = None) -> None:
        with self._lock:
            msg = self._by_sid.get(message_sid)
            if msg is None:
                raise KeyError(message_sid)
            msg["status"] = status
            msg["error_code"] = error_code
            msg["error_message"] = _ERROR_TEXT.get(error_code) if error_code else None
            msg["date_updated"] = _rfc2822_now()
            if status in ("sent", "delivered") and msg["date_sent"] is None:
                msg["date_sent"] = msg["date_updated"]

    def send_status_callback(
        self,
        message_sid: str,
        status: str,
        error_code: int | None = None,
        *,
        timeout: float = 5.0,
    ) -> httpx.Response:
        """POST a signed status callback to the message's StatusCallback URL, like Twilio.

        Also updates the stored status, so a later fetch agrees with the callback.
        """
        self.set_status(message_sid, status, error_code)
        msg = self.get(message_sid)
        assert msg is not None
        url = msg["status_callback"]
        if not url:
            raise ValueError(f"message {message_sid} was sent without a StatusCallback")
        params = {
            "MessageSid": message_sid,
            "SmsSid": message_sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": self.account_sid,
            "To": msg["to"],
            "ApiVersion": API_VERSION,
        }
        if msg["from"]:
            params["From"] = msg["from"]
        if msg["messaging_service_sid"]:
            params["MessagingServiceSid"] = msg["messaging_service_sid"]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return self._post_signed(url, params, timeout)

    def send_inbound_sms(
        self,
        url: str,
        from_: str,
        body: str,
        *,
        to: str = DEFAULT_FROM_NUMBER,
        message_sid: str | None = None,
        timeout: float = 5.0,
    ) -> httpx.Response:
        """POST a signed inbound-SMS webhook, as Twilio does when someone texts `to`."""
        sid = message_sid or new_message_sid()
        params = {
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": str(count_segments(body)),
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        return self._post_signed(url, params, timeout)

    def _post_signed(self, url: str, params: dict[str, str], timeout: float) -> httpx.Response:
        headers = {
            "X-Twilio-Signature": sign(url, params, self.auth_token),
            "User-Agent": "TwilioProxy/1.1",
        }
        return httpx.post(url, data=params, headers=headers, timeout=timeout)

    # -- request handling (called from server threads) ---------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(user, self.account_sid) and hmac.compare_digest(
            password, self.auth_token
        )

    def _create(self, form: dict[str, str]) -> tuple[int, dict[str, Any], float]:
        """Answer to a send: (status, JSON body, seconds to wait before answering)."""
        now_mono, now_wall = time.monotonic(), time.time()
        with self._lock:
            injection = self._injections.popleft() if self._injections else None
        delay = injection.seconds if isinstance(injection, _Hang) else 0.0
        sid: str | None = None
        try:
            if isinstance(injection, _Failure):
                if injection.accepted:
                    sid = self._accept(form, now_mono, now_wall)["sid"]
                raise _StubError(injection.http_status, injection.code, injection.message)
            if isinstance(injection, _Hang) and not injection.accepted:
                raise _StubError(500, 20500)
            self._validate(form)
            resource = self._accept(form, now_mono, now_wall)
            sid = resource["sid"]
            status, body = 201, resource
        except _StubError as err:
            status, body = err.status, _error_body(err.status, err.code, err.message)
        with self._lock:
            self._attempts.append(
                {
                    "params": dict(form),
                    "http_status": status,
                    "code": body.get("code") if status >= 400 else None,
                    "sid": sid,
                    "received_at": now_mono,
                    # Which injected failure this send met, if any: "error", "hang"
                    # (taken, answered late) or "hang_not_taken".
                    "injected": None if injection is None else "error"
                    if isinstance(injection, _Failure) else "hang" if injection.accepted
                    else "hang_not_taken",
                }
            )
        return status, body, delay

    @staticmethod
    def _validate(form: dict[str, str]) -> None:
        to = form.get("To", "")
        if not to:
            raise _StubError(400, 21604)
        if not _E164.match(to):
            raise _StubError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            raise _StubError(400, 21603)
        if not form.get("Body"):
            raise _StubError(400, 21602)
        validity = form.get("ValidityPeriod")
        if validity is not None and (not validity.isdigit() or not 1 <= int(validity) <= 36000):
            raise _StubError(400, 21624)

    def _accept(self, form: dict[str, str], now_mono: float, now_wall: float) -> dict[str, Any]:
        sid = new_message_sid()
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        created = _rfc2822_now()
        validity = form.get("ValidityPeriod")
        body = form.get("Body", "")
        msg: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": created,
            "date_sent": None,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            # Like Twilio, a messaging-service send has no sender until the service picks one.
            "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "num_media": "0",
            "num_segments": str(count_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": form.get("To", ""),
            "uri": uri,
            "status_callback": form.get("StatusCallback") or None,
            "validity_period": int(validity) if validity and validity.isdigit() else None,
            "params": dict(form),
            "received_at": now_mono,
            "received_at_wall": now_wall,
        }
        with self._changed:
            self._messages.append(msg)
            self._by_sid[sid] = msg
            self._changed.notify_all()
        return _resource(msg)

    def _fetch(self, sid: str, path: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            msg = self._by_sid.get(sid)
            if msg is not None:
                return 200, _resource(msg)
        return 404, _error_body(404, 20404, f"The requested resource {path} was not found")

    def _list(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            page = int(query.get("Page", "0"))
            page_size = int(query.get("PageSize", "50"))
        except ValueError as err:
            raise _StubError(400, 20001, "Invalid paging parameters") from err
        page_size = max(1, min(page_size, 1000))
        with self._lock:
            # Twilio lists newest first.
            found = [
                _resource(m)
                for m in reversed(self._messages)
                if ("To" not in query or m["to"] == query["To"])
                and ("From" not in query or m["from"] == query["From"])
            ]
        start = page * page_size
        chunk = found[start : start + page_size]
        filters: dict[str, str | int] = {k: query[k] for k in ("To", "From") if k in query}

        def page_uri(n: int) -> str:
            return f"{path}?{urlencode({**filters, 'PageSize': page_size, 'Page': n})}"

        has_next = start + page_size < len(found)
        return 200, {
            "messages": chunk,
            "end": start + max(len(chunk), 1) - 1,
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) if has_next else None,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "page": page,
            "page_size": page_size,
            "start": start,
            "uri": page_uri(page),
        }


def _resource(msg: dict[str, Any]) -> dict[str, Any]:
    out = {k: msg[k] for k in _RESOURCE_KEYS}
    out["subresource_uris"] = dict(msg["subresource_uris"])
    return out


def _copy(msg: dict[str, Any]) -> dict[str, Any]:
    return dict(msg, params=dict(msg["params"]), subresource_uris=dict(msg["subresource_uris"]))


def _describe(msg: dict[str, Any]) -> str:
    sender = msg["from"] or msg["messaging_service_sid"]
    return f"{msg['sid']} {sender} -> {msg['to']} [{msg['status']}] {msg['body']!r}"


def _single_values(raw: str) -> dict[str, str]:
    # Twilio's Messages API has no repeated fields we care about; the last value wins.
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _make_handler(stub: TwilioStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "TwilioStub/1.0"
        # By default HTTP/1.0: each connection closes after one answer, so no test ever
        # depends on an idle keep-alive connection held by a client's pool.
        protocol_version = "HTTP/1.1" if stub.keep_alive else "HTTP/1.0"
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the
        # body back until the client's delayed ACK, 40 ms or more on a kept-alive connection.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("twilio-stub: " + format, *args)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def _dispatch(self, method: str) -> None:
            try:
                self._route(method)
            except _StubError as err:
                self._answer(err.status, _error_body(err.status, err.code, err.message))
            except Exception:  # a stub bug must surface as a 500, not a hung client
                log.exception("twilio-stub: handler failed")
                self._answer(500, _error_body(500, 20500))

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            many, one = _MESSAGES.match(path), _MESSAGE.match(path)
            match = many or one
            if match is None:
                raise _StubError(404, 20404, f"The requested resource {path} was not found")
            if not stub._authorized(self.headers.get("Authorization")):
                self._answer(
                    401,
                    _error_body(401, 20003),
                    {"WWW-Authenticate": 'Basic realm="Twilio API"'},
                )
                return
            if match.group("account") != stub.account_sid:
                raise _StubError(404, 20404, f"The requested resource {path} was not found")
            query = _single_values(parts.query)
            if many and method == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                form = _single_values(self.rfile.read(length).decode("utf-8"))
                status, body, delay = stub._create(form)
                if delay > 0:
                    stub._stopping.wait(delay)
                self._answer(status, body)
            elif many and method == "GET":
                self._answer(*stub._list(path, query))
            elif one and method == "GET":
                self._answer(*stub._fetch(one.group("sid"), path))
            else:
                raise _StubError(405, 20004, "Method not allowed")

        def _answer(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (a timeout test): exactly the lost answer we simulate.
                pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a local Twilio Messages API stub.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    stub = TwilioStub(
        account_sid=args.account_sid, auth_token=args.auth_token, host=args.host, port=args.port
    )
    with stub:
        print(f"Twilio stub at {stub.base_url}", flush=True)
        for key, value in stub.env().items():
            print(f"  {key}={value}", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.5)
                arrived = stub.messages
                for msg in arrived[seen:]:
                    print(f"SMS {_describe(msg)}", flush=True)
                seen = len(arrived)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
