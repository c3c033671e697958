"""The visit-mode engine through the real broker, worker timers, relay, API and Twilio stub:
an unanswered wave expires and the next carer is asked, then the SLA passes and the parent
and the dispatcher are told, honestly, while matching goes on."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from infra.harness import running_system, wait_for

pytestmark = pytest.mark.e2e

HOSPITAL_TOML = Path(__file__).resolve().parents[2] / "dispatch" / "policies" / "hospital.toml"
DISPATCHER = "+821000000009"
PARENT = "+821077771001"


def fast_hospital_policy(folder: Path, *, escalate_after_s: int) -> Path:
    """A copy of the built-in hospital policy with a clock short enough to watch."""
    folder.mkdir()
    text = HOSPITAL_TOML.read_text(encoding="utf-8")
    for key, value in (("strategy", '"waves"'), ("wave_size", "1"), ("timeout_s", "2"),
                       ("escalate_after_s", str(escalate_after_s))):
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, key
    (folder / "hospital.toml").write_text(text, encoding="utf-8")
    return folder


def test_a_wave_expires_widens_and_then_the_request_escalates(tmp_path: Path) -> None:
    policy_dir = fast_hospital_policy(tmp_path / "policies", escalate_after_s=4)
    # 10 SMS/s: with 2-second answer windows, a 1/s send queue could let an offer go stale.
    with running_system(tmp_path / "system", policy_dir=policy_dir, sweep_interval_s=0.5,
                        dispatcher_phone=DISPATCHER, sms_rate_per_s=10) as system:
        carers = [system.carer(name, f"010-5555-100{i}")
                  for i, name in enumerate(("첫째", "둘째", "셋째"), 1)]
        phones = {carer["phone"]: carer for carer in carers}
        family = system.family("010-7777-1001")
        # The worker is consuming (its group has joined) once a carer's SMS gets an answer.
        assert system.reply(carers[0]["phone"], "출근").status_code == 200
        system.sms_to(carers[0]["phone"], "출근", timeout=60)

        created = system.request(family)
        code = created["code"]
        # Waves of one: a single carer is asked first, with the policy's 2-second window.
        first = system.stub.wait_for(lambda m: f"네 {code}" in m["body"], timeout=30)
        assert first["to"] in phones and int(first["validity_period"]) <= 2
        # Nobody answers: the timer expires the offer and widens to the next carer.
        second = system.stub.wait_for(
            lambda m: f"네 {code}" in m["body"] and m["to"] != first["to"], timeout=30)
        assert second["to"] in phones and second["received_at"] > first["received_at"]
        assert system.sms_count(first["to"], code) == 1

        detail = system.get_request(created["id"])
        offers = {o["carer_id"]: o for o in detail["offers"]}
        asked_first = offers[phones[first["to"]]["id"]]
        asked_second = offers[phones[second["to"]]["id"]]
        assert asked_first["status"] == "expired"
        assert datetime.fromisoformat(asked_second["created_at"]) >= \
            datetime.fromisoformat(asked_first["expires_at"])

        # Four seconds after the request: the parent hears the truth, the dispatcher is paged.
        told = system.sms_to(PARENT, "상황실", timeout=30)
        assert code in told["body"] and "못 찾았어요" in told["body"]
        paged = system.sms_to(DISPATCHER, code, timeout=30)
        assert "sla" in paged["body"]
        escalated = system.wait_status(created["id"], "escalated")
        types = [e["type"] for e in escalated["timeline"]]
        assert "offer_expired" in types and "escalated" in types

        # Matching goes on while escalated: the third carer is asked too. Then nobody is left:
        # no more offers, one parent SMS, and the sweep keeps ticking without repeating itself.
        wait_for(lambda: len(system.get_request(created["id"])["offers"]) == 3, 15,
                 "the third carer to be asked")
        wait_for(lambda: all(o["status"] != "open" for o in
                             system.get_request(created["id"])["offers"]), 15,
                 "the last offer to run out")
        later = system.get_request(created["id"])
        assert later["status"] == "escalated"
        assert all(system.sms_count(phone, f"네 {code}") == 1 for phone in phones)
        assert system.sms_count(PARENT, "상황실") == 1
        assert system.sms_count(DISPATCHER, code) == 1
