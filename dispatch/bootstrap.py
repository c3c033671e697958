"""Wires a message bus: the database, the policies and whatever ports the caller supplies."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from dispatch.domain.policy import ServicePolicy
from dispatch.handlers import HANDLERS
from dispatch.messagebus import MessageBus
from dispatch.ports import Clock, SenderClaims, SmsGrammar, SmsSender, SmsTemplates
from dispatch.senders import LocalClaims
from dispatch.sms_intake import IntakeParser
from dispatch.unit_of_work import UnitOfWork, session_factory


def utcnow() -> datetime:
    return datetime.now(UTC)


class _NoSms:
    """For processes that never send SMS themselves (the API): a call here is a bug."""

    name = "none"

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> Any:
        raise RuntimeError("this process does not send SMS")


def _no_templates(kind: str, params: Mapping[str, Any], lang: str = "ko") -> str:
    raise RuntimeError("this process does not render SMS")


def _no_grammar(text: str) -> Any:
    raise RuntimeError("this process does not read SMS")


def _no_intake(text: str, now: datetime, tz: Any) -> None:
    """Without an intake parser no text is a request for care: parents get the help reply."""
    return None


def bootstrap(engine: Engine, policies: Mapping[str, ServicePolicy], *,
              sms: SmsSender | None = None, templates: SmsTemplates | None = None,
              grammar: SmsGrammar | None = None, intake: IntakeParser | None = None,
              clock: Clock = utcnow, dispatcher_phone: str | None = None,
              sms_threads: int = 1, claims: SenderClaims | None = None) -> MessageBus:
    """`sms_threads` > 1: the SMS of one batch are handed to the gateway that many at a
    time (a provider call takes 100 ms or more), in no particular order among them.
    `claims`: a sender that beats (streams/lease.py) for a process that sends SMS in
    service; without one, its claims are treated as abandoned after a fixed time."""
    sessions = session_factory(engine)
    send_pool = ThreadPoolExecutor(max_workers=sms_threads, thread_name_prefix="sms-send") \
        if sms_threads > 1 else None
    return MessageBus(
        uow_factory=lambda: UnitOfWork(sessions),
        handlers=HANDLERS,
        dependencies={"clock": clock, "policies": policies, "sms": sms or _NoSms(),
                      "templates": templates or _no_templates,
                      "grammar": grammar or _no_grammar,
                      "intake": intake or _no_intake,
                      "dispatcher_phone": dispatcher_phone,
                      "send_pool": send_pool,
                      "claims": claims or LocalClaims()},
    )
