"""`dolbom demo`: `dolbom up` plus demo data and simulated carers, so requests get filled.

Everything goes through the HTTP API with a dispatcher token, as a real client would: the
centres' shifts for tonight, 30 carers across the five districts (half of them qualified for
hospital care, all on duty), 10 families with consent. Then one thread plays the city: every
20–40 s a parent asks for care (hospital care while 08:00–20:00 Seoul time is open, else in
its next window; or a centre booking while a centre is open), and carers read their offers from
`GET /v1/sms/outbox` and answer YES (70%) or NO 5–40 s later through `POST /v1/console/sms`.
No Twilio account is needed: without one SMS go to the console gateway. `--fast` shrinks every
delay (for tests and impatient people).
"""

from __future__ import annotations

import heapq
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from dispatch.domain.hours import Window, open_intervals
from dispatch.domain.policy import ServicePolicy, load_policies
from infra.supervisor import LocalSystem, _local_dispatcher_token
from schemas.config import Settings

DISTRICTS = ("동구", "서구", "남구", "북구", "광산구")
SURNAMES = "김이박최정강조윤장임한오서신권황안송류홍"
GIVEN = ("민지", "서연", "지우", "하은", "수빈", "예린", "도윤", "현우", "지민", "유나", "은서", "다인")
HOSPITALS = ("전남대병원", "조선대병원", "광주기독병원", "광주보훈병원", "첨단병원")
CENTRE_STAFF = {"gwangju-main": 3, "gwangju-seogu": 2}


@dataclass(frozen=True)
class Pace:
    request_every_s: tuple[float, float]
    answer_after_s: tuple[float, float]
    poll_s: float
    yes_share: float = 0.7

    @classmethod
    def of(cls, fast: bool) -> Pace:
        return cls((1.0, 2.0), (0.2, 1.0), 0.25) if fast else cls((20.0, 40.0), (5.0, 40.0), 1.0)


def _phone(block: int, n: int) -> str:
    return f"010-{block:04d}-{n:04d}"


def next_slot(hours: dict[str, list[Window]], tz: ZoneInfo, now: datetime, hours_long: int,
              rng: random.Random, *, now_only: bool = False) -> tuple[datetime, datetime] | None:
    """A `hours_long` slot inside opening hours: soon if open now, else in the next window
    (at a random hour of it, so carers are not all wanted at the same moment)."""
    soon = (now + timedelta(minutes=20)).astimezone(tz).replace(second=0, microsecond=0)
    soon += timedelta(minutes=-soon.minute % 15)
    length = timedelta(hours=hours_long)
    today = now.astimezone(tz).date()
    for start, end in open_intervals(hours, tz, today - timedelta(days=1), today + timedelta(days=8)):
        if start <= soon and soon + length <= end:
            return soon, soon + length
        if start > soon and not now_only:
            room = int((end - start - length) / timedelta(hours=1))
            if room < 0:
                continue
            first = start + timedelta(hours=rng.randint(0, min(room, 6)))
            return first, first + length
    return None


