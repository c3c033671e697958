"""Shared pieces of the fault tests: a population, carers that answer YES, the counts."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx

from infra.harness import Running, wait_for
from infra.supervisor import Child

OFFER = re.compile(r"답장:네 (\d{4})/")


@contextmanager
def carers_answering_yes(system: Running, phones: set[str]) -> Iterator[list[str]]:
    """Every carer in `phones` answers each offer SMS with YES <code>, once per message."""
    stop = threading.Event()
    answered: list[str] = []

    def run() -> None:
        seen: set[str] = set()
        while not stop.is_set():
            for msg in list(system.stub.messages):
                if msg["sid"] in seen:
                    continue
                seen.add(msg["sid"])
                found = OFFER.search(msg["body"])
                if msg["to"] in phones and found:
                    try:
                        system.reply(msg["to"], f"YES {found.group(1)}")
                        answered.append(found.group(1))
                    except httpx.HTTPError:
                        seen.discard(msg["sid"])  # try again next round
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield answered
    finally:
        stop.set()
        thread.join(5)


def population(system: Running, carers: int, families: int,
               tag: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cs = [system.carer(f"결함{tag}{i}", f"010-6{tag}-{i:04d}") for i in range(carers)]
    fs = [system.family(f"010-7{tag}-{i:04d}") for i in range(families)]
    return cs, fs


def kill(child: Child) -> None:
    """SIGKILL, no goodbye: no offset commit, no producer flush, no log line."""
    assert child.process is not None
    child.process.kill()
    child.process.wait(10)
    child.stop()  # closes the log file; the process is already gone


def restart(system: Running, name: str) -> Child:
    """Start a role again with the very argv and environment LocalSystem gave it."""
    old = system.system.children[name]
    args = old.argv[old.argv.index("infra.cli") + 1:]
    return system.system.start_role(name, args, old.env)


def database(system: Running) -> sqlite3.Connection:
    url = system.system.settings.database_url
    return sqlite3.connect(url.removeprefix("sqlite:///"), timeout=10)


def wait_all(system: Running, ids: list[str], status: str, timeout: float) -> dict[str, str]:
    """Wait until every request has `status`; return the status of each at the end."""
    def statuses() -> dict[str, str]:
        return {i: system.get_request(i)["status"] for i in ids}
    with suppress(TimeoutError):
        wait_for(lambda: all(s == status for s in statuses().values()), timeout,
                 f"{len(ids)} requests to become {status}")
    return statuses()


def overlapping_assignments(system: Running, ids: list[str]) -> int:
    """Pairs of assigned requests that share a carer and overlap in time (must be 0)."""
    spans: dict[str, list[tuple[str, str]]] = {}
    for i in ids:
        d = system.get_request(i)
        if d["status"] == "assigned" and d.get("carer"):
            spans.setdefault(d["carer"]["id"], []).append((d["start"], d["end"]))
    pairs = 0
    for carer_spans in spans.values():
        carer_spans.sort()
        pairs += sum(1 for a, b in zip(carer_spans, carer_spans[1:], strict=False) if b[0] < a[1])
    return pairs


def duplicate_sms(system: Running) -> dict[str, int]:
    """SMS sent twice, seen three ways (each must be 0):
    - the stub got the same text twice for one phone;
    - the notifications table holds two rows for one (event, recipient, kind);
    - one notification row owns two messages at the stub, or a message owns no row. A row
      owns a message by its recorded sid or, while its send is uncertain (a worker killed
      between the gateway call and recording the sid: `sending`), by recipient and body."""
    time.sleep(1.0)  # let the last deliveries land
    sent = list(system.stub.messages)
    by_text = Counter((m["to"], m["body"]) for m in sent)
    with database(system) as db:
        keys = db.execute("SELECT event_id, recipient, kind, COUNT(*) FROM notifications "
                          "GROUP BY event_id, recipient, kind HAVING COUNT(*) > 1").fetchall()
        rows = db.execute("SELECT id, sid, recipient, body FROM notifications").fetchall()
    by_sid = {sid: row_id for row_id, sid, _, _ in rows if sid}
    by_content = {(to, body): row_id for row_id, sid, to, body in rows if not sid and body}
    owners: Counter[str] = Counter()
    orphans = 0
    for msg in sent:
        owner = by_sid.get(msg["sid"]) or by_content.get((msg["to"], msg["body"]))
        if owner is None:
            orphans += 1
        else:
            owners[owner] += 1
    return {"same_text_twice": sum(n - 1 for n in by_text.values() if n > 1),
            "notification_key_twice": len(keys),
            "row_sent_twice": sum(n - 1 for n in owners.values() if n > 1),
            "sends_without_row": orphans}


def diagnose(system: Running, lost: dict[str, str]) -> str:
    """What a stuck request looks like: its offers, its SMS rows, its timeline."""
    lines = []
    with database(system) as db:
        for i in lost:
            d = system.get_request(i)
            notes = db.execute("SELECT kind, recipient, status, attempts FROM notifications "
                               "WHERE request_id = ?", (i,)).fetchall()
            lines.append(f"{i} {d['status']} code={d['code']} offers="
                         f"{[(o['carer_id'][:6], o['status']) for o in d['offers']]} "
                         f"notes={notes} timeline={[e['type'] for e in d['timeline']]}")
    return "\n".join(lines)
