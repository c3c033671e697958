"""A Faust transport whose consumer fetch wait is configurable.

faust-streaming 0.15.3 builds its aiokafka consumer with `fetch_max_wait_ms=1500`
hard-coded. Apache Kafka answers a waiting fetch as soon as data arrives, so there
that number only bounds idle polling; the embedded broker (Tansu) does not, so there
it is the latency of every hop (measured: p50 ≈ 380 ms at 1500 ms, ≈ 15 ms at 10 ms).

Rather than patch Faust at import, the app is given this transport (DolbomApp below):
it lets Faust build the consumer as usual, then sets the wait before the consumer starts.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        apply_fetch_wait(consumer, getattr(self.app, "fetch_wait_ms", 1500))
        return consumer


def apply_fetch_wait(consumer: aiokafka.AIOKafkaConsumer, wait_ms: int) -> None:
    """aiokafka reads this when `start()` builds its fetcher; fail loudly if that changes."""
    if not hasattr(consumer, "_fetch_max_wait_ms") or getattr(consumer, "_fetcher", None):
        raise RuntimeError("aiokafka changed: can't set the consumer fetch wait; "
                           "check streams/transport.py against the installed aiokafka")
    consumer._fetch_max_wait_ms = wait_ms


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TunedTransport(faust_aiokafka.Transport):
    Consumer = _Consumer


class DolbomApp(faust.App):
    """A Faust app on TunedTransport; `fetch_wait_ms` is the consumer's fetch wait."""

    def __init__(self, *args: Any, fetch_wait_ms: int = 1500, **kwargs: Any) -> None:
        self.fetch_wait_ms = fetch_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return TunedTransport(self.conf.broker_consumer, self)
