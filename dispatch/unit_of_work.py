"""The unit of work: one database transaction holding a state change and the messages it emits.

Writing the outbox rows (and the SMS to send) in the same transaction as the state change
is what makes "nothing lost, nothing twice" possible: either both are stored or neither.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatch import orm, repository
from dispatch.db import READ_ONLY
from dispatch.records import Notification, OutboxMessage, ProcessedMessage
from schemas.envelope import Envelope
from schemas.messages import Message, SmsRequested
from schemas.topics import topic_for

# Messages no process consumes from Kafka: the console reads them from the outbox table
# (api/stream.py), so they are stored like every other event but never published. Each one
# published would cost the relay, the broker and every worker a message for nothing.
LOCAL_ONLY = frozenset({"request.matching"})


def sms_nudge_event_id(notification_id: str) -> str:
    """The `event_id` of the `sms.requested` message of a notification, so that whoever
    claims the notification can find its outbox row (see `retire_sms_nudges`)."""
    return f"sms-requested:{notification_id}"


_collecting = threading.local()


@contextmanager
def committed_sms() -> Iterator[list[str]]:
    """Collect the ids of notifications committed by units of work on this thread.

    The worker uses it to hand an SMS to the gateway right after the transaction that
    queued it commits, instead of waiting for the relay and a Kafka hop. Inside it no
    `sms.requested` message is written at all: it would cost an outbox row, a relay publish
    and a Kafka delivery only to find the row claimed. If this process dies before the
    send, the row is still `pending` and the notification sweep sends it
    (dispatch/handlers/delivery.py, NEVER_NUDGED_S).
    """
    ids: list[str] = []
    outer = getattr(_collecting, "ids", None)
    _collecting.ids = ids
    try:
        yield ids
    finally:
        _collecting.ids = outer


class UnitOfWork:
    requests: repository.Requests
    carers: repository.Carers
    families: repository.Families
    notifications: repository.Notifications
    inbound: repository.InboundMessages
    tokens: repository.Tokens
    drafts: repository.Drafts
    centers: repository.Centers
    audit: repository.AuditLog
    session: Session

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self._queued_sms: list[str] = []

    def __enter__(self) -> Self:
        self.session = self._session_factory()
        self._queued_sms = []
        self.requests = repository.Requests(self.session)
        self.carers = repository.Carers(self.session)
        self.families = repository.Families(self.session)
        self.notifications = repository.Notifications(self.session)
        self.inbound = repository.InboundMessages(self.session)
        self.tokens = repository.Tokens(self.session)
        self.drafts = repository.Drafts(self.session)
        self.centers = repository.Centers(self.session)
        self.audit = repository.AuditLog(self.session)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Anything not committed is rolled back. Objects are detached first, so a handler
        # can return what it loaded (e.g. the earlier request for a repeated key) intact.
        try:
            self.session.expunge_all()
            self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        self.session.commit()
        collector = getattr(_collecting, "ids", None)
        if collector is not None:
            collector.extend(self._queued_sms)
        self._queued_sms = []

    def rollback(self) -> None:
        self.session.rollback()
        self._queued_sms = []

    # -- messages out -------------------------------------------------------------
    def emit(self, message: Message, *, key: str, now: datetime,
             event_id: str | None = None) -> Envelope:
        """Queue `message` for Kafka, in this transaction (LOCAL_ONLY types: for the
        console's stream only, never published)."""
        envelope = Envelope(type=message.type, version=message.version, key=key,
                            payload=message.model_dump(mode="json"), occurred_at=now,
                            **({"event_id": event_id} if event_id else {}))
        row = OutboxMessage(event_id=envelope.event_id, topic=topic_for(message.type).name,
                            key=key, type=message.type, body=envelope.to_bytes(),
                            created_at=now)
        if message.type in LOCAL_ONLY:
            # published_at == created_at: settled without Kafka (the relay skips it).
            row.published_at = now
        self.session.add(row)
        return envelope

    def retire_sms_nudges(self, notification_ids: list[str]) -> bool:
        """The notifications have been claimed: their `sms.requested` messages, if the relay
        has not taken them yet, need not go to Kafka (they would only find the claim and do
        nothing). Marked published at their own creation time, which is how a row settled
        without Kafka is told apart. Rows the relay holds (PostgreSQL) are left to it."""
        if not notification_ids:
            return False
        o = orm.outbox.c
        unpublished = (o.event_id.in_([sms_nudge_event_id(i) for i in notification_ids]),
                       o.published_at.is_(None))
        if self.session.get_bind().dialect.name != "postgresql":
            # SQLite: this transaction holds the write lock; one statement does it.
            done = self.session.execute(update(orm.outbox).where(*unpublished)
                                        .values(published_at=o.created_at))
            return bool(getattr(done, "rowcount", 0))
        # Never wait for a relay that holds the row: skip it, the relay publishes it.
        row_ids = list(self.session.scalars(select(o.id).where(*unpublished)
                                            .with_for_update(skip_locked=True)))
        if not row_ids:
            return False
        self.session.execute(update(orm.outbox).where(o.id.in_(row_ids),
                                                      o.published_at.is_(None))
                             .values(published_at=o.created_at))
        return True

    def notify(self, *, event_id: str, recipient: str, kind: str, params: dict[str, Any],
               now: datetime, lang: str = "ko", request_id: str | None = None,
               validity_s: int | None = None) -> Notification | None:
        """Queue one SMS, at most once per (event, recipient, kind), whoever asks twice."""
        if self.notifications.exists(event_id, recipient, kind):
            return None
        note = Notification(event_id=event_id, recipient=recipient, kind=kind, params=params,
                            created_at=now, lang=lang, request_id=request_id,
                            validity_s=validity_s)
        self.notifications.add(note)
        if getattr(_collecting, "ids", None) is None:
            # Nobody on this thread sends it after the commit (the API, a sweep): a worker
            # will, on this message.
            self.emit(SmsRequested(notification_id=note.id), key=recipient, now=now,
                      event_id=sms_nudge_event_id(note.id))
        self._queued_sms.append(note.id)
        return note

    # -- messages in --------------------------------------------------------------
    def first_time(self, event_id: str, consumer: str, now: datetime) -> bool:
        """Inbox: True once per (event_id, consumer); the mark commits with the handler's work."""
        seen = self.session.scalar(select(orm.processed_messages.c.event_id).where(
            orm.processed_messages.c.event_id == event_id,
            orm.processed_messages.c.consumer == consumer))
        if seen is not None:
            return False
        self.session.add(ProcessedMessage(event_id=event_id, consumer=consumer, processed_at=now))
        return True


def session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """`read_only`: for units of work that only read (the API's views, auth). On SQLite they
    then never take the database's single write lock (dispatch/db.py), so a GET or a token
    check never queues behind the worker's transactions; they must not write."""
    orm.start_mappers()
    if read_only:
        engine = engine.execution_options(**{READ_ONLY: True})
    return sessionmaker(bind=engine, expire_on_commit=False)
