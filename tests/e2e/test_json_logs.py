"""DOLBOM_LOG_FORMAT=json: every line each child process writes is one JSON object.

A log collector reads the worker's, the relay's and the API's output line by line, so a
single stray line (a terminal control sequence, a bare print, a traceback) breaks it. Phone
numbers in any line keep only their last four digits. The broker's own log (Tansu, not
Python) is not ours and is left out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from infra.harness import running_system

pytestmark = pytest.mark.e2e

CARER, PARENT, STRANGER = "010-4321-8765", "010-2468-1357", "010-5555-1234"


def digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


def test_every_child_writes_json_lines_with_phones_masked(tmp_path: Path) -> None:
    with running_system(tmp_path, log_format="json", sms_rate_per_s=50) as system:
        system.carer("김로그", CARER)
        family = system.family(PARENT)
        request = system.request(family)
        offer = system.sms_to("+82" + digits(CARER)[1:], "답장:네", timeout=60)
        code = re.search(r"답장:네 (\d{4})", offer["body"])
        assert code is not None, offer["body"]
        assert system.reply("+82" + digits(CARER)[1:], f"YES {code.group(1)}").status_code == 200
        system.wait_status(request["id"], "assigned", timeout=60)
        # A stranger's SMS that carries a number in its text: stored, answered, logged.
        assert system.reply("+82" + digits(STRANGER)[1:],
                            f"제 번호는 {STRANGER} 입니다").status_code == 200
        logs = {child.name: child.log_path for child in system.system.children.values()}
    # Read after the system stopped, so shutdown lines are checked too.
    assert set(logs) == {"worker", "relay", "api"}
    counted: dict[str, int] = {}
    for name, path in logs.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines, f"{name} wrote nothing"
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"{name}.log line {number} is not JSON: {line[:200]!r}")
            assert isinstance(entry, dict), line
            assert {"time", "level", "logger", "message"} <= set(entry), line
            for phone in (CARER, PARENT, STRANGER):
                local, e164 = digits(phone), "82" + digits(phone)[1:]
                flat = digits(line)
                assert local not in flat and e164 not in flat, \
                    f"{name}.log line {number} has a phone number unmasked: {line[:200]}"
        counted[name] = len(lines)
    text = "\n".join(path.read_text(encoding="utf-8") for path in logs.values())
    # The numbers were logged (masked), so the check above had something to check.
    assert re.search(r"\*{4,}8765", text) and re.search(r"\*{4,}1234", text)
    print(f"\nJSON lines checked: {counted}")
