"""The unit of work: one database transaction holding a state change and the messages it emits.

Writing the outbox rows (and the SMS to send) in the same transaction as the state change
is what makes "nothing lost, nothing twice" possible: either both are stored or neither.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from dispatch import orm, repository
from dispatch.records import Notification, OutboxMessage, ProcessedMessage
from schemas.envelope import Envelope
from schemas.messages import Message, SmsRequested
from schemas.topics import topic_for


class UnitOfWork:
    requests: repository.Requests
    carers: repository.Carers
    families: repository.Families
    notifications: repository.Notifications
    inbound: repository.InboundMessages
    tokens: repository.Tokens
    drafts: repository.Drafts
    centers: repository.Centers
    session: Session

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> Self:
        self.session = self._session_factory()
        self.requests = repository.Requests(self.session)
        self.carers = repository.Carers(self.session)
        self.families = repository.Families(self.session)
        self.notifications = repository.Notifications(self.session)
        self.inbound = repository.InboundMessages(self.session)
        self.tokens = repository.Tokens(self.session)
        self.drafts = repository.Drafts(self.session)
        self.centers = repository.Centers(self.session)
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

    def rollback(self) -> None:
        self.session.rollback()

    # -- messages out -------------------------------------------------------------
    def emit(self, message: Message, *, key: str, now: datetime) -> Envelope:
        """Queue `message` for Kafka, in this transaction."""
        envelope = Envelope(type=message.type, version=message.version, key=key,
                            payload=message.model_dump(mode="json"), occurred_at=now)
        self.session.add(OutboxMessage(event_id=envelope.event_id, topic=topic_for(message.type).name,
                                       key=key, type=message.type, body=envelope.to_bytes(),
                                       created_at=now))
        return envelope

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
        self.emit(SmsRequested(notification_id=note.id), key=recipient, now=now)
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


def session_factory(engine: Engine) -> sessionmaker[Session]:
    orm.start_mappers()
    return sessionmaker(bind=engine, expire_on_commit=False)
