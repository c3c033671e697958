"""The console gateway: used when there are no Twilio credentials.

The notification row in the database already holds the rendered text, its recipient and
its status, so "sending" here means recording a local id and printing a masked line; the
console page shows the messages from the database as each person's simulated phone.
"""

from __future__ import annotations

import logging
import uuid

from notifiers.gateway import SentSms
from schemas.phone import mask

log = logging.getLogger("dolbom.sms.console")


class ConsoleGateway:
    name = "console"

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        sid = "CN" + uuid.uuid4().hex
        log.info("SMS to %s: %s", mask(to), body)
        return SentSms(sid=sid, status="delivered")

    def find_sent(self, to: str, body: str, exclude: set[str]) -> SentSms | None:
        return None  # the console never has an uncertain send
