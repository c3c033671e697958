"""Two workers in one consumer group on the real broker; one is SIGKILLed while requests flow.

Invariant: the workers share the topics' partitions (each logs what it holds after every
rebalance); when one dies without a goodbye, the group's session timeout evicts it and the
survivor takes its partitions over. Messages the dead worker handled but had not committed
are replayed to the survivor and absorbed by the inbox (event_id) dedupe. Counts printed and
asserted: submitted, final statuses, lost 0, overlapping assignments 0, SMS twice 0.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.harness import Running, running_system, wait_for
from schemas import topics
from tests.faults._flow import (
    carers_answering_yes,
    database,
    diagnose,
    duplicate_sms,
    kill,
    overlapping_assignments,
    population,
    wait_all,
)

pytestmark = pytest.mark.e2e

N = 20
# The topics the worker's agents read (dolbom.carers has no consumer in the worker).
ALL_PARTITIONS = {(t.name, p) for t in (topics.REQUESTS, topics.SMS_INBOUND, topics.SMS_OUTBOUND)
                  for p in range(t.partitions)}
ASSIGNED = re.compile(r"partitions assigned to worker pid (\d+) in group \S+: (.*)$")
HELD = re.compile(r"(dolbom\.[\w.]+)\[([\d, ]*)\]")


def last_assignment(log: Path) -> set[tuple[str, int]] | None:
    """The partitions a worker said it holds after its latest rebalance (None: not yet)."""
    if not log.exists():
        return None
    latest: set[tuple[str, int]] | None = None
    for line in log.read_text(errors="replace").splitlines():
        found = ASSIGNED.search(line)
        if found:
            latest = {(topic, int(p)) for topic, parts in HELD.findall(found.group(2))
                      for p in parts.split(",") if p.strip()}
    return latest


def in_flight(system: Running) -> int:
    with database(system) as db:
        return int(db.execute("SELECT COUNT(*) FROM notifications WHERE status = 'sending'")
                   .fetchone()[0])


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Running]:
    with running_system(tmp_path, workers=2, sweep_interval_s=0.5,
                        sms_rate_per_s=50) as running:
        yield running


def test_two_workers_share_partitions_and_the_survivor_takes_over_a_killed_one(
        system: Running) -> None:
    workers = [system.system.children["worker"], system.system.children["worker-2"]]
    assert workers[0].env["DOLBOM_WORKER_ID"] == workers[1].env["DOLBOM_WORKER_ID"]
    # One data dir (and data key) for both; Faust's own files apart.
    assert workers[0].env["DOLBOM_DATA_DIR"] == workers[1].env["DOLBOM_DATA_DIR"]
    assert workers[1].env["DOLBOM_WORKER_INSTANCE"] == "worker-2"

    def split() -> tuple[set[tuple[str, int]], set[tuple[str, int]]] | None:
        a, b = (last_assignment(w.log_path) for w in workers)
        # Both hold something, nothing is held twice, nothing is held by nobody.
        if a and b and not a & b and a | b == ALL_PARTITIONS:
            return a, b
        return None

    try:
        first, second = wait_for(split, 60, "both workers to hold a share of the partitions")
    except TimeoutError:
        for w in workers:
            print(f"==== {w.name}\n{w.log_path.read_text(errors='replace')[-3000:]}")
        raise
    print(f"\nworker holds {len(first)} partitions, worker-2 holds {len(second)}")

    carers, families = population(system, carers=4, families=5, tag="300")
    ids: list[str] = []
    done = threading.Event()

    def submit() -> None:
        # One request a day, so any carer can take any of them; a steady trickle, so some
        # are in every stage when the worker dies.
        for i in range(N):
            ids.append(system.request(families[i % len(families)], day_offset=1 + i)["id"])
            time.sleep(0.5)
        done.set()

    with carers_answering_yes(system, {c["phone"] for c in carers}):
        feeder = threading.Thread(target=submit, daemon=True)
        feeder.start()
        wait_for(lambda: sum(system.get_request(i)["status"] == "assigned"
                             for i in list(ids)) >= 2, 60, "the first assignments")
        killed_at = len(ids)
        kill(workers[1])  # not restarted: the survivor must take everything over
        taken_over = wait_for(
            lambda: (held := last_assignment(workers[0].log_path)) == ALL_PARTITIONS and held,
            60, "the surviving worker to hold every partition")
        feeder.join(60)
        assert done.is_set(), "the feeder did not finish submitting"
        statuses = wait_all(system, ids, "assigned", timeout=90)
        # A send the dead worker had begun (row `sending`, the call made, no sid recorded)
        # is the survivor's to settle: after STUCK_SENDING_S it asks Twilio, never resends.
        wait_for(lambda: not in_flight(system), 150, "the dead worker's sends to be settled")
    lost = {i: s for i, s in statuses.items() if s != "assigned"}
    overlaps = overlapping_assignments(system, ids)
    duplicates = duplicate_sms(system)
    print(f"submitted {len(ids)} (killed worker-2 after {killed_at}); survivor holds "
          f"{len(taken_over)}/{len(ALL_PARTITIONS)} partitions; final "
          f"{sum(s == 'assigned' for s in statuses.values())} assigned; lost {len(lost)}; "
          f"overlapping assignments {overlaps}; duplicate SMS {duplicates}")
    assert workers[0].alive and not workers[1].alive
    assert len(ids) == N
    assert 0 < killed_at < N, "the kill did not happen mid-flow"
    assert lost == {}, diagnose(system, lost)
    assert overlaps == 0
    assert duplicates == {"same_text_twice": 0, "notification_key_twice": 0,
                          "row_sent_twice": 0, "sends_without_row": 0}
