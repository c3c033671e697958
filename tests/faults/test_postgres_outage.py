"""Fault injection: PostgreSQL drops every connection under load, and refuses new ones a while.

The machine's PostgreSQL is shared with other people's tests, so the server is not
restarted: what a restart does to us is done to this run's database only. Every backend
connected to it is terminated (`pg_terminate_backend`: open transactions abort, pooled
connections are dead), three times while requests arrive; then once more with new
connections refused for a few seconds (`ALLOW_CONNECTIONS false`), as while a server starts.

Counts asserted: requests submitted (keys) = requests that got a 202 = requests stored =
requests that end `assigned` (lost 0); overlapping assignments per carer 0; SMS per
(event, recipient, kind) 1. A POST that could not be stored got a 503 with Retry-After and
was sent again with its Idempotency-Key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from infra.harness import Running, fresh_postgres, running_system, wait_for
from tests.faults._flow import (
    Submitter,
    carers_answering_yes,
    diagnose,
    duplicate_sms,
    overlapping_assignments,
    population,
    report,
    request_rows,
    wait_all,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
N = 24
KILL_ROUNDS = 3
REFUSE_S = 4.0


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Running]:
    with fresh_postgres(ADMIN) as url, running_system(
            tmp_path, database_url=url, sweep_interval_s=0.5, sms_rate_per_s=50) as running:
        yield running


def _name(system: Running) -> str:
    return system.system.settings.database_url.rsplit("/", 1)[1]


def terminate_backends(name: str) -> int:
    """Terminate every connection to database `name` (this run's only); how many there were."""
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        row = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def connections_refused(name: str) -> Iterator[int]:
    """New connections to `name` refused, existing ones terminated, until the block ends."""
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            yield terminate_backends(name)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_postgres_connections_dropped_under_load_lose_nothing_and_duplicate_nothing(
        system: Running) -> None:
    """Invariant: a state change and its messages commit together or not at all, so a
    connection killed mid-transaction loses nothing that was acknowledged; the bus runs a
    handler again on a fresh connection (handlers are idempotent), the relay and the worker
    wait the database out, and the API answers 503 + Retry-After for what it could not store."""
    name = _name(system)
    carers, families = population(system, carers=4, families=6, tag="600")
    terminated: list[int] = []
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        submitter = Submitter(system, families, N, pause_s=0.05).start()
        for round_no in range(KILL_ROUNDS):
            wait_for(lambda r=round_no: len(submitter.accepted) >= 3 + r * N // 5, 90,
                     "requests to be accepted before the connections go")
            terminated.append(terminate_backends(name))
            time.sleep(0.5)
        wait_for(lambda: len(submitter.accepted) >= 3 * N // 4, 90, "more requests")
        with connections_refused(name) as dropped:
            terminated.append(dropped)
            # Meanwhile the API says it stored nothing, and when to come back.
            during = httpx.get(system.system.api_url + "/healthz", timeout=5)
            time.sleep(REFUSE_S)
        submitter.join(timeout=150)
        ids = list(submitter.accepted.values())
        statuses = wait_all(system, ids, "assigned", timeout=90)
    stored = request_rows(system)
    lost = {i: s for i, s in statuses.items() if s != "assigned"}
    overlapping = overlapping_assignments(system, ids)
    duplicates = duplicate_sms(system)
    report("postgres connections dropped", submitted=N, accepted=len(ids), stored=len(stored),
           final=N - len(lost), lost=len(lost), overlapping_assignments=overlapping,
           duplicate_sms=sum(duplicates.values()),
           faults_injected=len(terminated), backends_terminated=terminated,
           posts_without_answer=sum(submitter.failed_posts.values()),
           errors=dict(submitter.errors))
    assert all(n > 0 for n in terminated), terminated  # every round did cut connections
    assert during.status_code == 503 and during.headers.get("Retry-After")
    assert submitter.refused == {}
    assert len(submitter.accepted) == N
    assert sorted(stored) == sorted(ids)  # a POST sent again was not stored twice
    assert lost == {}, diagnose(system, lost)
    assert overlapping == 0
    assert duplicates == {"same_text_twice": 0, "notification_key_twice": 0,
                          "row_sent_twice": 0, "sends_without_row": 0}
    # Every process came back on its own: the API answers, the relay publishes, and the
    # worker still assigns (a request submitted now is filled).
    assert httpx.get(system.system.api_url + "/healthz", timeout=5).status_code == 200
    late = system.request(families[0], day_offset=N + 2)["id"]
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        system.wait_status(late, "assigned", timeout=60)


def _cluster() -> list[str] | None:
    """`pg_ctlcluster … restart` for the local cluster, where this machine has one and the
    run may restart it (.ci/run sets DOLBOM_FAULTS_RESTART_POSTGRES: nothing else uses the
    server during CI; on a shared developer machine a restart would break other runs)."""
    import os
    import shutil

    versions = Path("/etc/postgresql")
    if not os.environ.get("DOLBOM_FAULTS_RESTART_POSTGRES") or not shutil.which("pg_ctlcluster") \
            or not versions.is_dir() or not any(versions.iterdir()):
        return None
    version = sorted(p.name for p in versions.iterdir())[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


def test_postgres_server_restarted_under_load_loses_nothing_and_duplicates_nothing(
        system: Running) -> None:
    """Invariant as above, with the real thing: the PostgreSQL server itself restarts (every
    connection dies, new ones are refused until it is back), while requests arrive."""
    import subprocess

    restart = _cluster()
    if restart is None:
        pytest.skip("set DOLBOM_FAULTS_RESTART_POSTGRES=1 on a machine whose PostgreSQL "
                    "this run may restart (.ci/run does)")
    carers, families = population(system, carers=4, families=6, tag="610")
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        submitter = Submitter(system, families, N, pause_s=0.05).start()
        wait_for(lambda: len(submitter.accepted) >= N // 3, 90, "requests before the restart")
        started = time.monotonic()
        subprocess.run(restart, check=True, timeout=120)
        restart_s = time.monotonic() - started
        submitter.join(timeout=150)
        ids = list(submitter.accepted.values())
        statuses = wait_all(system, ids, "assigned", timeout=120)
    stored = request_rows(system)
    lost = {i: s for i, s in statuses.items() if s != "assigned"}
    overlapping = overlapping_assignments(system, ids)
    duplicates = duplicate_sms(system)
    report("postgres server restarted", submitted=N, accepted=len(ids), stored=len(stored),
           final=N - len(lost), lost=len(lost), overlapping_assignments=overlapping,
           duplicate_sms=sum(duplicates.values()), faults_injected=1,
           restart_s=round(restart_s, 1),
           posts_without_answer=sum(submitter.failed_posts.values()),
           errors=dict(submitter.errors))
    assert submitter.refused == {}
    assert len(submitter.accepted) == N
    assert sorted(stored) == sorted(ids)
    assert lost == {}, diagnose(system, lost)
    assert overlapping == 0
    assert duplicates == {"same_text_twice": 0, "notification_key_twice": 0,
                          "row_sent_twice": 0, "sends_without_row": 0}
