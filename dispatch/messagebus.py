"""The message bus: routes a command to its handler inside a fresh unit of work.

Transient database failures (SQLite busy, PostgreSQL serialization failures, a lost
connection, a unique-constraint race) roll the whole handler back and run it again:
handlers are idempotent, so a retry can only finish what the first try could not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from dispatch.commands import Command
from dispatch.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[..., Any]


class MessageBus:
    """`attempts` bounds retries after contention (locks, races); a lost database
    connection is retried for up to `outage_s` instead, so a database restart of a few
    seconds is waited out rather than answered with a 503 (which Twilio does not retry
    for an inbound SMS) or handed back to the worker."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork],
                 handlers: dict[type[Command], Handler], dependencies: dict[str, Any],
                 attempts: int = 5, outage_s: float = 5.0) -> None:
        self.uow_factory = uow_factory
        self.handlers = handlers
        self.dependencies = dependencies
        self.attempts = attempts
        self.outage_s = outage_s

    def handle(self, command: Command) -> Any:
        handler = self.handlers[type(command)]
        delay = 0.02
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return handler(command, self.uow_factory(), **self.dependencies)
            except (OperationalError, IntegrityError, DBAPIError) as exc:
                if not _transient(exc):
                    raise
                if _connection_lost(exc):
                    if time.monotonic() - started + delay > self.outage_s:
                        raise
                elif attempt >= self.attempts:
                    raise
                log.warning("retrying %s after %s (attempt %d)", type(command).__name__,
                            type(exc.orig).__name__ if exc.orig else exc, attempt)
                time.sleep(delay)
                delay = min(delay * 3, 1.0)


def _connection_lost(exc: DBAPIError) -> bool:
    """The database went away (restart, terminated backend, refused connection), as
    opposed to contention inside a working one."""
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig else ""
    return any(s in text for s in ("connection", "terminating", "server closed",
                                   "not currently accepting", "starting up", "shutting down"))


def _transient(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True  # a race on a unique key: the retry sees the winner's row
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig else ""
    return _connection_lost(exc) or any(
        s in text for s in ("locked", "busy", "serializ", "deadlock", "could not obtain"))
