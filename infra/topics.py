"""Create dolbom's topics (schemas.topics.CATALOGUE) on a Kafka-protocol cluster."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError, for_code

from schemas.topics import CATALOGUE, Topic

__all__ = ["describe", "ensure_topics"]


def _admin(bootstrap: str, timeout: float) -> KafkaAdminClient:
    timeout_ms = max(1000, int(timeout * 1000))
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="dolbom-topics",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )


def _partition_counts(admin: KafkaAdminClient, names: list[str] | None) -> dict[str, int]:
    """Topic -> partition count for topics the cluster reports without error."""
    counts: dict[str, int] = {}
    topics: list[dict[str, Any]] = admin.describe_topics(names)
    for topic in topics:
        if topic.get("error_code", 0) != 0:
            continue
        counts[topic["name"]] = len(topic.get("partitions") or [])
    return counts


def _leaders_ready(admin: KafkaAdminClient, wanted: dict[str, int]) -> dict[str, str]:
    """Topics not yet usable, with why. Empty means every topic is ready."""
    pending: dict[str, str] = {}
    topics: list[dict[str, Any]] = admin.describe_topics(list(wanted))
    by_name = {t.get("name"): t for t in topics}
    for name, partitions in wanted.items():
        topic = by_name.get(name)
        if topic is None:
            pending[name] = "missing from metadata"
            continue
        if topic.get("error_code", 0) != 0:
            pending[name] = f"error {for_code(topic['error_code']).__name__}"
            continue
        parts = topic.get("partitions") or []
        if len(parts) < partitions:
            pending[name] = f"{len(parts)}/{partitions} partitions visible"
            continue
        leaderless = [p["partition_index"] for p in parts if p.get("leader_id", -1) < 0]
        if leaderless:
            pending[name] = f"no leader yet for partitions {leaderless}"
    return pending


def ensure_topics(
    bootstrap: str,
    topics: Iterable[Topic] = CATALOGUE,
    replication_factor: int = 1,
    timeout: float = 15.0,
) -> list[str]:
    """Create whichever of ``topics`` are missing; return the names actually created.

    Safe to run from several processes at once: a topic someone else created in the
    meantime (TopicAlreadyExists) counts as present. Existing topics are left as they
    are, even if their partition count differs from the catalogue, because changing
    partitions would re-shuffle keys across partitions and break per-key ordering;
    that mismatch is reported as a RuntimeError instead.

    Returns only once metadata shows every topic with all its partitions led, so a
    producer started right after never sees UnknownTopicOrPartition.
    """
    wanted = {t.name: t.partitions for t in topics}
    if not wanted:
        return []
    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap, timeout)
    try:
        existing = _partition_counts(admin, None)
        missing = [name for name in wanted if name not in existing]
        created: list[str] = []
        if missing:
            result = admin.create_topics(
                {
                    name: {
                        "num_partitions": wanted[name],
                        "replication_factor": replication_factor,
                    }
                    for name in missing
                },
                timeout_ms=max(1000, int(timeout * 1000)),
                raise_errors=False,
            )
            for entry in result["topics"]:
                error = for_code(entry["error_code"])
                if entry["error_code"] == 0:
                    created.append(entry["name"])
                elif error is TopicAlreadyExistsError:
                    continue
                else:
                    message = entry.get("error_message") or ""
                    raise RuntimeError(
                        f"creating topic {entry['name']!r} on {bootstrap} failed: "
                        f"{error.__name__} {message}".rstrip()
                    )

        mismatched = {
            name: (existing[name], wanted[name])
            for name in wanted
            if name in existing and existing[name] != wanted[name]
        }
        if mismatched:
            detail = ", ".join(f"{n}: has {have}, catalogue says {want}"
                               for n, (have, want) in mismatched.items())
            raise RuntimeError(f"topics on {bootstrap} differ from the catalogue: {detail}")

        while True:
            pending = _leaders_ready(admin, wanted)
            if not pending:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"topics on {bootstrap} not ready after {timeout:.1f}s: {pending}"
                )
            time.sleep(0.05)
        return sorted(created)
    finally:
        admin.close()


def describe(bootstrap: str, timeout: float = 15.0) -> dict[str, int]:
    """Topic -> partition count for every topic on the cluster, sorted by name."""
    admin = _admin(bootstrap, timeout)
    try:
        return dict(sorted(_partition_counts(admin, None).items()))
    finally:
        admin.close()
