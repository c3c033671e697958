"""Commands: what someone asks dispatch to do. One handler each (dispatch/handlers.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any


class Command:
    pass


@dataclass(frozen=True)
class RegisterCarer(Command):
    name: str
    phone: str
    districts: list[str]
    skills: list[str]
    home_lat: float | None = None
    home_lon: float | None = None
    center_id: str | None = None
    lang: str = "ko"


@dataclass(frozen=True)
class SetDuty(Command):
    carer_id: str
    on_duty: bool
    actor: str = "dispatcher"


@dataclass(frozen=True)
class ChildDetails:
    name: str
    birth_date: date
    disability: bool = False


@dataclass(frozen=True)
class RegisterFamily(Command):
    guardian_name: str
    guardian_phone: str
    district: str
    children: list[ChildDetails]
    consent_child_data: bool
    consent_health_data: bool = False
    address: str | None = None
    pickup_guardians: list[str] = field(default_factory=list)
    lang: str = "ko"


@dataclass(frozen=True)
class SubmitRequest(Command):
    service: str
    family_id: str
    child_id: str
    start: datetime
    end: datetime
    location: dict[str, Any]
    notes: str | None = None
    idempotency_key: str | None = None
    created_by: str | None = None
    channel: str = "api"


@dataclass(frozen=True)
class StartMatching(Command):
    """A request was received: find carers and send offers (from the worker)."""

    request_id: str
    event_id: str


@dataclass(frozen=True)
class ReceiveSms(Command):
    """Twilio posted an inbound SMS: store it, then let the worker interpret it."""

    message_sid: str
    from_phone: str
    to_phone: str
    body: str
    # Over the sender's intake rate limit (api/limits.py): stored, but not acted on.
    rate_limited: bool = False


@dataclass(frozen=True)
class HandleInboundSms(Command):
    """Interpret a stored inbound SMS (from the worker)."""

    inbound_id: str
    event_id: str


@dataclass(frozen=True)
class DeliverNotification(Command):
    notification_id: str


@dataclass(frozen=True)
class DeliverNotifications(Command):
    """The SMS one transaction queued, sent together right after it commits."""

    notification_ids: tuple[str, ...]


@dataclass(frozen=True)
class CancelRequest(Command):
    request_id: str
    reason: str
    actor: str = "dispatcher"
    by: str | None = None  # who, by name (the API caller), for the timeline
    # Set for a parent's app: only a request this token created may be cancelled (else 404).
    owner_token: str | None = None


@dataclass(frozen=True)
class AssignCarer(Command):
    """A dispatcher's override: put this carer on the request."""

    request_id: str
    carer_id: str
    dispatcher: str


@dataclass(frozen=True)
class ReofferRequest(Command):
    """A dispatcher's "send the next offers now" for a request still looking for a carer."""

    request_id: str
    dispatcher: str


@dataclass(frozen=True)
class AddNote(Command):
    """A dispatcher's note on a request's timeline."""

    request_id: str
    text: str
    dispatcher: str


@dataclass(frozen=True)
class CreateToken(Command):
    name: str
    role: str


@dataclass(frozen=True)
class SweepNotifications(Command):
    """Retry sends that are due and look up uncertain ones (a worker timer)."""

    limit: int = 100


@dataclass(frozen=True)
class RecordDeliveryStatus(Command):
    """A Twilio status callback."""

    sid: str
    status: str
    error_code: int | None = None


@dataclass(frozen=True)
class SweepDeadlines(Command):
    """Expire offers past their answer window and offer the next carers; escalate requests
    past their SLA (a worker timer; deadlines live in the database, so restarts lose none)."""

    limit: int = 100


@dataclass(frozen=True)
class AddShift(Command):
    """Centre mode: a carer works at a centre from `start` to `end` (their group's hours)."""

    carer_id: str
    center_id: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class ConfirmBooking(Command):
    """A dispatcher confirms an infant's provisional place at a centre."""

    request_id: str
    dispatcher: str


@dataclass(frozen=True)
class AcknowledgeEscalation(Command):
    """A dispatcher has seen an escalated request and takes it on: the board stops alarming.
    `actor` is the dispatcher's name, for the timeline."""

    request_id: str
    actor: str


# -- privacy (개인정보보호법) ---------------------------------------------------------

@dataclass(frozen=True)
class ReadFamily(Command):
    """A person reads a family's record: shown only once the read is in the audit log."""

    family_id: str
    reader: str
    role: str
    action: str


@dataclass(frozen=True)
class ReadRequest(Command):
    """A person reads a request with its family's details (child, place, SMS): audited.
    `owner_token` set (a parent's app): only a request this token created, else 404."""

    request_id: str
    reader: str
    role: str
    action: str
    owner_token: str | None = None


@dataclass(frozen=True)
class PurgePersonalData(Command):
    """§21: destroy personal data of requests finished longer ago than `older_than`, and of
    families with nothing open or recent; keep anonymous statistics. `dry_run`: count only."""

    older_than: timedelta
    dry_run: bool = False


@dataclass(frozen=True)
class RotateDataKey(Command):
    """Re-encrypt every sensitive field with the current DOLBOM_DATA_KEY."""
