"""Fault injection on the real broker, worker, relay and API: a child SIGKILLed mid-flow.

Counts asserted in each test: requests submitted vs requests that end `assigned`, overlapping
active assignments per carer (0), SMS sent twice per (event, recipient, kind) (0).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.harness import Running, running_system, wait_for
from tests.faults._flow import (
    carers_answering_yes,
    diagnose,
    duplicate_sms,
    kill,
    overlapping_assignments,
    population,
    restart,
    unsettled_sms,
    wait_all,
)

pytestmark = pytest.mark.e2e

N = 20


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Running]:
    with running_system(tmp_path, sweep_interval_s=0.5, sms_rate_per_s=50) as running:
        yield running


def _submit(system: Running, families: list[dict], first: int, count: int) -> list[str]:
    # One request a day: no two overlap, so every one can be filled by any carer.
    return [system.request(families[i % len(families)], day_offset=1 + i)["id"]
            for i in range(first, first + count)]


def test_worker_sigkilled_mid_flow_loses_nothing_and_sends_nothing_twice(
        system: Running) -> None:
    """Invariant: the worker is at_least_once with inbox dedupe, so a SIGKILL between a
    handler's commit and its offset commit replays messages that change nothing. All 20
    requests end assigned, no carer holds two overlapping assignments, no SMS goes twice."""
    carers, families = population(system, carers=4, families=5, tag="100")
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        ids = _submit(system, families, 0, N // 2)
        # Kill while the first half is in flight: some offered, some answered, some not yet.
        wait_for(lambda: sum(system.get_request(i)["status"] == "assigned" for i in ids) >= 2,
                 30, "the first assignments")
        kill(system.system.children["worker"])
        ids += _submit(system, families, N // 2, N // 2)
        time.sleep(1.0)  # requests and YES replies pile up in Kafka with no worker
        restart(system, "worker")
        statuses = wait_all(system, ids, "assigned", timeout=45)
    lost = {i: s for i, s in statuses.items() if s != "assigned"}
    assert len(ids) == N
    assert lost == {}, diagnose(system, lost)
    # The SMS the killed worker had claimed but not sent go out (the restarted worker sees
    # its predecessor's process is gone), well before any fixed timeout would have.
    assert unsettled_sms(system, timeout=15) == {}
    assert overlapping_assignments(system, ids) == 0
    assert duplicate_sms(system) == {"same_text_twice": 0, "notification_key_twice": 0,
                                     "row_sent_twice": 0, "sends_without_row": 0}


def test_relay_sigkilled_mid_flow_loses_nothing_and_duplicates_are_absorbed(
        system: Running) -> None:
    """Invariant: the relay marks an outbox row only after the broker has it, so a SIGKILL
    loses nothing (unmarked rows go again) and a row sent twice is absorbed by the
    consumers' event_id dedupe. Every request gets its offers and ends assigned, once."""
    carers, families = population(system, carers=4, families=5, tag="200")
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        ids = _submit(system, families, 0, N // 2)
        wait_for(lambda: sum(system.get_request(i)["status"] == "assigned" for i in ids) >= 2,
                 30, "the first assignments")
        kill(system.system.children["relay"])
        ids += _submit(system, families, N // 2, N // 2)
        time.sleep(1.0)  # outbox rows pile up unpublished
        restart(system, "relay")
        statuses = wait_all(system, ids, "assigned", timeout=45)
    lost = {i: s for i, s in statuses.items() if s != "assigned"}
    assert len(ids) == N
    assert lost == {}, diagnose(system, lost)
    # Every request got its offers (the first wave of up to 3 carers).
    for i in ids:
        assert system.get_request(i)["offers"], i
    assert overlapping_assignments(system, ids) == 0
    assert duplicate_sms(system) == {"same_text_twice": 0, "notification_key_twice": 0,
                                     "row_sent_twice": 0, "sends_without_row": 0}


KILL_POINTS = [("before_commit", "request.received"), ("after_commit", "request.received"),
               ("after_commit", "sms.received"),
               # Its first SMS (the parent's "received") claimed and committed as `sending`,
               # the provider not yet called.
               ("before_send", "sms")]


@pytest.mark.parametrize("point", [":".join(p) for p in KILL_POINTS])
def test_worker_sigkilled_at_a_chosen_point_loses_nothing_and_sends_nothing_twice(
        tmp_path: Path, point: str) -> None:
    """Invariant, at the two points that matter: killed before the handler's commit, the
    message is read again and handled once; killed after the commit (offers made, SMS handed
    over) but before the offset commit, the replay finds its event_id in the inbox and
    changes nothing. Counts: 3 requests submitted, 3 assigned, 0 overlapping assignments,
    0 SMS twice; and the worker did die at that point (its marker file)."""
    with running_system(tmp_path, sweep_interval_s=0.5, sms_rate_per_s=50,
                        fault_kill_at=point) as system:
        carers, families = population(system, carers=3, families=3, tag="300")
        worker = system.system.children["worker"]
        with carers_answering_yes(system, {c["phone"] for c in carers}):
            ids = _submit(system, families, 0, 1)
            wait_for(lambda: worker.process is not None and worker.process.poll() is not None,
                     60, f"the worker to kill itself at {point}")
            assert worker.process is not None and worker.process.returncode == -9
            worker.stop()
            ids += _submit(system, families, 1, 2)  # queued in Kafka while no worker runs
            restart(system, "worker")
            statuses = wait_all(system, ids, "assigned", timeout=60)
        lost = {i: s for i, s in statuses.items() if s != "assigned"}
        marker = system.system.settings.data_dir / ("fault-" + point.replace(":", "-"))
        assert marker.exists()
        assert lost == {}, diagnose(system, lost)
        assert unsettled_sms(system, timeout=15) == {}
        assert overlapping_assignments(system, ids) == 0
        assert duplicate_sms(system) == {"same_text_twice": 0, "notification_key_twice": 0,
                                         "row_sent_twice": 0, "sends_without_row": 0}
