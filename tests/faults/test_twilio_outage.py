"""Fault injection: Twilio answers 500, then 429, then times out, for a while; then recovers.

The real twilio client in the worker talks to infra/twilio_stub.py. Twenty sends in a row
fail, mixed: 500 (outcome unknown: maybe taken), 429 (not taken, retry later), a read
timeout after which Twilio *had* taken the message, and a read timeout after which it had
not. Then every send succeeds again. Counts asserted: requests submitted = requests that
end `assigned`; overlapping assignments per carer 0; SMS accepted by Twilio per
(event, recipient, kind) exactly 1 for every row we sent, 0 for every row we did not; no SMS
row left pending, unknown or failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.harness import Running, running_system, wait_for
from infra.twilio_stub import TwilioStub
from notifiers.gateway import SmsSendError
from notifiers.twilio_gateway import TwilioGateway
from tests.faults._flow import (
    carers_answering_yes,
    diagnose,
    duplicate_sms,
    overlapping_assignments,
    population,
    query,
    report,
    wait_all,
)

N = 6
# The gateway's read timeout is 10 s (notifiers/factory.py): a 12 s hang is a timeout.
HANG_S = 12.0


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Running]:
    with running_system(tmp_path, sweep_interval_s=0.5, sms_rate_per_s=50) as running:
        yield running


def _outage(stub: TwilioStub) -> int:
    """20 failures in a row, mixed; returns how many were injected."""
    stub.fail_next(3, 500, 20500)
    stub.fail_next(3, 429, 20429)
    stub.fail_next_timeout(1, HANG_S)  # taken by Twilio, answer lost
    stub.fail_next(2, 503, 20503)
    stub.fail_next(3, 429, 20429)
    stub.fail_next_timeout(1, HANG_S, accepted=False)  # nothing taken, answer lost
    stub.fail_next(2, 500, 20500)
    stub.fail_next(2, 429, 20429)
    stub.fail_next_timeout(1, HANG_S)
    stub.fail_next(1, 500, 20500)
    stub.fail_next_timeout(1, HANG_S, accepted=False)
    return stub.pending_failures


@pytest.mark.e2e
def test_twilio_outage_every_sms_goes_out_exactly_once_after_recovery(
        system: Running) -> None:
    """Invariant: a send is never repeated blindly. A 429 was not taken and is retried; a
    500 or a timeout may have been taken, so it is looked up at Twilio first and sent again
    only if Twilio has no such message. So every SMS arrives once, including those whose
    send timed out after Twilio had taken them, and none is given up on."""
    carers, families = population(system, carers=4, families=3, tag="500")
    injected = _outage(system.stub)
    with carers_answering_yes(system, {c["phone"] for c in carers}):
        ids = [system.request(families[i % len(families)], day_offset=1 + i)["id"]
               for i in range(N)]
        wait_for(lambda: system.stub.pending_failures == 0, 60, "the outage to be used up")
        # Retries wait 5-20 s, uncertain sends are looked up after 20 s.
        statuses = wait_all(system, ids, "assigned", timeout=150)
        # The last SMS (the parents' "assigned", the carers' acks) settle after that.
        wait_for(lambda: not query(system, "SELECT id FROM notifications WHERE status IN "
                                           "('pending', 'sending', 'unknown')"),
                 120, "every SMS row to settle")
    lost = {i: s for i, s in statuses.items() if s != "assigned"}
    rows = query(system, "SELECT id, kind, recipient, status, sid FROM notifications")
    by_status = Counter(status for _, _, _, status, _ in rows)
    accepted = system.stub.messages
    per_sid = Counter(m["sid"] for m in accepted)
    sent_rows = [r for r in rows if r[3] in ("sent", "delivered")]
    attempts = system.stub.attempts
    failed_attempts = sum(a["http_status"] >= 400 for a in attempts)
    hung_but_taken = [a["sid"] for a in attempts if a["injected"] == "hang"]
    duplicates = duplicate_sms(system)
    overlapping = overlapping_assignments(system, ids)
    report("twilio outage", submitted=N, final=N - len(lost), lost=len(lost),
           overlapping_assignments=overlapping, duplicate_sms=sum(duplicates.values()),
           faults_injected=injected, failed_attempts=failed_attempts,
           accepted_at_twilio=len(accepted), rows=dict(by_status))
    assert lost == {}, diagnose(system, lost)
    assert overlapping == 0
    assert duplicates == {"same_text_twice": 0, "notification_key_twice": 0,
                          "row_sent_twice": 0, "sends_without_row": 0}
    # Nothing given up on, nothing left hanging: every row was sent or had no reason to be
    # (an offer closed before its turn came).
    assert set(by_status) <= {"sent", "delivered", "skipped"}, diagnose(system, dict.fromkeys(ids))
    # Exactly one accepted message per sent row, and none for any other row.
    assert len(accepted) == len(sent_rows) == len({r[4] for r in sent_rows})
    assert {r[4] for r in sent_rows} == set(per_sid)
    # Each parent got "received" and "assigned" once for each of their requests.
    for family in families:
        phone = family["guardian"]["phone"]
        kinds = Counter(k for _, k, rcp, st, _ in rows if rcp == phone and st in ("sent",
                                                                                  "delivered"))
        assert kinds["request_received"] == kinds["assigned"] == N // len(families), kinds
    # The failures did hit: every injected one met a send.
    assert Counter(a["injected"] for a in attempts if a["injected"]) == {
        "error": injected - 4, "hang": 2, "hang_not_taken": 2}
    # The two SMS Twilio took while the answer was lost are the rows' own messages: looked
    # up, recorded, never sent again (same_text_twice above is 0).
    assert len(hung_but_taken) == 2
    assert set(hung_but_taken) <= {r[4] for r in sent_rows}


def test_stub_timeout_either_took_the_message_or_did_not(tmp_path: Path) -> None:
    """The two timeouts the outage test relies on, seen from the real twilio client."""
    with TwilioStub() as stub:
        gateway = TwilioGateway(stub.account_sid, stub.auth_token, from_number="+15005550006",
                                api_base_url=stub.base_url, timeout=0.5)
        stub.fail_next_timeout(1, 1.5)
        with pytest.raises(SmsSendError) as taken:
            gateway.send("+821012345678", "taken")
        assert taken.value.outcome_unknown
        assert [m["body"] for m in stub.messages] == ["taken"]
        assert gateway.find_sent("+821012345678", "taken", set()) is not None

        stub.fail_next_timeout(1, 1.5, accepted=False)
        with pytest.raises(SmsSendError) as lost:
            gateway.send("+821012345678", "not taken")
        assert lost.value.outcome_unknown
        wait_for(lambda: len(stub.attempts) == 2, 5, "the late answer")
        assert stub.attempts[1]["http_status"] == 500 and stub.attempts[1]["sid"] is None
        assert [m["body"] for m in stub.messages] == ["taken"]
        assert gateway.find_sent("+821012345678", "not taken", set()) is None
        assert stub.pending_failures == 0
