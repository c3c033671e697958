"""Fault injection: the broker (Tansu, memory only) stopped and restarted empty.

The database is the system of record. After the broker comes back empty on the same port
(topics recreated, worker and relay restarted against it), the relay publishes outbox rows
not yet published, and the deadline sweep re-drives requests stuck in `received` whose
`request.received` went to the old broker and was lost (dispatch/handlers/deadlines.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker
from infra.harness import Running, running_system, wait_for
from infra.topics import ensure_topics
from tests.faults._flow import (
    carers_answering_yes,
    database,
    diagnose,
    duplicate_sms,
    kill,
    overlapping_assignments,
    population,
    restart,
    wait_all,
)

pytestmark = pytest.mark.e2e

REDRIVE_AFTER_S = 3


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    # The children inherit this process's environment (LocalSystem.start).
    monkeypatch.setenv("DOLBOM_REDRIVE_RECEIVED_AFTER_S", str(REDRIVE_AFTER_S))
    with running_system(tmp_path, sweep_interval_s=0.5, sms_rate_per_s=50) as running:
        yield running


def _announcements(system: Running, request_id: str) -> list[tuple[str, str | None]]:
    with database(system) as db:
        return db.execute("SELECT event_id, published_at FROM outbox WHERE key = ? AND "
                          "type = 'request.received' ORDER BY id", (request_id,)).fetchall()


def test_broker_restarted_empty_every_request_still_ends_assigned(system: Running) -> None:
    """Invariant: the database, not the broker, is the record. A request whose
    request.received was published to a broker that then restarted empty (lost), and a
    request submitted while the broker was down (unpublished), both end assigned once,
    no carer is double-booked and no SMS goes twice."""
    carers, families = population(system, carers=3, families=2, tag="300")
    local = system.system
    assert local.broker is not None

    # 1. No worker: request A's announcement reaches the broker and nobody reads it.
    kill(local.children["worker"])
    lost = system.request(families[0], day_offset=1)["id"]
    wait_for(lambda: all(p for _, p in _announcements(system, lost)) and
             _announcements(system, lost), 15, "request A published to the old broker")

    # 2. The broker goes away with everything in it; request B comes in meanwhile.
    port = local.broker.port
    local.broker.stop()
    unpublished = system.request(families[1], day_offset=2)["id"]
    time.sleep(1.0)
    assert [p for _, p in _announcements(system, unpublished)] == [None]

    # 3. An empty broker on the same port, topics recreated, worker and relay restarted.
    local.broker = EmbeddedBroker(port=port, log_path=local.var / "broker2.log").start()
    ensure_topics(local.bootstrap)
    kill(local.children["relay"])
    restart(system, "relay")
    restart(system, "worker")

    ids = [lost, unpublished]
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        statuses = wait_all(system, ids, "assigned", timeout=40)
    stuck = {i: s for i, s in statuses.items() if s != "assigned"}
    assert stuck == {}, diagnose(system, stuck)
    # A was announced again by the sweep (at least once; B never needed it).
    assert len(_announcements(system, lost)) >= 2
    assert len(_announcements(system, unpublished)) == 1
    assert overlapping_assignments(system, ids) == 0
    assert duplicate_sms(system) == {"same_text_twice": 0, "notification_key_twice": 0,
                                     "row_sent_twice": 0, "sends_without_row": 0}
