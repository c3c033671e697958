"""Shared pieces of the fault tests: a population, carers that answer YES, the counts."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.pool import NullPool

from infra.harness import Running, tomorrow_at, wait_for
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
                        # One MessageSid per answer, so a retried webhook is the same SMS.
                        answer = system.reply(msg["to"], f"YES {found.group(1)}",
                                              sid="SMyes" + msg["sid"][2:])
                    except httpx.HTTPError:
                        seen.discard(msg["sid"])  # try again next round
                        continue
                    if answer.status_code >= 500:
                        # Not stored (the database was away): Twilio would call the
                        # messaging fallback URL; the phone here simply tries again.
                        seen.discard(msg["sid"])
                        continue
                    answered.append(found.group(1))
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


def query(system: Running, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows from the run's database, SQLite or PostgreSQL (`?` placeholders)."""
    if system.system.settings.database_url.startswith("sqlite"):
        with database(system) as db:
            return db.execute(sql, params).fetchall()
    with postgres_connect(system) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()


def notification_rows(system: Running) -> list[tuple[Any, ...]]:
    """(id, sid, recipient, body) of every SMS row, the body decrypted (it is encrypted at
    rest: dispatch/encryption.py) with the run's own key, through the run's settings."""
    from sqlalchemy import select

    from dispatch import orm
    from dispatch.db import make_engine

    settings = system.system.settings
    engine = make_engine(settings.database_url, settings=settings, poolclass=NullPool)
    n = orm.notifications.c
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(n.id, n.sid, n.recipient, n.body))]
    finally:
        engine.dispose()


def wait_all(system: Running, ids: list[str], status: str, timeout: float) -> dict[str, str]:
    """Wait until every request has `status`; return the status of each at the end."""
    def statuses() -> dict[str, str]:
        return {i: system.get_request(i)["status"] for i in ids}
    with suppress(TimeoutError):
        wait_for(lambda: all(s == status for s in statuses().values()), timeout,
                 f"{len(ids)} requests to become {status}")
    return statuses()


def unsettled_sms(system: Running, timeout: float) -> dict[str, int]:
    """Wait until no SMS is left pending, claimed or uncertain; return what is left by
    status (empty when all went, or were settled without sending)."""
    def left() -> dict[str, int]:
        return {status: count for status, count in query(
            system, "SELECT status, COUNT(*) FROM notifications"
                    " WHERE status IN ('pending', 'sending', 'unknown') GROUP BY status")}
    with suppress(TimeoutError):
        wait_for(lambda: not left(), timeout, "every SMS to be sent or settled")
    return left()


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
    keys = query(system, "SELECT event_id, recipient, kind, COUNT(*) FROM notifications "
                         "GROUP BY event_id, recipient, kind HAVING COUNT(*) > 1")
    rows = notification_rows(system)
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
    for i in lost:
        d = system.get_request(i)
        notes = query(system, "SELECT kind, recipient, status, attempts FROM notifications "
                              "WHERE request_id = ?", (i,))
        lines.append(f"{i} {d['status']} code={d['code']} offers="
                     f"{[(o['carer_id'][:6], o['status']) for o in d['offers']]} "
                     f"notes={notes} timeline={[e['type'] for e in d['timeline']]}")
    return "\n".join(lines)


class Submitter:
    """Posts requests from a thread, each with its own Idempotency-Key, the way a careful
    client does: a POST that fails without an answer (connection refused or reset, 5xx) is
    sent again with the same key until it gets a 202, so it can never be created twice."""

    def __init__(self, system: Running, families: list[dict[str, Any]], count: int, *,
                 pause_s: float = 0.05, give_up_s: float = 90.0) -> None:
        self.system, self.families, self.count = system, families, count
        self.pause_s, self.give_up_s = pause_s, give_up_s
        self.accepted: dict[str, str] = {}  # idempotency key -> request id (from the 202)
        self.failed_posts: Counter[str] = Counter()  # key -> POSTs without a 202
        self.errors: Counter[str] = Counter()  # what went wrong, by kind
        self.refused: dict[str, str] = {}  # key -> a 4xx answer (must stay empty)
        self.posted = threading.Event()  # set after each 202, for a test to wait on
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Submitter:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the submitter is still posting"

    def body(self, i: int) -> dict[str, Any]:
        # One request a day: no two overlap, so any carer can fill any of them.
        family = self.families[i % len(self.families)]
        start = tomorrow_at(10, 1 + i)
        return {"service": "hospital", "family_id": family["id"],
                "child_id": family["children"][0]["id"], "start": start.isoformat(),
                "end": (start + timedelta(hours=3)).isoformat(),
                "location": {"hospital": "전남대병원", "ward": "소아병동 5층"}}

    def _run(self) -> None:
        headers = dict(self.system.http.headers)
        with httpx.Client(base_url=self.system.system.api_url, timeout=10,
                          headers=headers) as client:
            for i in range(self.count):
                key = f"fault-{uuid.uuid4().hex[:8]}-{i}"
                deadline = time.monotonic() + self.give_up_s
                while time.monotonic() < deadline:
                    try:
                        r = client.post("/v1/requests", json=self.body(i),
                                        headers={"Idempotency-Key": key})
                    except httpx.TransportError as exc:
                        self.errors[type(exc).__name__] += 1
                    else:
                        if r.status_code == 202:
                            self.accepted[key] = r.json()["id"]
                            self.posted.set()
                            break
                        if r.status_code < 500 and r.status_code != 429:
                            self.refused[key] = f"{r.status_code} {r.text[:200]}"
                            break
                        self.errors[f"http_{r.status_code}"] += 1
                    self.failed_posts[key] += 1
                    time.sleep(0.2)
                time.sleep(self.pause_s)


def postgres_connect(system: Running) -> Any:
    """A psycopg connection to the run's PostgreSQL database (database_url=fresh_postgres())."""
    import psycopg

    url = system.system.settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True)


def request_rows(system: Running) -> dict[str, str]:
    """Every stored request: id -> status, read from the database itself."""
    return {row[0]: row[1] for row in query(system, "SELECT id, status FROM requests")}


def report(name: str, **counts: Any) -> None:
    """The invariants' counts, printed where `pytest -s` (and a failure) shows them."""
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
