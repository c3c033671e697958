"""Picks the SMS gateway from the settings: Twilio with credentials, the console without."""

from __future__ import annotations

from collections.abc import Callable

from notifiers.console import ConsoleGateway
from notifiers.fence import FencedGateway
from notifiers.gateway import SmsGateway
from notifiers.rate_limit import RateLimitedGateway
from schemas.config import Settings


def gateway_from_settings(settings: Settings,
                          may_send: Callable[[], bool] | None = None) -> SmsGateway:
    """`may_send`: asked right before each provider call (notifiers/fence.py)."""
    if not settings.twilio_enabled:
        console: SmsGateway = ConsoleGateway()
        return FencedGateway(console, may_send) if may_send else console
    from notifiers.twilio_gateway import TwilioGateway

    assert settings.twilio_account_sid and settings.twilio_auth_token
    twilio = TwilioGateway(
        settings.twilio_account_sid, settings.twilio_auth_token,
        from_number=settings.twilio_from_number,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        api_base_url=settings.twilio_api_base_url,
        status_callback_url=settings.public_url.rstrip("/") + "/webhooks/twilio/status")
    fenced: SmsGateway = FencedGateway(twilio, may_send) if may_send else twilio
    return RateLimitedGateway(fenced, settings.sms_rate_per_s)