class Demo:
    def __init__(self, api: str, token: str, policies: dict[str, ServicePolicy], pace: Pace,
                 stop: threading.Event, seed: int | None = None) -> None:
        self.http = httpx.Client(base_url=api, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})
        self.policies = policies
        self.pace = pace
        self.stop = stop
        self.rng = random.Random(seed)
        self.families: list[dict[str, Any]] = []
        self.answers: list[tuple[float, str, str]] = []  # (due, phone, body), a heap
        self.seen_sms: set[str] = set()
        self.sms_since: datetime | None = None

    # -- seeding ------------------------------------------------------------------
    def _name(self, i: int) -> str:
        return SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7) % len(GIVEN)]

    def _carer(self, existing: dict[str, dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
        e164 = "+82" + data["phone"].replace("-", "")[1:]
        carer = existing.get(e164)
        if carer is None:
            r = self.http.post("/v1/carers", json=data)
            r.raise_for_status()
            carer = r.json()
        if not carer.get("on_duty"):
            self.http.put(f"/v1/carers/{carer['id']}/duty", json={"on_duty": True}
                          ).raise_for_status()
        return carer

    def seed(self) -> None:
        existing = {c["phone"]: c for c in self.http.get("/v1/carers").raise_for_status().json()}
        for i in range(30):
            self._carer(existing, {
                "name": self._name(i), "phone": _phone(7000, i + 1),
                "districts": [DISTRICTS[i % 5]] + ([DISTRICTS[(i + 1) % 5]] if i % 4 == 0 else []),
                "skills": ["hospital", "infant"] if i % 2 == 0 else ["infant"]})
        self._shifts(existing)
        for i in range(10):
            district = DISTRICTS[i % 5]
            born = datetime.now(UTC).date() - timedelta(days=400 + 130 * i)  # 1 to 4½ years
            r = self.http.post("/v1/families", json={
                "guardian": {"name": self._name(100 + i), "phone": _phone(7100, i + 1)},
                "district": district,
                "children": [{"name": self._name(200 + i), "birth_date": born.isoformat()}],
                "consent": {"child_data": True, "health_data": True}})
            r.raise_for_status()
            self.families.append(r.json())

    def _shifts(self, existing: dict[str, dict[str, Any]]) -> None:
        centre_policy = self.policies.get("emergency-center")
        rules = centre_policy.center if centre_policy else None
        if rules is None:
            return
        tz = ZoneInfo(centre_policy.timezone) if centre_policy else ZoneInfo("Asia/Seoul")
        now = datetime.now(UTC)
        n = 0
        for centre_id, staff in CENTRE_STAFF.items():
            centre = rules.center(centre_id)
            if centre is None:
                continue
            today = now.astimezone(tz).date()
            window = next(((s, e) for s, e in open_intervals(centre.hours, tz, today - timedelta(
                days=1), today + timedelta(days=8)) if e > now), None)
            if window is None:
                continue
            start, end = window[0], min(window[1], window[0] + timedelta(hours=24))
            for _ in range(staff):
                n += 1
                carer = self._carer(existing, {
                    "name": self._name(300 + n), "phone": _phone(7200, n),
                    "districts": ["서구" if centre_id == "gwangju-seogu" else "북구"],
                    "skills": ["infant"], "center_id": centre_id})
                r = self.http.post("/v1/shifts", json={
                    "carer_id": carer["id"], "center_id": centre_id,
                    "start": start.isoformat(), "end": end.isoformat()})
                if r.status_code not in (201, 409):  # 409: this shift exists from a last run
                    r.raise_for_status()

    # -- the city -----------------------------------------------------------------
    def request_care(self) -> dict[str, Any] | None:
        if not self.families:
            return None
        family = self.rng.choice(self.families)
        now = datetime.now(UTC)
        hours_long = self.rng.randint(2, 4)
        choices: list[tuple[str, datetime, datetime, dict[str, Any]]] = []
        hospital = self.policies.get("hospital")
        if hospital is not None:
            tz = ZoneInfo(hospital.timezone)
            slot = next_slot(hospital.hours, tz, now, hours_long, self.rng, now_only=True)
            if slot:
                choices.append(("hospital", *slot, {"hospital": self.rng.choice(HOSPITALS),
                                                    "ward": "소아병동 5층"}))
        centre_policy = self.policies.get("emergency-center")
        if centre_policy is not None and centre_policy.center is not None:
            tz = ZoneInfo(centre_policy.timezone)
            for centre in centre_policy.center.centers:
                slot = next_slot(centre.hours, tz, now, hours_long, self.rng, now_only=True)
                if slot:
                    choices.append(("emergency-center", *slot, {"center_id": centre.id}))
        if hospital is not None and not any(c[0] == "hospital" for c in choices):
            # Hospital care is closed now: book its next window, so carers still get offers.
            slot = next_slot(hospital.hours, ZoneInfo(hospital.timezone), now, hours_long,
                             self.rng)
            if slot:
                choices.append(("hospital", *slot, {"hospital": self.rng.choice(HOSPITALS),
                                                    "ward": "소아병동 5층"}))
        if not choices:
            return None
        hospital_first = self.rng.random() < 0.5  # half hospital care, half centre bookings
        preferred = [c for c in choices if (c[0] == "hospital") == hospital_first] or choices
        service, start, end, location = self.rng.choice(preferred)
        r = self.http.post("/v1/requests", json={
            "service": service, "family_id": family["id"],
            "child_id": family["children"][0]["id"], "start": start.isoformat(),
            "end": end.isoformat(), "location": location})
        if r.status_code != 202:
            print(f"demo: {service} request refused ({r.status_code}): {r.text[:200]}",
                  flush=True)
            return None
        created: dict[str, Any] = r.json()
        print(f"demo: {service} request {created['code']} for "
              f"{start.astimezone(ZoneInfo('Asia/Seoul')):%m-%d %H:%M}", flush=True)
        return created

    def read_offers(self) -> None:
        """Each new offer SMS gets a YES or NO from its carer, a little later."""
        params = {"since": self.sms_since.isoformat()} if self.sms_since else {}
        for sms in self.http.get("/v1/sms/outbox", params=params).raise_for_status().json():
            stamp = datetime.fromisoformat(sms["created_at"])
            # Look back a little each time: rows committed late with an earlier stamp.
            self.sms_since = max(self.sms_since or stamp, stamp - timedelta(seconds=5))
            if sms["id"] in self.seen_sms:
                continue
            self.seen_sms.add(sms["id"])
            if sms["kind"] != "offer" or not sms.get("code"):
                continue
            verb = "YES" if self.rng.random() < self.pace.yes_share else "NO"
            due = time.monotonic() + self.rng.uniform(*self.pace.answer_after_s)
            heapq.heappush(self.answers, (due, sms["recipient"], f"{verb} {sms['code']}"))

    def send_answers(self) -> None:
        while self.answers and self.answers[0][0] <= time.monotonic():
            _, phone, body = heapq.heappop(self.answers)
            self.http.post("/v1/console/sms", json={"from": phone, "body": body})

    def run(self) -> None:
        next_request = time.monotonic()
        while not self.stop.is_set():
            try:
                if time.monotonic() >= next_request:
                    self.request_care()
                    next_request = time.monotonic() + self.rng.uniform(*self.pace.request_every_s)
                self.read_offers()
                self.send_answers()
            except httpx.HTTPError as exc:  # the API restarting: try again next tick
                print(f"demo: {exc}", file=sys.stderr, flush=True)
            self.stop.wait(self.pace.poll_s)
        self.http.close()


def run_demo(settings: Settings, *, host: str, port: int, fast: bool = False) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    system = LocalSystem(settings, var=Path("var"), host=host, port=port)
    city: threading.Thread | None = None
    try:
        print("starting broker, database and workers…", flush=True)
        system.start()
        system.wait_until_ready()
        token = _local_dispatcher_token(settings)
        policies = dict(load_policies(settings.policy_dir))
        demo = Demo(system.api_url, token, policies, Pace.of(fast), stop)
        print("seeding demo data (centre shifts, 30 carers, 10 families)…", flush=True)
        demo.seed()
        sms = "Twilio" if settings.twilio_enabled else "console gateway (no Twilio account)"
        print(f"sms       {sms}")
        if not settings.twilio_enabled:
            print("phones    every carer's and parent's SMS on the console's simulated phones,"
                  " with a reply box")
        print(f"logs      {system.var.resolve()}/*.log")
        print(f"\n  console  http://{host}:{port}/console")
        print(f"  API      http://{host}:{port}/docs")
        print(f"  token    {token}   (role dispatcher, made for this run)\n")
        print("simulated parents ask for care every "
              f"{demo.pace.request_every_s[0]:.0f}–{demo.pace.request_every_s[1]:.0f} s; "
              "simulated carers answer their offers.")
        print("Ctrl-C stops everything.", flush=True)
        city = threading.Thread(target=demo.run, name="demo-city", daemon=True)
        city.start()
        system.watch(stop)
        return 0
    finally:
        stop.set()
        print("stopping…", flush=True)
        if city is not None:
            city.join(timeout=15)
        system.stop()
        print("stopped.", flush=True)


__all__ = ["Demo", "Pace", "next_slot", "run_demo"]
