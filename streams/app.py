"""The Faust worker: agents that decode a message and hand a command to the bus.

Agents stay thin. All state lives in the database; Kafka offsets are committed after the
handler's transaction (at_least_once), and handlers dedupe on `event_id`, so a crash
between the two replays a message that then changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
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
from streams.routing import command_for
from streams.transport import DolbomApp

log = logging.getLogger("dolbom.worker")

RETRY_MAX_S = 30.0


def handle_then_send(bus: MessageBus, command: c.Command) -> Any:
    """Handle `command`, then hand the SMS its transaction queued to the gateway at once.

    Saves each SMS a relay poll and a Kafka hop. Nothing is lost or sent twice: the
    notification row and its `sms.requested` message were committed with the state change,
    so if this process dies before (or during) the send, the message or the sweep delivers
    it; and `deliver_notification` claims the row under a lock before calling the gateway,
    so whichever of the two comes second finds it claimed and does nothing.
    """
    with committed_sms() as queued:
        result = bus.handle(command)
    if isinstance(command, c.DeliverNotification):
        return result
    for notification_id in queued:
        try:
            bus.handle(c.DeliverNotification(notification_id=notification_id))
        except Exception as exc:  # the sms.requested message is the backstop
            log.warning("sending %s now failed (%s); its sms.requested message will",
                        notification_id, type(exc).__name__)
    return result


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
    if bus is None:
        bus = bootstrap(make_engine(settings.database_url, settings=settings),
                        load_policies(settings.policy_dir),
                        sms=gateway_from_settings(settings), templates=templates.render,
                        grammar=grammar.parse, intake=intake_grammar.parse_request,
                        dispatcher_phone=settings.dispatcher_phone)
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

    kill_at = fault_point(settings)

    async def apply(envelope: Envelope, command: c.Command) -> None:
        """Run the handler off the event loop; wait out a database outage, never skip it."""
        delay = 0.1
        while True:
            try:
                kill_at("before_commit", envelope.type)
                await asyncio.to_thread(handle_then_send, bus, command)
                # Committed, SMS handed over, offset not yet committed (Faust acks after
                # this returns): the window at_least_once + the inbox must cover.
                kill_at("after_commit", envelope.type)
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
