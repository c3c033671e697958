"""Twilio webhooks. Authenticated by X-Twilio-Signature, computed over the public URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator

from api.limits import limiter
from dispatch import commands as c
from notifiers import grammar
from schemas.phone import InvalidPhone, mask, normalise

log = logging.getLogger("dolbom.webhooks")
# How long a status callback waits for its message's SID to be stored, and how often it looks.
UNKNOWN_SID_WAIT_S = 3.0
UNKNOWN_SID_POLL_S = 0.1

router = APIRouter(prefix="/webhooks/twilio")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
RATE_LIMITED_TWIML = ('<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
                      '메시지가 너무 많습니다. 1분 뒤 다시 보내 주세요.</Message></Response>')


def public_url(request: Request) -> str:
    """The URL Twilio signed: DOLBOM_PUBLIC_URL plus this path and query, never the socket's."""
    base = request.app.state.settings.public_url.rstrip("/")
    return base + _path_and_query(request)


def _path_and_query(request: Request) -> str:
    return request.url.path + ("?" + request.url.query if request.url.query else "")


def signed_urls(request: Request) -> list[str]:
    """Every URL Twilio may have signed: the public URL, and behind a proxy the URL the
    proxy says it was called on (X-Forwarded-Proto/Host). A header alone proves nothing:
    the signature still needs the auth token, so this only widens which URL it may cover."""
    urls = [public_url(request)]
    host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    if host:
        proto = request.headers.get("x-forwarded-proto", "https").split(",")[0].strip()
        urls.append(f"{proto}://{host}{_path_and_query(request)}")
    return urls


async def signed_form(request: Request) -> dict[str, str]:
    settings = request.app.state.settings
    signature = request.headers.get("x-twilio-signature", "")
    form = await request.form()
    params = {k: str(v) for k, v in form.multi_items()}
    token = settings.twilio_auth_token
    validator = RequestValidator(token) if token else None
    if validator is None or not signature or not any(
            validator.validate(url, params, signature) for url in signed_urls(request)):
        log.warning("refused webhook %s: bad or missing signature (host %s)", request.url.path,
                    urlsplit(str(request.url)).hostname)
        raise HTTPException(403, "invalid Twilio signature")
    # PostgreSQL text cannot hold NUL: a message is never dropped for it, so it becomes U+FFFD.
    return {k: v.replace("\x00", "\ufffd") for k, v in params.items()}


@router.post("/sms")
async def inbound_sms(request: Request) -> Response:
    params = await signed_form(request)
    sid = params.get("MessageSid") or params.get("SmsSid")
    sender = params.get("From", "")
    if not sid or not sender:
        raise HTTPException(422, "MessageSid and From are required")
    # Stored as given if it won't parse: a message is never dropped for its sender's format.
    with contextlib.suppress(InvalidPhone):
        sender = normalise(sender)
    body = params.get("Body", "")
    # Commands (YES/NO 4821, 취소, 상태, ARRIVED, ON/OFF, STOP) are never limited: a carer's
    # answer or a parent's cancel must always count. Only free text is: new-request intake
    # by SMS and unknown text, each of which costs a reply SMS and the worker's time.
    limits = limiter(request, "sms", request.app.state.settings.sms_intake_rate_per_min)
    limited = grammar.parse(body).verb == grammar.UNKNOWN and limits.take(sender) > 0
    bus = request.app.state.bus
    stored = await run_in_threadpool(bus.handle, c.ReceiveSms(
        message_sid=sid, from_phone=sender, to_phone=params.get("To", ""), body=body,
        rate_limited=limited))
    if not stored:
        log.info("duplicate SMS %s from %s ignored", sid, mask(sender))
    elif limited:
        log.warning("SMS %s from %s over the intake rate limit: stored, not acted on", sid,
                    mask(sender))
        # Answered once per spell (not per message), so a flood, or two autoresponders
        # talking to each other, never turns into a flood of our replies.
        if limits.first_refusal(sender):
            return Response(RATE_LIMITED_TWIML, media_type="text/xml")
    # Stored first, interpreted by the worker: the reply comes as its own SMS.
    return Response(EMPTY_TWIML, media_type="text/xml")


@router.post("/status")
async def status_callback(request: Request) -> Response:
    params = await signed_form(request)
    sid = params.get("MessageSid") or params.get("SmsSid")
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if not sid or not status:
        raise HTTPException(422, "MessageSid and MessageStatus are required")
    code = params.get("ErrorCode", "")
    command = c.RecordDeliveryStatus(
        sid=sid, status=status,
        # isdigit() alone is true for "²", which int() refuses: ASCII digits only.
        error_code=int(code) if code.isascii() and code.isdigit() else None)
    outcome = await run_in_threadpool(request.app.state.bus.handle, command)
    # Twilio can call back before the worker has stored the SID it was given (SMS are
    # recorded sent a batch at a time), and does not call again: wait for the SID a little.
    waited = 0.0
    while outcome == "unknown_sid" and waited < UNKNOWN_SID_WAIT_S:
        await asyncio.sleep(UNKNOWN_SID_POLL_S)
        waited += UNKNOWN_SID_POLL_S
        outcome = await run_in_threadpool(request.app.state.bus.handle, command)
    if outcome == "unknown_sid":
        log.warning("status %s for unknown message %s dropped", status, sid)
    return Response(status_code=204)
