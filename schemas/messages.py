"""Payloads of the messages on Kafka, one class per `type`, versioned by the envelope.

Payloads carry ids, never personal data: names, phone numbers and health details stay in
the database (개인정보보호법 §23). The one exception is the SMS topics, keyed by phone
number so that one person's messages stay in order; their payload holds only row ids.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    type: ClassVar[str]
    version: ClassVar[int] = 1


class RequestReceived(Message):
    type = "request.received"
    request_id: str
    service: str


class RequestMatching(Message):
    type = "request.matching"
    request_id: str
    offers: int


class OfferMade(Message):
    type = "offer.made"
    request_id: str
    offer_id: str
    carer_id: str


class RequestAssigned(Message):
    type = "request.assigned"
    request_id: str
    carer_id: str
    assignment_id: str


class RequestCancelled(Message):
    type = "request.cancelled"
    request_id: str


class RequestEscalated(Message):
    type = "request.escalated"
    request_id: str
    reason: str


class EscalationAcknowledged(Message):
    """A dispatcher has seen an escalated request and is on it (the board stops alarming)."""

    type = "request.escalation_acknowledged"
    request_id: str


class SmsReceived(Message):
    """An inbound SMS was stored (row `inbound_id`); the worker interprets it."""

    type = "sms.received"
    inbound_id: str


class SmsRequested(Message):
    """A notification row (`notification_id`) is ready to be handed to the SMS gateway."""

    type = "sms.requested"
    notification_id: str


class CarerDutyChanged(Message):
    type = "carer.duty_changed"
    carer_id: str
    on_duty: bool


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.type: cls
    for cls in (RequestReceived, RequestMatching, OfferMade, RequestAssigned, RequestCancelled,
                RequestEscalated, EscalationAcknowledged, SmsReceived, SmsRequested, CarerDutyChanged)
}
