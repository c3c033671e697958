"""The topic catalogue: every Kafka topic dolbom uses, its key and its partition count.

Keys keep one entity's messages in order: a request's events on one partition, one
phone number's SMS (in and out) on one partition.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    partitions: int
    carries: tuple[str, ...]


REQUESTS = Topic(
    name="dolbom.requests",
    key="request id",
    partitions=6,
    carries=("request.received", "request.matching", "offer.made", "request.assigned",
             "request.cancelled", "request.escalated", "request.escalation_acknowledged"),
)
SMS_INBOUND = Topic(
    name="dolbom.sms.inbound",
    key="sender phone number (E.164)",
    partitions=6,
    carries=("sms.received",),
)
SMS_OUTBOUND = Topic(
    name="dolbom.sms.outbound",
    key="recipient phone number (E.164)",
    partitions=6,
    carries=("sms.requested",),
)
CARERS = Topic(
    name="dolbom.carers",
    key="carer id",
    partitions=3,
    carries=("carer.registered", "carer.duty_changed"),
)

CATALOGUE: tuple[Topic, ...] = (REQUESTS, SMS_INBOUND, SMS_OUTBOUND, CARERS)


def topic_for(message_type: str) -> Topic:
    for topic in CATALOGUE:
        if message_type in topic.carries:
            return topic
    raise KeyError(f"no topic carries message type {message_type!r}")
