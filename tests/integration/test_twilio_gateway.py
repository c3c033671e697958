"""TwilioGateway on the real twilio client, against the local Twilio-compatible stub."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from infra.twilio_stub import DEFAULT_FROM_NUMBER, TwilioStub, count_segments, sign
from notifiers.gateway import SentSms, SmsGateway, SmsSendError
from notifiers.twilio_gateway import TwilioGateway, mask_numbers

TO = "+821012345678"
OTHER = "+821098765432"
CALLBACK = "https://dolbom.example.kr/webhooks/twilio/status"
SERVICE_SID = "MGdolbomstubservice"


@pytest.fixture(scope="module")
def _running_stub() -> Iterator[TwilioStub]:
    with TwilioStub() as stub:
        yield stub


@pytest.fixture()
def stub(_running_stub: TwilioStub) -> Iterator[TwilioStub]:
    _running_stub.clear()
    yield _running_stub
    _running_stub.clear()


def make_gateway(stub: TwilioStub, **overrides: Any) -> TwilioGateway:
    kwargs: dict[str, Any] = {
        "from_number": DEFAULT_FROM_NUMBER,
        "api_base_url": stub.base_url,
        "status_callback_url": CALLBACK,
        "timeout": 2.0,
    }
    kwargs.update(overrides)
    return TwilioGateway(stub.account_sid, stub.auth_token, **kwargs)


@pytest.fixture()
def gateway(stub: TwilioStub) -> TwilioGateway:
    return make_gateway(stub)


def raw_client(stub: TwilioStub) -> Client:
    client = Client(stub.account_sid, stub.auth_token, http_client=TwilioHttpClient(timeout=2))
    client.api.base_url = stub.base_url
    return client


def send_error(gateway: TwilioGateway, to: str = TO, body: str = "hello") -> SmsSendError:
    with pytest.raises(SmsSendError) as info:
        gateway.send(to, body)
    return info.value


# -- sending ------------------------------------------------------------------------------


def test_send_arrives_with_to_from_body_callback_and_validity(
    stub: TwilioStub, gateway: TwilioGateway
) -> None:
    body = "[돌봄콜] 새 요청 4821: 서구 센터 19:00-23:00. 수락은 YES 4821"

    sent = gateway.send(TO, body, validity_period=600)

    assert isinstance(sent, SentSms)
    assert sent.sid.startswith("SM") and len(sent.sid) == 34
    assert sent.status == "queued"
    msg = stub.wait_for(lambda m: m["sid"] == sent.sid, timeout=2)
    assert msg["to"] == TO
    assert msg["from"] == DEFAULT_FROM_NUMBER
    assert msg["body"] == body
    assert msg["status_callback"] == CALLBACK
    assert msg["validity_period"] == 600
    assert msg["params"]["ValidityPeriod"] == "600"
    assert "MessagingServiceSid" not in msg["params"]
    # Hangul goes as UCS-2: 70 characters a segment.
    assert msg["num_segments"] == str(count_segments(body)) == "1"


def test_send_without_optional_fields_omits_them(stub: TwilioStub) -> None:
    gateway = make_gateway(stub, status_callback_url=None)

    gateway.send(TO, "plain")

    (msg,) = stub.messages
    assert set(msg["params"]) == {"To", "From", "Body"}
    assert msg["status_callback"] is None and msg["validity_period"] is None


def test_messaging_service_variant(stub: TwilioStub) -> None:
    gateway = make_gateway(stub, from_number=None, messaging_service_sid=SERVICE_SID)

    sent = gateway.send(TO, "via service")

    msg = stub.wait_for(lambda m: m["sid"] == sent.sid, timeout=2)
    assert msg["messaging_service_sid"] == SERVICE_SID
    assert "From" not in msg["params"]
    assert msg["from"] is None


def test_gateway_satisfies_the_port(gateway: TwilioGateway) -> None:
    port: SmsGateway = gateway
    assert port.name == "twilio"


@pytest.mark.parametrize(
    "senders",
    [{}, {"from_number": DEFAULT_FROM_NUMBER, "messaging_service_sid": SERVICE_SID}],
)
def test_exactly_one_sender_is_required(stub: TwilioStub, senders: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TwilioGateway(stub.account_sid, stub.auth_token, api_base_url=stub.base_url, **senders)


def test_base_url_survives_edge_and_region_settings(
    stub: TwilioStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the override these would turn 127.0.0.1 into a *.twilio.com-style host.
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")

    sent = make_gateway(stub).send(TO, "edge")

    assert stub.get(sent.sid) is not None


# -- errors -------------------------------------------------------------------------------


def test_wrong_credentials_is_not_retryable(stub: TwilioStub) -> None:
    gateway = TwilioGateway(
        stub.account_sid, "wrong-token", from_number=DEFAULT_FROM_NUMBER, api_base_url=stub.base_url
    )

    err = send_error(gateway)

    assert err.http_status == 401 and err.code == 20003
    assert not err.retryable and not err.outcome_unknown
    assert stub.messages == [] and stub.attempts == []


def test_500_is_retryable_and_outcome_unknown(stub: TwilioStub, gateway: TwilioGateway) -> None:
    stub.fail_next(1, http_status=500, code=20500)

    err = send_error(gateway)

    assert err.http_status == 500 and err.code == 20500
    assert err.retryable and err.outcome_unknown
    assert stub.messages == []
    # The injection was used up: the next send goes through.
    assert gateway.send(TO, "again").status == "queued"


def test_500_after_acceptance_is_visible_through_recent_to(
    stub: TwilioStub, gateway: TwilioGateway
) -> None:
    stub.fail_next(1, http_status=503, code=20503, accepted=True)

    err = send_error(gateway, body="maybe sent")

    assert err.outcome_unknown and err.retryable
    assert [(status, body) for _, status, body in gateway.recent_to(TO)] == [
        ("queued", "maybe sent")
    ]


def test_429_is_retryable_and_not_unknown(stub: TwilioStub, gateway: TwilioGateway) -> None:
    stub.fail_next(1, http_status=429, code=20429)

    err = send_error(gateway)

    assert err.http_status == 429 and err.code == 20429
    assert err.retryable and not err.outcome_unknown


def test_30008_is_retryable(stub: TwilioStub, gateway: TwilioGateway) -> None:
    stub.fail_next(1, http_status=400, code=30008)

    err = send_error(gateway)

    assert err.code == 30008 and err.retryable and not err.outcome_unknown


def test_invalid_number_21211_is_not_retryable(stub: TwilioStub, gateway: TwilioGateway) -> None:
    err = send_error(gateway, to="010-1234-5678")

    assert err.code == 21211 and err.http_status == 400
    assert not err.retryable and not err.outcome_unknown
    # The stub echoes the number like Twilio does; the error text must not carry it whole.
    assert "1234-5678" not in str(err) and "5678" in str(err)


@pytest.mark.parametrize("code", [21610, 21614, 30006, 21408])
def test_permanent_4xx_codes_are_not_retryable(
    stub: TwilioStub, gateway: TwilioGateway, code: int
) -> None:
    stub.fail_next(1, http_status=400, code=code)

    err = send_error(gateway)

    assert err.code == code and err.http_status == 400
    assert not err.retryable and not err.outcome_unknown


def test_permanent_code_wins_over_a_transient_status(
    stub: TwilioStub, gateway: TwilioGateway
) -> None:
    # An opted-out recipient stays opted out however the answer was wrapped.
    stub.fail_next(1, http_status=503, code=21610)

    err = send_error(gateway)

    assert err.code == 21610 and not err.retryable
    assert err.outcome_unknown


def test_timeout_is_outcome_unknown_and_recent_to_shows_it_was_taken(stub: TwilioStub) -> None:
    gateway = make_gateway(stub, timeout=0.5)
    stub.fail_next_timeout(1, seconds=5.0)

    started = time.monotonic()
    err = send_error(gateway, body="offer 4821")
    elapsed = time.monotonic() - started

    assert elapsed < 3.0, "the gateway timeout did not bound the call"
    assert err.outcome_unknown and err.retryable
    assert err.http_status is None
    recent = gateway.recent_to(TO)
    assert [(status, body) for _, status, body in recent] == [("queued", "offer 4821")]
    (sid, _, _) = recent[0]
    assert gateway.lookup(sid) == SentSms(sid, "queued")
    assert len(stub.attempts) == 1


def test_connection_refused_is_retryable_and_known_not_sent(stub: TwilioStub) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    gateway = make_gateway(stub, api_base_url=f"http://127.0.0.1:{closed_port}", timeout=1.0)

    err = send_error(gateway)

    assert err.retryable and not err.outcome_unknown


def test_fail_next_counts_down(stub: TwilioStub, gateway: TwilioGateway) -> None:
    stub.fail_next(2, http_status=429, code=20429)

    assert send_error(gateway).code == 20429
    assert send_error(gateway).code == 20429
    gateway.send(TO, "third")

    assert [a["http_status"] for a in stub.attempts] == [429, 429, 201]


# -- lookups ------------------------------------------------------------------------------


def test_lookup_known_and_unknown_sid(stub: TwilioStub, gateway: TwilioGateway) -> None:
    sent = gateway.send(TO, "look me up")

    assert gateway.lookup(sent.sid) == SentSms(sent.sid, "queued")
    stub.set_status(sent.sid, "delivered")
    assert gateway.lookup(sent.sid) == SentSms(sent.sid, "delivered")
    assert gateway.lookup("SM" + "0" * 32) is None


def test_recent_to_filters_by_recipient_newest_first_and_limits(
    stub: TwilioStub, gateway: TwilioGateway
) -> None:
    first = gateway.send(TO, "one")
    gateway.send(OTHER, "elsewhere")
    second = gateway.send(TO, "two")
    third = gateway.send(TO, "three")

    assert gateway.recent_to(TO) == [
        (third.sid, "queued", "three"),
        (second.sid, "queued", "two"),
        (first.sid, "queued", "one"),
    ]
    assert [body for _, _, body in gateway.recent_to(TO, limit=2)] == ["three", "two"]
    assert gateway.recent_to("+821000000000") == []


# -- the stub itself, through the real client ---------------------------------------------


def test_stub_requires_from_or_messaging_service(stub: TwilioStub) -> None:
    with pytest.raises(TwilioRestException) as info:
        raw_client(stub).messages.create(to=TO, body="no sender")

    assert info.value.status == 400 and info.value.code == 21603


def test_stub_paginates_for_the_real_client(stub: TwilioStub) -> None:
    gateway = make_gateway(stub)
    for i in range(5):
        gateway.send(TO, f"m{i}")

    listed = raw_client(stub).messages.list(to=TO, page_size=2)

    assert [m.body for m in listed] == ["m4", "m3", "m2", "m1", "m0"]


def test_wait_for_times_out_with_a_readable_listing(
    stub: TwilioStub, gateway: TwilioGateway
) -> None:
    gateway.send(TO, "the only one")

    with pytest.raises(TimeoutError, match="1 arrived") as info:
        stub.wait_for(lambda m: m["body"] == "never", timeout=0.2)

    assert "the only one" in str(info.value)


def test_wait_for_wakes_on_a_message_sent_later(stub: TwilioStub, gateway: TwilioGateway) -> None:
    timer = threading.Timer(0.2, gateway.send, args=(OTHER, "late"))
    timer.start()
    try:
        msg = stub.wait_for(lambda m: m["to"] == OTHER, timeout=5)
    finally:
        timer.join()

    assert msg["body"] == "late"
    assert msg["received_at"] <= time.monotonic()
    assert abs(msg["received_at_wall"] - time.time()) < 5


def test_mask_numbers_keeps_only_the_last_digits() -> None:
    assert mask_numbers("number +821012345678 bad") == "number ***5678 bad"
    assert mask_numbers("HTTP 400, code 21211") == "HTTP 400, code 21211"


# -- webhook signatures -------------------------------------------------------------------


def test_sign_matches_request_validator_and_tampering_fails() -> None:
    url = "https://dolbom.example.kr/webhooks/twilio/sms"
    params = {"From": TO, "To": DEFAULT_FROM_NUMBER, "Body": "YES 4821", "MessageSid": "SMx"}
    validator = RequestValidator("stub-auth-token")

    signature = sign(url, params, "stub-auth-token")

    assert validator.validate(url, params, signature)
    assert not validator.validate(url, {**params, "Body": "NO 4821"}, signature)
    assert not validator.validate(url + "?x=1", params, signature)
    assert not RequestValidator("other-token").validate(url, params, signature)


class _Receiver:
    """A one-route HTTP server that records form POSTs, standing in for dolbom's webhook."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.got_one = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8")
                form = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                receiver.posts.append((self.path, dict(self.headers.items()), form))
                receiver.got_one.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_send_status_callback_posts_a_signed_form(stub: TwilioStub) -> None:
    with _Receiver() as receiver:
        callback = receiver.url + "/webhooks/twilio/status"
        gateway = make_gateway(stub, status_callback_url=callback)
        sent = gateway.send(TO, "status please")

        response = stub.send_status_callback(sent.sid, "undelivered", error_code=30006)

        assert response.status_code == 200
        assert receiver.got_one.wait(2)
        path, headers, form = receiver.posts[0]
    assert path == "/webhooks/twilio/status"
    assert form["MessageSid"] == sent.sid
    assert form["MessageStatus"] == "undelivered"
    assert form["ErrorCode"] == "30006"
    assert form["AccountSid"] == stub.account_sid
    assert form["To"] == TO and form["From"] == DEFAULT_FROM_NUMBER
    validator = RequestValidator(stub.auth_token)
    assert validator.validate(callback, form, headers["X-Twilio-Signature"])
    assert not validator.validate(
        callback, {**form, "MessageStatus": "delivered"}, headers["X-Twilio-Signature"]
    )
    # The stub's own record follows the callback, so a lookup agrees with it.
    assert gateway.lookup(sent.sid) == SentSms(sent.sid, "undelivered")


def test_send_inbound_sms_posts_a_signed_form(stub: TwilioStub) -> None:
    with _Receiver() as receiver:
        url = receiver.url + "/webhooks/twilio/sms"

        stub.send_inbound_sms(url, TO, "YES 4821")

        assert receiver.got_one.wait(2)
        _, headers, form = receiver.posts[0]
    assert form["From"] == TO and form["Body"] == "YES 4821"
    assert form["MessageSid"].startswith("SM")
    assert RequestValidator(stub.auth_token).validate(url, form, headers["X-Twilio-Signature"])
