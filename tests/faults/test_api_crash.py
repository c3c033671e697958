"""Fault injection: the API SIGKILLed while requests arrive, then started again.

A client posts requests one after another from a thread, each with its own
Idempotency-Key, and sends a POST that got no answer again with the same key. Counts
asserted: requests submitted (keys) = requests that got a 202 = requests stored (a retried
POST was not stored twice) = requests that end `assigned`; overlapping assignments per
carer 0; SMS per (event, recipient, kind) 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.harness import Running, running_system, wait_for
from tests.faults._flow import (
    Submitter,
    carers_answering_yes,
    diagnose,
    duplicate_sms,
    kill,
    overlapping_assignments,
    population,
    report,
    request_rows,
    restart,
    wait_all,
)

pytestmark = pytest.mark.e2e

N = 24
KILLS = 2


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Running]:
    with running_system(tmp_path, sweep_interval_s=0.5, sms_rate_per_s=50) as running:
        yield running


def _api_answers(system: Running) -> bool:
    try:
        return httpx.get(system.system.api_url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _answer_lost_then_retried(system: Running, client: Submitter) -> str:
    """POST with a read timeout too short for the answer: the API stores the request, the
    client never hears. Sent again with the same key, it is the same request, stored once."""
    url = system.system.api_url + "/v1/requests"
    body = client.body(N)  # its own day, after the submitter's
    headers = {**system.http.headers, "Idempotency-Key": "answer-lost-once"}
    before = len(request_rows(system))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=body, headers=headers,
                   timeout=httpx.Timeout(5.0, read=0.001))
    wait_for(lambda: len(request_rows(system)) == before + 1, 15, "the unanswered POST stored")
    again = httpx.post(url, json=body, headers=headers, timeout=10)
    assert again.status_code == 202, again.text
    assert len(request_rows(system)) == before + 1  # not a second request
    return str(again.json()["id"])


def test_api_sigkilled_while_requests_arrive_loses_none_and_creates_none_twice(
        system: Running) -> None:
    """Invariant: a 202 means stored (request, outbox row and the parent's SMS in one
    transaction), so a SIGKILL after it loses nothing; a POST cut off by the kill was either
    stored or not, and its retry with the same Idempotency-Key finds the stored one."""
    carers, families = population(system, carers=4, families=6, tag="400")
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        # First, for certain: a POST stored whose answer never came back, sent again.
        unanswered = _answer_lost_then_retried(system, Submitter(system, families, N + 1))
        submitter = Submitter(system, families, N, pause_s=0.02).start()
        for kill_no in range(KILLS):
            # Kill while the client is posting, a few requests into each third of the run.
            wait_for(lambda k=kill_no: len(submitter.accepted) >= 4 + k * N // 3, 60,
                     "requests to be accepted before the kill")
            kill(system.system.children["api"])
            restart(system, "api")
            wait_for(lambda: _api_answers(system), 60, "the restarted API")
        submitter.join(timeout=120)
        ids = [*submitter.accepted.values(), unanswered]
        statuses = wait_all(system, ids, "assigned", timeout=60)
    stored = request_rows(system)
    lost = {i: s for i, s in statuses.items() if s != "assigned"}
    overlapping = overlapping_assignments(system, ids)
    duplicates = duplicate_sms(system)
    report("api killed", submitted=N + 1, accepted=len(ids), stored=len(stored),
           final=len(ids) - len(lost), lost=len(lost), overlapping_assignments=overlapping,
           duplicate_sms=sum(duplicates.values()), faults_injected=KILLS,
           posts_without_answer=sum(submitter.failed_posts.values()),
           errors=dict(submitter.errors))
    assert submitter.refused == {}
    assert len(submitter.accepted) == N  # every key got its 202 in the end
    assert len(set(ids)) == N + 1  # two keys never share a request
    assert sorted(stored) == sorted(ids)  # nothing stored twice, nothing stored unanswered
    assert lost == {}, diagnose(system, lost)
    assert overlapping == 0
    assert duplicates == {"same_text_twice": 0, "notification_key_twice": 0,
                          "row_sent_twice": 0, "sends_without_row": 0}
    # The kills did land while the client was posting.
    assert sum(submitter.failed_posts.values()) >= KILLS
