"""A running local system driven as its users would: HTTP with a token, SMS through Twilio.

The end-to-end tests and `dolbom bench` use it: real broker, worker, relay and API as
child processes (the same LocalSystem as `dolbom up`), the real twilio client pointed at
a local Twilio-compatible stub, webhooks signed like Twilio signs them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from dispatch import commands as c
from dispatch.bootstrap import bootstrap
from dispatch.db import make_engine
from dispatch.domain.policy import load_policies
from infra.broker import free_port
from infra.supervisor import LocalSystem
from infra.twilio_stub import DEFAULT_FROM_NUMBER, TwilioStub, sign
from schemas.config import Settings

SEOUL = ZoneInfo("Asia/Seoul")


class Running:
    def __init__(self, system: LocalSystem, stub: TwilioStub, token: str) -> None:
        self.system = system
        self.stub = stub
        self.http = httpx.Client(base_url=system.api_url, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})

    # -- API ----------------------------------------------------------------------
    def post(self, path: str, json: Any, **kw: Any) -> httpx.Response:
        return self.http.post(path, json=json, **kw)

    def carer(self, name: str, phone: str, districts: list[str] | None = None,
              skills: list[str] | None = None) -> dict[str, Any]:
        r = self.post("/v1/carers", {"name": name, "phone": phone,
                                     "districts": districts or ["광산구"],
                                     "skills": skills if skills is not None else ["hospital"]})
        assert r.status_code == 201, r.text
        carer = r.json()
        assert self.http.put(f"/v1/carers/{carer['id']}/duty",
                             json={"on_duty": True}).status_code == 200
        return carer

    def family(self, phone: str, birth_date: str = "2019-05-05") -> dict[str, Any]:
        r = self.post("/v1/families", {
            "guardian": {"name": "박보호", "phone": phone}, "district": "광산구",
            "children": [{"name": "박아이", "birth_date": birth_date}],
            "consent": {"child_data": True, "health_data": True}})
        assert r.status_code == 201, r.text
        return r.json()

    def request(self, family: dict[str, Any], *, day_offset: int = 1, start_hour: int = 10,
                hours: int = 3) -> dict[str, Any]:
        start = tomorrow_at(start_hour, day_offset)
        r = self.post("/v1/requests", {
            "service": "hospital", "family_id": family["id"],
            "child_id": family["children"][0]["id"], "start": start.isoformat(),
            "end": (start + timedelta(hours=hours)).isoformat(),
            "location": {"hospital": "전남대병원", "ward": "소아병동 5층"}})
        assert r.status_code == 202, r.text
        return r.json()

    def get_request(self, request_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/requests/{request_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_status(self, request_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
        return wait_for(lambda: (d := self.get_request(request_id))["status"] == status and d,
                        timeout, f"request {request_id} to become {status}")

    # -- SMS ----------------------------------------------------------------------
    def reply(self, from_phone: str, body: str, sid: str | None = None) -> httpx.Response:
        """A carer's or parent's SMS, posted and signed the way Twilio does it."""
        url = self.system.api_url + "/webhooks/twilio/sms"
        params = {"MessageSid": sid or "SM" + uuid.uuid4().hex, "AccountSid": self.stub.account_sid,
                  "From": from_phone, "To": DEFAULT_FROM_NUMBER, "Body": body, "NumMedia": "0"}
        return httpx.post(url, data=params, timeout=10, headers={
            "X-Twilio-Signature": sign(url, params, self.stub.auth_token)})

    def sms_to(self, phone: str, contains: str, timeout: float = 30) -> dict[str, Any]:
        return self.stub.wait_for(lambda m: m["to"] == phone and contains in m["body"],
                                  timeout=timeout)

    def sms_count(self, phone: str, contains: str = "") -> int:
        return sum(1 for m in self.stub.messages if m["to"] == phone and contains in m["body"])


def tomorrow_at(hour: int, day_offset: int = 1) -> datetime:
    day = datetime.now(SEOUL).date() + timedelta(days=day_offset)
    return datetime(day.year, day.month, day.day, hour, tzinfo=SEOUL)


def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"waited {timeout}s for {what}")


@contextmanager
def running_system(tmp: Path, *, stub: TwilioStub | None = None,
                   **settings: Any) -> Iterator[Running]:
    """The whole system on `tmp`, with `settings` (Settings fields) over the defaults;
    `stub`: a TwilioStub (subclass) of the caller's, e.g. one that reports every send."""
    port = free_port()
    with stub or TwilioStub() as stub:
        settings.setdefault("database_url", f"sqlite:///{tmp / 'dolbom.db'}")
        settings.setdefault("intake_rate_per_min", 1e9)  # tests and the bench post fast
        config = Settings(public_url=f"http://127.0.0.1:{port}",
                          worker_id=f"dolbom-e2e-{uuid.uuid4().hex[:6]}",
                          data_dir=tmp / "var", **settings)
        system = LocalSystem(config, var=tmp / "var", port=port, extra_env=stub.env())
        try:
            system.start()
            system.wait_until_ready()
            token = bootstrap(make_engine(config.database_url), load_policies()).handle(
                c.CreateToken(name="e2e dispatcher", role="dispatcher"))
            yield Running(system, stub, token)
        except BaseException:
            for log in sorted((tmp / "var").glob("*.log")):
                print(f"==== {log.name}\n{log.read_text(errors='replace')[-4000:]}")
            raise
        finally:
            system.stop()


@contextmanager
def fresh_postgres(admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres",
                   prefix: str = "dolbom_run_") -> Iterator[str]:
    """An empty PostgreSQL database for one run (`dolbom up` migrates it), dropped after."""
    import psycopg

    name = prefix + uuid.uuid4().hex[:10]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)
