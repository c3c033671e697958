"""The outbox relay: publishes rows written by handlers to Kafka, then marks them published.

kafka-python with `acks="all"` and the idempotent producer: a row is marked only after
the broker has it. A crash between the two publishes that row again on restart, which
consumers absorb (they dedupe on `event_id`); nothing is ever lost.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import Connection, Engine, select, update

from dispatch.db import READ_ONLY
from dispatch.orm import outbox

log = logging.getLogger("dolbom.relay")


class OutboxRelay:
    def __init__(self, engine: Engine, bootstrap: str, *, poll_ms: int = 10,
                 batch_size: int = 500, send_timeout_s: float = 15.0) -> None:
        self.engine = engine
        self.poll_s = poll_ms / 1000
        self.batch_size = batch_size
        # Every wait on the broker is bounded: with the broker gone, a batch fails
        # (rows stay unpublished) and run() backs off, instead of blocking forever.
        self.send_timeout_s = send_timeout_s
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","), acks="all", enable_idempotence=True,
            linger_ms=0, max_in_flight_requests_per_connection=5,
            max_block_ms=int(send_timeout_s * 1000),
            request_timeout_ms=int(send_timeout_s * 1000),
            delivery_timeout_ms=int(send_timeout_s * 1000) + 1000)
        self._locking = engine.dialect.name == "postgresql"
        self.published = 0

    def publish_batch(self) -> int:
        """Publish up to one batch of unpublished rows; returns how many."""
        if self._locking:
            # Several relays can share PostgreSQL: each takes rows nobody else holds.
            with self.engine.begin() as conn:
                rows = self._unpublished(conn, lock=True)
                self._send(rows)
                self._mark(conn, [r.id for r in rows])
            return len(rows)
        # SQLite: one relay; read without the write lock so intake never waits on Kafka.
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            rows = self._unpublished(conn, lock=False)
        if rows:
            self._send(rows)
            with self.engine.begin() as conn:
                self._mark(conn, [r.id for r in rows])
        return len(rows)

    def _unpublished(self, conn: Connection, *, lock: bool) -> list:  # type: ignore[type-arg]
        stmt = (select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.body)
                .where(outbox.c.published_at.is_(None)).order_by(outbox.c.id)
                .limit(self.batch_size))
        if lock:
            stmt = stmt.with_for_update(skip_locked=True)
        return list(conn.execute(stmt))

    def _send(self, rows: list) -> None:  # type: ignore[type-arg]
        futures = [self.producer.send(r.topic, key=r.key.encode(), value=bytes(r.body))
                   for r in rows]
        self.producer.flush(timeout=self.send_timeout_s)
        for future in futures:
            future.get(timeout=self.send_timeout_s)  # raises if the broker did not take it

    @staticmethod
    def _mark(conn: Connection, ids: list[int]) -> None:
        if ids:
            conn.execute(update(outbox).where(outbox.c.id.in_(ids))
                         .values(published_at=datetime.now(UTC)))

    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                count = self.publish_batch()
                backoff = 0.5
            except Exception as exc:  # broker or database away: wait and try again
                log.warning("relay: %s: %s; retrying in %.1fs", type(exc).__name__, exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self.published += count
            if count < self.batch_size:
                stop.wait(self.poll_s)

    def close(self) -> None:
        # Unsent messages are still unpublished rows: nothing is lost by giving up here.
        try:
            self.producer.close(timeout=5)
        except KafkaError as exc:
            log.warning("relay: producer closed with messages in flight (%s)", exc)


def run_relay(engine: Engine, bootstrap: str, poll_ms: int, stop: threading.Event) -> None:
    relay = OutboxRelay(engine, bootstrap, poll_ms=poll_ms)
    log.info("relay publishing to %s every %d ms when idle", bootstrap, poll_ms)
    started = time.monotonic()
    try:
        relay.run(stop)
    finally:
        relay.close()
        log.info("relay stopped after %.0fs, %d messages published",
                 time.monotonic() - started, relay.published)
