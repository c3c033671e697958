"""`dolbom up` as a new user runs it: it comes up, answers, and leaves nothing behind."""

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

pytestmark = pytest.mark.e2e


def _children(pid: int) -> set[int]:
    """Every process descended from `pid`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], int, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOLBOM_", "TWILIO_"))}
    proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "up", "--port", str(port)],
                            cwd=tmp_path, env={**env, "PYTHONPATH": str(Path.cwd())},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline, seen = time.monotonic() + 90, []
    token = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if "token" in line and "dlb_" in line:
            token = line.split()[1]
        if "Ctrl-C stops everything" in line:
            return proc, port, token
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("dolbom up did not come up:\n" + "".join(seen))


def test_up_serves_the_api_and_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    proc, port, token = _start(tmp_path)
    children = _children(proc.pid)
    assert len(children) >= 4  # broker, worker, relay, api
    r = httpx.get(f"http://127.0.0.1:{port}/v1/carers",
                  headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200 and r.json() == []
    assert httpx.get(f"http://127.0.0.1:{port}/console", timeout=10).status_code == 200
    assert (tmp_path / "var" / "dolbom.db").exists()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)]


def test_a_killed_supervisor_leaves_no_orphans(tmp_path: Path) -> None:
    proc, _, _ = _start(tmp_path)
    children = _children(proc.pid)
    assert children
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)]


def test_a_policy_file_with_a_mistake_stops_up_naming_file_and_field(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "hospital.toml").write_text(
        'id = "hospital"\nlabel = "x"\nmode = "visit"\nmin_age_months = 0\n'
        'max_age_months = 155\nhours = { daily = ["08:00-2O:00"] }\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOLBOM_", "TWILIO_"))}
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "up", "--port", str(free_port())], cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path.cwd()), "DOLBOM_POLICY_DIR": str(policies)},
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "hospital.toml" in done.stderr and "hours" in done.stderr
    assert "Traceback" not in done.stderr
