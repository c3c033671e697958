"""Twilio webhooks. Authenticated by X-Twilio-Signature, computed over the public URL."""

from __future__ import annotations

import contextlib
import logging
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator

from dispatch import commands as c
from schemas.phone import InvalidPhone, mask, normalise

log = logging.getLogger("dolbom.webhooks")
router = APIRouter(prefix="/webhooks/twilio")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def public_url(request: Request) -> str:
    """The URL Twilio signed: DOLBOM_PUBLIC_URL plus this path and query, never the socket's."""
    base = request.app.state.settings.public_url.rstrip("/")
    url = base + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url


async def signed_form(request: Request) -> dict[str, str]:
    settings = request.app.state.settings
    signature = request.headers.get("x-twilio-signature", "")
    form = await request.form()
    params = {k: str(v) for k, v in form.multi_items()}
    token = settings.twilio_auth_token
    if not token or not signature or \
            not RequestValidator(token).validate(public_url(request), params, signature):
        log.warning("refused webhook %s: bad or missing signature (host %s)", request.url.path,
                    urlsplit(str(request.url)).hostname)
        raise HTTPException(403, "invalid Twilio signature")
    return params


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
    bus = request.app.state.bus
    stored = await run_in_threadpool(bus.handle, c.ReceiveSms(
        message_sid=sid, from_phone=sender, to_phone=params.get("To", ""),
        body=params.get("Body", "")))
    if not stored:
        log.info("duplicate SMS %s from %s ignored", sid, mask(sender))
    # Stored first, interpreted by the worker: the reply comes as its own SMS.
    return Response(EMPTY_TWIML, media_type="text/xml")


@router.post("/status")
async def status_callback(request: Request) -> Response:
    params = await signed_form(request)
    log.info("status %s for %s", params.get("MessageStatus"), params.get("MessageSid"))
    return Response(status_code=204)
