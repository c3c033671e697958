"""`dolbom demo` as a new user runs it: data appears, simulated carers fill requests, Ctrl-C
stops every process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infra.broker import free_port
from tests.e2e.test_up import _alive, _children

pytestmark = pytest.mark.e2e


def test_demo_fills_requests_through_simulated_carers_and_ctrl_c_stops_it(
        tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOLBOM_", "TWILIO_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "demo", "--port", str(port), "--fast"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(Path.cwd())},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    token = ""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if line.strip().startswith("token") and "dlb_" in line:
                token = line.split()[1]
            if "Ctrl-C stops everything" in line or (not line and proc.poll() is not None):
                break
        assert token, "dolbom demo did not come up:\n" + "".join(seen)
        children = _children(proc.pid)
        assert len(children) >= 4

        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                            headers={"Authorization": f"Bearer {token}"})
        carers = http.get("/v1/carers").json()
        assert len(carers) >= 30 and all(c["on_duty"] for c in carers)
        assert {d for c in carers for d in c["districts"]} == {"동구", "서구", "남구", "북구",
                                                                "광산구"}
        # Within a minute a hospital request is filled by a simulated carer's YES by SMS.
        deadline = time.monotonic() + 60
        filled: list[dict[str, object]] = []
        while time.monotonic() < deadline and not filled:
            filled = [r for r in http.get("/v1/requests", params={"service": "hospital"}).json()
                      if r["status"] == "assigned"]
            time.sleep(0.5)
        assert filled, "no hospital request was assigned within 60 s"
        detail = http.get(f"/v1/requests/{filled[0]['id']}").json()
        assert detail["carer"] is not None
        sms = http.get("/v1/sms/outbox").json()
        assert any(s["kind"] == "offer" for s in sms)
        assert http.get("/v1/sms/outbox", headers={"Authorization": ""}).status_code == 401

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
