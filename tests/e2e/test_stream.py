"""`GET /v1/stream` against the running system: live events, catch-up after a reconnect, auth."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest

from infra.harness import Running, running_system

pytestmark = pytest.mark.e2e


@dataclass
class Event:
    id: int
    type: str
    data: dict[str, Any]


@dataclass
class Listener:
    """Reads one SSE connection in a thread; events and comments land in queues."""

    response: httpx.Response
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    comments: queue.Queue[str] = field(default_factory=queue.Queue)

    def run(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self.response.iter_lines():
                if line.startswith(":"):
                    self.comments.put(line)
                elif line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                elif "id" in fields:
                    self.events.put(Event(int(fields["id"]), fields["event"],
                                          json.loads(fields["data"])))
                    fields = {}
                else:
                    fields = {}
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test

    def until(self, request_id: str, event_type: str, timeout: float = 30) -> list[Event]:
        """Every event read up to and including `event_type` for `request_id`."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(event)
            if event.type == event_type and event.data.get("request_id") == request_id:
                return seen
        raise TimeoutError(f"no {event_type} for {request_id}; saw {[e.type for e in seen]}")

    def drain(self, wait: float) -> list[Event]:
        got: list[Event] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                got.append(self.events.get(timeout=0.1))
        return got


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with mock.patch.dict(os.environ, {"DOLBOM_STREAM_HEARTBEAT_S": "1",
                                      "DOLBOM_STREAM_POLL_S": "0.1"}), \
            running_system(tmp_path_factory.mktemp("stream")) as running:
        yield running


def _listen(client: httpx.Client, **kw: Any) -> Generator[Listener, None, None]:
    with client.stream("GET", "/v1/stream", timeout=httpx.Timeout(10, read=30), **kw) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        listener = Listener(r)
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        yield listener


def test_live_events_then_a_reconnect_replays_what_was_missed_once(system: Running) -> None:
    system.carer("스트림", "010-4444-0001")
    family = system.family("010-4444-0901")
    time.sleep(0.5)  # the stream starts at the newest row: the set-up above is not shown
    first = _listen(system.http)
    listener = next(first)
    created = system.request(family)
    seen = listener.until(created["id"], "request.matching")
    mine = [e for e in seen if e.data.get("request_id") == created["id"]]
    assert [e.type for e in mine][:1] == ["request.received"]
    assert "request.received" in [e.type for e in mine]
    ids = [e.id for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Nothing from before the connection (the carer's duty change) was sent.
    assert "carer.duty_changed" not in [e.type for e in seen]
    assert all("phone" not in json.dumps(e.data) for e in seen)  # ids only
    first.close()

    received = next(e for e in mine if e.type == "request.received")
    again = _listen(system.http, headers={"Last-Event-ID": str(received.id)})
    replayed = next(again).drain(2.0)
    again.close()
    missed = [e.id for e in seen if e.id > received.id]
    replayed_ids = [e.id for e in replayed]
    assert received.id not in replayed_ids
    assert replayed_ids[:len(missed)] == missed  # in order, each once
    assert len(set(replayed_ids)) == len(replayed_ids)
    by_id = {e.id: e for e in replayed}
    assert all(by_id[e.id].type == e.type and by_id[e.id].data == e.data
               for e in seen if e.id > received.id)

    # The query parameter does the same (for a first connection that knows where it was).
    q = _listen(system.http, params={"last_event_id": received.id})
    assert [e.id for e in next(q).drain(1.0)][:len(missed)] == missed
    q.close()


def test_an_idle_stream_sends_heartbeats(system: Running) -> None:
    gen = _listen(system.http)
    listener = next(gen)
    assert listener.comments.get(timeout=5).startswith(": heartbeat")
    gen.close()


def test_the_stream_needs_a_dispatcher(system: Running) -> None:
    base = system.system.api_url
    assert httpx.get(base + "/v1/stream", timeout=5).status_code == 401
    assert httpx.get(base + "/v1/stream", timeout=5,
                     headers={"Authorization": "Bearer dlb_nope"}).status_code == 401


def test_cookie_sign_in_then_the_stream_and_api_work_with_the_cookie_alone(
        system: Running) -> None:
    token = system.http.headers["Authorization"].split()[1]
    base = system.system.api_url
    assert httpx.post(base + "/v1/session", data={"token": "dlb_wrong"},
                      timeout=5).status_code == 401
    assert httpx.post(base + "/v1/session", json={"token": ""}, timeout=5).status_code == 401

    with httpx.Client(base_url=base, timeout=10) as browser:
        r = browser.post("/v1/session", data={"token": token})
        assert r.status_code == 200 and r.json()["role"] == "dispatcher"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        assert token not in r.headers["set-cookie"]
        assert browser.get("/v1/carers").status_code == 200

        family = system.family("010-4444-0902")
        gen = _listen(browser)
        listener = next(gen)
        created = system.request(family)
        assert listener.until(created["id"], "request.received")
        gen.close()

        # A forged cookie (right id, wrong signature) is refused.
        value = browser.cookies["dolbom_session"]
        forged = value.rsplit(".", 1)[0] + "." + "0" * 64
        assert httpx.get(base + "/v1/carers", cookies={"dolbom_session": forged},
                         timeout=5).status_code == 401

        assert browser.delete("/v1/session").status_code == 204
        assert browser.get("/v1/carers").status_code == 401
        assert browser.get("/v1/stream").status_code == 401


class _Client:
    """Stands in for the request: connected for `polls` polls."""

    def __init__(self, polls: int) -> None:
        self.polls = polls

    async def is_disconnected(self) -> bool:
        self.polls -= 1
        return self.polls < 0


def test_a_row_committed_late_with_a_lower_id_is_still_sent_once(tmp_path: Path) -> None:
    """PostgreSQL can make id 2 visible after id 3: the stream must not skip it."""
    import asyncio
    from datetime import UTC, datetime

    from api.stream import events
    from dispatch import orm
    from dispatch.db import make_engine
    from schemas.envelope import Envelope

    engine = make_engine(f"sqlite:///{tmp_path / 'gap.db'}")
    orm.metadata.create_all(engine, tables=[orm.outbox])

    def insert(row_id: int) -> None:
        env = Envelope(type="request.received", version=1, key="k", occurred_at=datetime.now(UTC),
                       payload={"request_id": f"r{row_id}", "service": "hospital"})
        with engine.begin() as conn:
            conn.execute(orm.outbox.insert().values(
                id=row_id, event_id=env.event_id, topic="t", key="k", type=env.type,
                body=env.to_bytes(), created_at=datetime.now(UTC)))

    async def collect() -> list[str]:
        got: list[str] = []
        stream = events(_Client(polls=6), engine, 0, poll_s=0.01, heartbeat_s=60)  # type: ignore[arg-type]
        async for chunk in stream:
            got.append(chunk)
            if "id: 3" in chunk:
                insert(2)  # committed after 3 was sent
        return got

    insert(1)
    insert(3)
    sent = [int(line[4:]) for chunk in asyncio.run(collect())
            for line in chunk.splitlines() if line.startswith("id: ")]
    assert sent == [1, 3, 2]
    engine.dispose()
