"""Tables, and the imperative mapping of the domain classes onto them.

Invariants that must never break are constraints here, not only checks in code:
one active assignment per request, one open request per job code, one SMS per
(event, recipient, kind), one inbound row per Twilio MessageSid. "No carer in two
overlapping assignments" is a trigger on SQLite and an exclusion constraint on
PostgreSQL (see the migration).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import registry, relationship
from sqlalchemy.types import TypeDecorator

from dispatch import records
from dispatch.domain import model
from dispatch.encryption import (
    LOCATION_KEYS,
    TIMELINE_KEYS,
    EncryptedBool,
    EncryptedText,
    SensitiveJSON,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

ID = String(32)

carers = Table(
    "carers", metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("phone", String(20), nullable=False, unique=True),
    Column("districts", JSON, nullable=False),
    Column("skills", JSON, nullable=False),
    Column("home_lat", Float),
    Column("home_lon", Float),
    Column("center_id", String(50)),
    Column("lang", String(5), nullable=False, server_default="ko"),
    Column("on_duty", Boolean, nullable=False, server_default=text("false")),
    Column("opted_out", Boolean, nullable=False, server_default=text("false")),
    Column("rating", Float, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_carers_on_duty", "on_duty"),
    Index("ix_carers_home", "home_lat", "home_lon"),
)

families = Table(
    "families", metadata,
    Column("id", ID, primary_key=True),
    Column("guardian_name", String(100), nullable=False),
    Column("guardian_phone", String(20), nullable=False, index=True),
    Column("district", String(10), nullable=False),
    Column("address", Text),
    Column("pickup_guardians", JSON, nullable=False),
    Column("consent_child_data", Boolean, nullable=False),
    Column("consent_health_data", Boolean, nullable=False),
    Column("consent_at", UTCDateTime),
    Column("lang", String(5), nullable=False, server_default="ko"),
    Column("opted_out", Boolean, nullable=False, server_default=text("false")),
    # Set by `dolbom privacy purge`: names, phone, address and children's data are gone.
    Column("purged_at", UTCDateTime),
)

children = Table(
    "children", metadata,
    Column("id", ID, primary_key=True),
    Column("family_id", ID, ForeignKey("families.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("name", String(100), nullable=False),
    # A purged family's children get PURGED_BIRTH_DATE (dispatch/handlers/privacy.py);
    # the age at each request is kept on the request.
    Column("birth_date", Date, nullable=False),
    # Health data (개인정보보호법 §23): encrypted at rest (dispatch/encryption.py).
    Column("disability", EncryptedBool, nullable=False),
)

requests = Table(
    "requests", metadata,
    Column("id", ID, primary_key=True),
    Column("code", String(4), nullable=False),
    # The code while the request is open, NULL after: unique among open requests.
    Column("open_code", String(4), unique=True),
    Column("service", String(40), nullable=False),
    Column("family_id", ID, ForeignKey("families.id"), nullable=False, index=True),
    Column("child_id", ID, ForeignKey("children.id"), nullable=False),
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime, nullable=False),
    # hospital, ward, address and coordinates encrypted; district and center_id stay plain.
    Column("location", SensitiveJSON(LOCATION_KEYS), nullable=False),
    # Free text from the parent: may say what the child is in hospital for.
    Column("notes", EncryptedText),
    Column("status", String(20), nullable=False, index=True),
    Column("carer_id", ID, ForeignKey("carers.id")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("idempotency_key", String(200), unique=True),
    Column("created_by", ID),
    Column("channel", String(10), nullable=False, server_default="api"),
    # Kept for statistics after a purge, which removes the child's birth date.
    Column("child_age_months", Integer),
    Column("purged_at", UTCDateTime),
)

offers = Table(
    "offers", metadata,
    Column("id", ID, primary_key=True),
    Column("request_id", ID, ForeignKey("requests.id"), nullable=False, index=True),
    Column("carer_id", ID, ForeignKey("carers.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime),
    UniqueConstraint("request_id", "carer_id", name="uq_offers_request_carer"),
    Index("ix_offers_carer_status", "carer_id", "status"),
)

assignments = Table(
    "assignments", metadata,
    Column("id", ID, primary_key=True),
    Column("request_id", ID, ForeignKey("requests.id"), nullable=False),
    Column("carer_id", ID, ForeignKey("carers.id"), nullable=False),
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("uq_assignments_active_request", "request_id", unique=True,
          sqlite_where=text("active"), postgresql_where=text("active")),
    Index("ix_assignments_carer_window", "carer_id", "start", "end"),
)

timeline = Table(
    "timeline", metadata,
    Column("id", ID, primary_key=True),
    Column("seq", Integer, nullable=False, server_default="0"),
    Column("request_id", ID, ForeignKey("requests.id"), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("type", String(40), nullable=False),
    Column("actor", String(20), nullable=False),
    # A dispatcher's note and a cancel reason are free text: encrypted.
    Column("detail", SensitiveJSON(TIMELINE_KEYS), nullable=False),
)

notifications = Table(
    "notifications", metadata,
    Column("id", ID, primary_key=True),
    Column("event_id", String(80), nullable=False),
    Column("recipient", String(20), nullable=False),
    Column("kind", String(40), nullable=False),
    # What an SMS says (a ward, an address, a child's name): encrypted, every value.
    Column("params", SensitiveJSON(), nullable=False),
    Column("lang", String(5), nullable=False),
    Column("request_id", ID, index=True),
    Column("validity_s", Integer),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("gateway", String(20)),
    Column("sid", String(64), unique=True),
    Column("body", EncryptedText),
    Column("error_code", Integer),
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    # Retry bookkeeping: a failed-but-retryable send waits here for the sweep.
    Column("next_attempt_at", UTCDateTime),
    # The provider's own word, from the send answer and status callbacks.
    Column("provider_status", String(20)),
    Column("status_at", UTCDateTime),
    # The sender (a worker process, `senders` below) that put the row in `sending`: while
    # that sender lives, nobody else may treat the send as uncertain.
    Column("claimed_by", ID),
    UniqueConstraint("event_id", "recipient", "kind", name="uq_notifications_event_recipient_kind"),
    Index("ix_notifications_due", "status", "next_attempt_at"),
)

sms_drafts = Table(
    "sms_drafts", metadata,
    Column("id", ID, primary_key=True),
    Column("family_id", ID, ForeignKey("families.id", ondelete="CASCADE"), nullable=False),
    Column("phone", String(20), nullable=False, index=True),
    Column("service", String(40), nullable=False),
    Column("child_id", ID, nullable=False),
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime, nullable=False),
    Column("status", String(20), nullable=False),
    Column("inbound_id", ID),
    Column("request_id", ID),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

inbound_sms = Table(
    "inbound_sms", metadata,
    Column("id", ID, primary_key=True),
    Column("message_sid", String(64), nullable=False, unique=True),
    Column("from_phone", String(20), nullable=False, index=True),
    Column("to_phone", String(20), nullable=False),
    Column("body", EncryptedText, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("request_id", ID, index=True),
    Column("sender_kind", String(10)),
    Column("verb", String(20)),
    Column("outcome", String(40)),
    Column("handled_at", UTCDateTime),
)

outbox = Table(
    "outbox", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("topic", String(100), nullable=False),
    Column("key", String(100), nullable=False),
    Column("type", String(60), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime),
    Index("ix_outbox_unpublished", "id", sqlite_where=text("published_at IS NULL"),
          postgresql_where=text("published_at IS NULL")),
)

# Every process that sends SMS (a worker), with a heartbeat: its `sending` rows are its own
# until the heartbeat stops (dispatch/handlers/delivery.py, streams/lease.py). The host
# and the process's start time let a worker on the same host tell at once that a sender's
# process is gone, instead of waiting out the heartbeat.
senders = Table(
    "senders", metadata,
    Column("id", ID, primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("process_start", BigInteger),
    Column("started_at", UTCDateTime, nullable=False),
    Column("beat_at", UTCDateTime, nullable=False),
)

processed_messages = Table(
    "processed_messages", metadata,
    Column("event_id", String(64), primary_key=True),
    Column("consumer", String(60), primary_key=True),
    Column("processed_at", UTCDateTime, nullable=False),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("role", String(20), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked", Boolean, nullable=False, server_default=text("false")),
)

# Centre mode (dispatch/domain/centers.py): carers on shift at a centre, and children's places
# in their groups. The group ratio is checked under a lock on the shift rows (handlers/centers.py);
# the database guarantees one active place per request.
shifts = Table(
    "shifts", metadata,
    Column("id", ID, primary_key=True),
    Column("carer_id", ID, ForeignKey("carers.id"), nullable=False),
    Column("center_id", String(50), nullable=False),
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime, nullable=False),
    Index("ix_shifts_carer_window", "carer_id", "start", "end"),
    Index("ix_shifts_center_window", "center_id", "start", "end"),
)

center_bookings = Table(
    "center_bookings", metadata,
    Column("id", ID, primary_key=True),
    Column("request_id", ID, ForeignKey("requests.id"), nullable=False),
    Column("carer_id", ID, ForeignKey("carers.id"), nullable=False),
    Column("center_id", String(50), nullable=False),
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime, nullable=False),
    Column("sensitive", Boolean, nullable=False),
    Column("provisional", Boolean, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("uq_center_bookings_active_request", "request_id", unique=True,
          sqlite_where=text("active"), postgresql_where=text("active")),
    Index("ix_center_bookings_carer_window", "carer_id", "start", "end"),
)

# Every read of a family's record by a person (개인정보보호법: who saw what, when).
audit_log = Table(
    "audit_log", metadata,
    Column("id", ID, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("role", String(20), nullable=False),
    Column("action", String(100), nullable=False),
    Column("family_id", ID, index=True),
    Column("request_id", ID, index=True),
)

mapper_registry = registry(metadata=metadata)
_mapped = False


def start_mappers() -> None:
    """Map domain classes onto tables once per process."""
    global _mapped
    if _mapped:
        return
    _mapped = True
    m = mapper_registry.map_imperatively
    m(model.Carer, carers)
    m(model.Child, children)
    m(model.Family, families, properties={
        "children": relationship(model.Child, cascade="all, delete-orphan",
                                 order_by=children.c.name),
    })
    m(model.Offer, offers)
    m(model.Assignment, assignments)
    m(model.TimelineEntry, timeline)
    m(model.Request, requests, properties={
        "offers": relationship(model.Offer, cascade="all", order_by=offers.c.created_at),
        "assignments": relationship(model.Assignment, cascade="all"),
        "timeline": relationship(model.TimelineEntry, cascade="all",
                                 order_by=(timeline.c.at, timeline.c.seq)),
    })
    m(records.Notification, notifications)
    m(records.InboundSms, inbound_sms)
    m(records.OutboxMessage, outbox)
    m(records.ProcessedMessage, processed_messages)
    m(records.ApiToken, api_tokens)
    m(records.SmsDraft, sms_drafts)
    m(records.Shift, shifts)
    m(records.CenterBooking, center_bookings)
    m(records.AuditEntry, audit_log)


