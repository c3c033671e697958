"""No log line of a whole run names the family: a hospital request end to end (broker,
worker, relay, API as child processes, SMS through the real twilio client to the stub), then
every log file the run wrote is searched for the guardian's phone number in any spelling, the
child's and the guardian's names, the hospital, the ward and the parent's note."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from infra.harness import running_system, tomorrow_at

pytestmark = pytest.mark.e2e

PHONE_LOCAL = "010-3131-4242"
SECRETS = ["+821031314242", "01031314242", PHONE_LOCAL, "3131-4242", "31314242",
           "1031314242", "김비밀", "최비밀", "비밀대학교병원", "비밀병동", "천식 발작"]


def test_a_whole_run_logs_nothing_that_names_the_family(tmp_path: Path) -> None:
    with running_system(tmp_path) as system:
        carer = system.carer("김돌봄", "010-5151-0001")
        resp = system.post("/v1/families", {
            "guardian": {"name": "최비밀", "phone": PHONE_LOCAL}, "district": "광산구",
            "children": [{"name": "김비밀", "birth_date": "2019-05-05"}],
            "consent": {"child_data": True, "health_data": True}})
        assert resp.status_code == 201, resp.text
        family = resp.json()
        start = tomorrow_at(10)
        resp = system.post("/v1/requests", {
            "service": "hospital", "family_id": family["id"],
            "child_id": family["children"][0]["id"], "start": start.isoformat(),
            "end": (start + timedelta(hours=3)).isoformat(), "notes": "천식 발작 이력",
            "location": {"hospital": "비밀대학교병원", "ward": "비밀병동 7층"}})
        assert resp.status_code == 202, resp.text
        created = resp.json()
        code = created["code"]
        system.sms_to(carer["phone"], code)  # the offer reached the carer
        assert system.reply(carer["phone"], f"네 {code}").status_code == 200
        system.wait_status(created["id"], "assigned")
        # The parent writes: a status question and free text naming the child.
        assert system.reply("+821031314242", "상태").status_code == 200
        assert system.reply("+821031314242", "김비밀 엄마 최비밀인데요 천식 발작 때문에 "
                                             "연락드려요 010-3131-4242").status_code == 200
        assert system.reply(carer["phone"], f"도착 {code}").status_code == 200
        assert system.reply(carer["phone"], f"완료 {code}").status_code == 200
        system.wait_status(created["id"], "completed")
        system.sms_to("+821031314242", "완료", timeout=30)
        # Bad input gets logged too: a family with a mistyped number.
        bad = system.post("/v1/families", {
            "guardian": {"name": "최비밀", "phone": "010-3131-42429"}, "district": "광산구",
            "children": [{"name": "김비밀", "birth_date": "2019-05-05"}],
            "consent": {"child_data": True}})
        assert bad.status_code == 422
        request_id = created["id"]

    logs = {path.name: path.read_text("utf-8", errors="replace")
            for path in sorted(tmp_path.rglob("*.log"))}
    assert {"worker.log", "relay.log", "api.log"} <= set(logs)
    everything = "\n".join(logs.values())
    # The logs did record this run (so finding nothing below means something).
    assert request_id in everything or code in everything or "4242" in everything, logs
    leaks = {secret: [name for name, text in logs.items() if secret in text]
             for secret in SECRETS}
    assert {s: files for s, files in leaks.items() if files} == {}
    # No unmasked phone number of anyone (carers too) in any spelling.
    assert not re.search(r"(?<![\w*])(?:\+82|0)1\d[ -]?\d{3,4}[ -]?\d{4}", everything)
