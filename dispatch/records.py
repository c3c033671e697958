"""Records that are not domain aggregates: SMS in and out, the outbox, the inbox, API tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from dispatch.domain.model import new_id


class NotificationStatus(StrEnum):
    PENDING = "pending"      # row written, not yet handed to the gateway
    SENDING = "sending"      # claimed by a sender (claimed_by); if it dies now the outcome is unknown
    UNKNOWN = "unknown"      # the send timed out or got a 5xx: look it up before any retry
    SENT = "sent"            # the gateway took it (Twilio "queued"/"sent")
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SKIPPED = "skipped"      # e.g. the recipient opted out


class Notification:
    """One SMS we intend to send: unique per (source event, recipient, kind)."""

    def __init__(self, *, event_id: str, recipient: str, kind: str, params: dict[str, Any],
                 created_at: datetime, lang: str = "ko", request_id: str | None = None,
                 validity_s: int | None = None, id: str | None = None) -> None:
        self.id = id or new_id()
        self.event_id = event_id
        self.recipient = recipient
        self.kind = kind
        self.params = dict(params)
        self.lang = lang
        self.request_id = request_id
        self.validity_s = validity_s
        self.created_at = created_at
        self.status = NotificationStatus.PENDING
        self.attempts = 0
        self.gateway: str | None = None
        self.sid: str | None = None
        self.body: str | None = None
        self.error_code: int | None = None
        self.error: str | None = None
        self.sent_at: datetime | None = None
        self.next_attempt_at: datetime | None = None
        self.provider_status: str | None = None
        self.status_at: datetime | None = None
        self.claimed_by: str | None = None


class InboundSms:
    """Every SMS that reached us, stored before anything is done with it."""

    def __init__(self, *, message_sid: str, from_phone: str, to_phone: str, body: str,
                 received_at: datetime, id: str | None = None) -> None:
        self.id = id or new_id()
        self.message_sid = message_sid
        self.from_phone = from_phone
        self.to_phone = to_phone
        self.body = body
        self.received_at = received_at
        self.request_id: str | None = None
        self.sender_kind: str | None = None  # carer | parent | unknown
        self.verb: str | None = None
        self.outcome: str | None = None
        self.handled_at: datetime | None = None


class OutboxMessage:
    """A message written in the same transaction as the state change it announces."""

    def __init__(self, *, event_id: str, topic: str, key: str, type: str, body: bytes,
                 created_at: datetime) -> None:
        self.id: int | None = None
        self.event_id = event_id
        self.topic = topic
        self.key = key
        self.type = type
        self.body = body
        self.created_at = created_at
        self.published_at: datetime | None = None


class ProcessedMessage:
    """Inbox: an `event_id` a consumer has already applied."""

    def __init__(self, *, event_id: str, consumer: str, processed_at: datetime) -> None:
        self.event_id = event_id
        self.consumer = consumer
        self.processed_at = processed_at


class ApiToken:
    def __init__(self, *, name: str, role: str, token_hash: str, created_at: datetime,
                 id: str | None = None) -> None:
        self.id = id or new_id()
        self.name = name
        self.role = role
        self.token_hash = token_hash
        self.created_at = created_at
        self.revoked = False


class SmsDraft:
    """A request a parent asked for by SMS, waiting for their "네" (CONTRACT: two messages)."""

    def __init__(self, *, family_id: str, phone: str, service: str, child_id: str,
                 start: datetime, end: datetime, created_at: datetime, expires_at: datetime,
                 inbound_id: str | None = None, id: str | None = None) -> None:
        self.id = id or new_id()
        self.family_id = family_id
        self.phone = phone
        self.service = service
        self.child_id = child_id
        self.start = start
        self.end = end
        self.status = "pending"  # pending | confirmed | cancelled | expired
        self.inbound_id = inbound_id
        self.request_id: str | None = None
        self.created_at = created_at
        self.expires_at = expires_at


class Shift:
    """A carer on shift at a centre (centre mode): the group a child can join."""

    def __init__(self, *, carer_id: str, center_id: str, start: datetime, end: datetime,
                 id: str | None = None) -> None:
        self.id = id or new_id()
        self.carer_id = carer_id
        self.center_id = center_id
        self.start = start
        self.end = end


class CenterBooking:
    """A child's place in a carer's group at a centre (dispatch/domain/centers.py).

    `sensitive` is fixed at booking time (under 12 months or disabled: the group goes 1:3);
    `provisional` until a dispatcher confirms an infant's booking. Visit mode's assignments
    table is not used for this: its overlap guard would forbid a carer's group of five.
    """

    def __init__(self, *, request_id: str, carer_id: str, center_id: str, start: datetime,
                 end: datetime, sensitive: bool, provisional: bool, created_at: datetime,
                 id: str | None = None, active: bool = True) -> None:
        self.id = id or new_id()
        self.request_id = request_id
        self.carer_id = carer_id
        self.center_id = center_id
        self.start = start
        self.end = end
        self.sensitive = sensitive
        self.provisional = provisional
        self.active = active
        self.created_at = created_at


class AuditEntry:
    """Someone read a family's record (or a request that shows it): who, as what, where."""

    def __init__(self, *, at: datetime, actor: str, role: str, action: str,
                 family_id: str | None = None, request_id: str | None = None,
                 id: str | None = None) -> None:
        self.id = id or new_id()
        self.at = at
        self.actor = actor
        self.role = role
        self.action = action
        self.family_id = family_id
        self.request_id = request_id
