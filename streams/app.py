"""The Faust worker: agents that decode a message and hand a command to the bus.

Agents stay thin. All state lives in the database; Kafka offsets are committed after the
handler's transaction (at_least_once), and handlers dedupe on `event_id`, so a crash
between the two replays a message that then changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import faust
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from dispatch import commands as c
from dispatch.bootstrap import bootstrap
from dispatch.db import make_engine
from dispatch.domain.policy import load_policies
from dispatch.messagebus import MessageBus
from dispatch.unit_of_work import committed_sms
from notifiers import grammar, intake_grammar, templates
from notifiers.factory import gateway_from_settings
from schemas import topics
from schemas.config import Settings
from schemas.envelope import Envelope
from streams.lease import SenderLease
from streams.routing import command_for
from streams.transport import DolbomApp

log = logging.getLogger("dolbom.worker")

RETRY_MAX_S = 30.0
# The most SMS one batch claims, sends and records.
MAX_BATCH = 200


def handle_collecting_sms(bus: MessageBus, command: c.Command) -> tuple[Any, list[str]]:
    """Handle `command`; also return the ids of the SMS its transactions queued, which
    this process is now to send (no `sms.requested` message was written for them)."""
    with committed_sms() as queued:
        result = bus.handle(command)
    return result, list(queued)


def send_now(bus: MessageBus, notification_ids: list[str]) -> None:
    """Hand SMS just committed to the gateway, and any its failures queued (a dispatcher's
    alert). If this fails, or the process dies first, the rows are still `pending` and the
    notification sweep sends them: nothing is lost, and the claim sends nothing twice."""
    while notification_ids:
        try:
            _, notification_ids = handle_collecting_sms(
                bus, c.DeliverNotifications(notification_ids=tuple(notification_ids)))
        except Exception as exc:
            if len(notification_ids) > 1:
                # One bad row must not hold up the others: try them one at a time.
                log.warning("sending a batch of %d SMS failed (%s); one at a time now",
                            len(notification_ids), type(exc).__name__)
                for notification_id in notification_ids:
                    send_now(bus, [notification_id])
            else:
                log.warning("sending SMS %s now failed (%s); the notification sweep will",
                            notification_ids[0], type(exc).__name__)
            return


def handle_then_send(bus: MessageBus, command: c.Command) -> Any:
    """Handle `command`, then send the SMS it queued, in this thread."""
    result, queued = handle_collecting_sms(bus, command)
    send_now(bus, queued)
    return result


class Sender:
    """Sends the SMS handlers queued, off the agents' path, in batches.

    One thread takes whatever has been queued since its last batch: one transaction claims
    it all, the gateway gets the messages several at a time (the bus's send pool), one
    transaction records them sent. Under load the batches grow, so the database work per
    SMS shrinks as the rate rises instead of queueing behind the write lock.
    """

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.queue: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="sms-sender", daemon=True)
        self.thread.start()

    def submit(self, notification_ids: list[str]) -> None:
        if notification_ids:
            self.queue.put(notification_ids)

    def _run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            with contextlib.suppress(queue.Empty):
                while len(batch) < MAX_BATCH:
                    more = self.queue.get_nowait()
                    if more is None:
                        self.queue.put(None)
                        break
                    batch.extend(more)
            send_now(self.bus, batch)

    def close(self, timeout_s: float = 10.0) -> None:
        # What is still queued after this stays `pending` in the database for the sweep.
        self.queue.put(None)
        self.thread.join(timeout_s)


def fault_point(settings: Settings) -> Callable[[str, str], None]:
    """`kill(when, type)`: SIGKILL this process at `settings.fault_kill_at`, once per data dir.

    Only the fault tests set it (tests/faults/test_process_crashes.py): a kill at a chosen
    point proves what a random kill only samples.
    """
    if not settings.fault_kill_at:
        return lambda when, message_type: None
    marker = settings.data_dir / ("fault-" + settings.fault_kill_at.replace(":", "-"))

    def kill(when: str, message_type: str) -> None:
        if f"{when}:{message_type}" == settings.fault_kill_at and not marker.exists():
            marker.write_text("killed\n")
            log.warning("fault injection: SIGKILL %s %s", when, message_type)
            os.kill(os.getpid(), signal.SIGKILL)

    return kill


def create_app(settings: Settings, bus: MessageBus | None = None) -> faust.App:
    kill_at = fault_point(settings)
    lease: SenderLease | None = None
    if bus is None:
        engine = make_engine(settings.database_url, settings=settings)
        lease = SenderLease(engine)

        def may_send() -> bool:
            kill_at("before_send", "sms")  # claimed and committed, not yet handed over
            return lease is not None and lease.may_send()

        bus = bootstrap(engine, load_policies(settings.policy_dir),
                        sms=gateway_from_settings(settings, may_send),
                        templates=templates.render, grammar=grammar.parse,
                        intake=intake_grammar.parse_request,
                        dispatcher_phone=settings.dispatcher_phone,
                        sms_threads=settings.sms_send_threads, claims=lease)
        lease.start()
    assert settings.kafka_bootstrap, "the worker needs DOLBOM_KAFKA_BOOTSTRAP"
    # The worker id is the consumer group, shared by every worker; Faust's local files are
    # per process, so several workers on one host keep them apart by instance name.
    datadir = settings.data_dir / "faust" / settings.worker_id / settings.worker_instance
    datadir.mkdir(parents=True, exist_ok=True)
    app = DolbomApp(
        settings.worker_id,
        broker=",".join(f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")),
        fetch_wait_ms=settings.kafka_fetch_wait_ms,
        processing_guarantee="at_least_once",
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_session_timeout_s / 3,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        store="memory://",
        datadir=str(datadir),
        producer_acks=-1,
        broker_commit_every=1,
        broker_commit_interval=0.5,
    )

    @app.on_partitions_assigned.connect
    async def log_assignment(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        # Several workers share one consumer group (the app id): which partitions this
        # process holds is what an operator (and the failover test) needs after a rebalance.
        held: dict[str, list[int]] = {}
        for tp in (args[0] if args else ()):
            held.setdefault(tp.topic, []).append(tp.partition)
        log.info("partitions assigned to worker pid %d in group %s: %s", os.getpid(),
                 settings.worker_id, " ".join(f"{name}{sorted(parts)}"
                                             for name, parts in sorted(held.items())) or "none",
                 extra={"group": settings.worker_id, "partitions": sum(map(len, held.values()))})

    def raw_topic(topic: topics.Topic) -> Any:
        return app.topic(topic.name, value_type=bytes, value_serializer="raw",
                         key_serializer="raw", partitions=topic.partitions)

    sender = Sender(bus)

    @app.on_before_shutdown.connect
    async def stop_sending(sender_app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        await asyncio.to_thread(sender.close)
        if lease is not None:
            await asyncio.to_thread(lease.close, idle=not sender.thread.is_alive())

    async def apply(envelope: Envelope, command: c.Command) -> None:
        """Run the handler off the event loop; wait out a database outage, never skip it."""
        delay = 0.1
        while True:
            try:
                kill_at("before_commit", envelope.type)
                if isinstance(command, c.DeliverNotification):
                    # Joins the sender's next batch instead of claiming on its own.
                    sender.submit([command.notification_id])
                    return
                _, queued = await asyncio.to_thread(handle_collecting_sms, bus, command)
                # Committed, SMS not yet sent, offset not yet committed (Faust acks after
                # this returns): the window at_least_once, the inbox and the sweep cover.
                kill_at("after_commit", envelope.type)
                sender.submit(queued)
                return
            except OperationalError as exc:
                log.warning("database unavailable for %s (%s); retrying in %.1fs",
                            envelope.type, type(exc.orig).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def decode(raw: bytes) -> Envelope | None:
        try:
            return Envelope.from_bytes(raw)
        except (ValidationError, ValueError):
            log.error("undecodable message skipped (%d bytes)", len(raw))
            return None

    def agent(topic: topics.Topic, to_command: Callable[[Envelope], c.Command | None]) -> None:
        async def process(stream: AsyncIterator[bytes]) -> None:
            async for raw in stream:
                envelope = decode(raw)
                if envelope is None:
                    continue
                command = to_command(envelope)
                if command is None:
                    continue
                try:
                    await apply(envelope, command)
                except Exception:
                    # A bug, not an outage: log it loudly and keep the partition moving;
                    # the row is still in the database for a dispatcher or a re-drive.
                    log.exception("handler failed for %s %s", envelope.type, envelope.event_id)

        process.__name__ = "on_" + topic.name.replace(".", "_")
        app.agent(raw_topic(topic), name=process.__name__)(process)  # type: ignore[arg-type]

    # One mapping for every topic (streams/routing.py): the simulator replays the same one.
    agent(topics.REQUESTS, command_for)
    agent(topics.SMS_INBOUND, command_for)
    agent(topics.SMS_OUTBOUND, command_for)

    @app.timer(interval=settings.sweep_interval_s)
    async def sweep_notifications() -> None:
        # Deadlines live in the database, so a restarted worker picks up where one stopped.
        try:
            await asyncio.to_thread(bus.handle, c.SweepNotifications())
        except Exception:
            log.exception("notification sweep failed; trying again next tick")

    @app.timer(interval=settings.sweep_interval_s)
    async def sweep_deadlines() -> None:
        # Offer answer windows and SLAs, stored with the requests: expired offers make way for
        # the next carers, overdue requests go to a dispatcher. Every worker sweeps; row locks
        # keep two sweeps from handling one request twice.
        try:
            await asyncio.to_thread(bus.handle, c.SweepDeadlines())
        except Exception:
            log.exception("deadline sweep failed; trying again next tick")

    return app
