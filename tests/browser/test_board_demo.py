"""The live board with `dolbom demo`'s data, in console SMS mode (no Twilio account): the
simulated phones, the tablet layout, and the screenshots of the board.

The system runs without Twilio settings, as `dolbom demo` does, so SMS go to the console
gateway and the page shows a simulated phone per carer and parent. It is seeded with the
demo's own seeding (`infra.demo.Demo.seed`: the centres' shifts, 30 carers over the five
districts, 10 families) through the API, then a few requests are driven into different states
by the carers' SMS answers. The screenshots go to `test-output/` (git-ignored).
"""

from __future__ import annotations

import os
import random
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import pytest

from dispatch import commands as c
from dispatch.bootstrap import bootstrap
from dispatch.db import make_engine
from dispatch.domain.policy import load_policies
from infra.broker import free_port
from infra.demo import Demo, Pace, next_slot
from infra.harness import Running, wait_for
from infra.supervisor import LocalSystem
from infra.twilio_stub import TwilioStub
from schemas.config import Settings

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"

playwright_sync = pytest.importorskip("playwright.sync_api",
                                      reason="the playwright package is not installed")
if not CHROMIUM.exists():
    # .ci/run installs Chromium and sets DOLBOM_REQUIRE_BROWSER: there a missing browser
    # is a failure, never a quiet skip.
    if os.environ.get("DOLBOM_REQUIRE_BROWSER"):
        raise RuntimeError(f"{CHROMIUM} is missing but DOLBOM_REQUIRE_BROWSER is set")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); CI installs it",
                allow_module_level=True)

from playwright.sync_api import Browser, Dialog, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
WAIT_MS = 20_000
# An SMS reply goes API → outbox → broker → worker → database → stream → page: on a busy
# 2-core machine that can take longer than expect()'s default 5 s.
expect.set_options(timeout=WAIT_MS)


@contextmanager
def console_system(tmp: Path) -> Iterator[Running]:
    """Like infra.harness.running_system, but with no Twilio settings at all: the console SMS
    gateway, as a new user's `dolbom demo` runs. (The stub is only there because Running
    wants one; nothing is sent to it.)"""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    with mock.patch.dict(os.environ, {**clean, "DOLBOM_STREAM_HEARTBEAT_S": "1",
                                      "DOLBOM_STREAM_POLL_S": "0.1"}, clear=True), \
            TwilioStub() as stub:
        config = Settings(database_url=f"sqlite:///{tmp / 'dolbom.db'}",
                          public_url=f"http://127.0.0.1:{port}",
                          worker_id=f"dolbom-board-{uuid.uuid4().hex[:6]}",
                          data_dir=tmp / "var")
        assert not config.twilio_enabled
        system = LocalSystem(config, var=tmp / "var", port=port)
        try:
            system.start()
            system.wait_until_ready()
            token = bootstrap(make_engine(config.database_url), load_policies()).handle(
                c.CreateToken(name="상황실 야간", role="dispatcher"))
            yield Running(system, stub, token)
        except BaseException:
            for log in sorted((tmp / "var").glob("*.log")):
                print(f"==== {log.name}\n{log.read_text(errors='replace')[-4000:]}")
            raise
        finally:
            system.stop()


class City:
    """The seeded demo city and the requests made in it, by what they show."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.token = running.http.headers["Authorization"].split()[1]
        self.policies = dict(load_policies())
        self.demo = Demo(running.system.api_url, self.token, self.policies, Pace.of(True),
                         threading.Event(), seed=5)
        self.rng = random.Random(5)
        self.requests: dict[str, dict[str, Any]] = {}

    def hospital(self, family: dict[str, Any], district: str, hours: int = 3,
                 **location: Any) -> dict[str, Any]:
        policy = self.policies["hospital"]
        slot = next_slot(policy.hours, ZoneInfo(policy.timezone), datetime.now(UTC)
                         + timedelta(hours=1), hours, self.rng)
        assert slot is not None
        r = self.running.post("/v1/requests", {
            "service": "hospital", "family_id": family["id"],
            "child_id": family["children"][0]["id"], "start": slot[0].isoformat(),
            "end": slot[1].isoformat(),
            "location": {"hospital": "조선대병원", "ward": "소아병동 3층", "district": district,
                         **location}})
        assert r.status_code == 202, r.text
        return r.json()  # type: ignore[no-any-return]

    def centre(self, family: dict[str, Any], centre_id: str) -> dict[str, Any] | None:
        policy = self.policies["emergency-center"]
        assert policy.center is not None
        centre = policy.center.center(centre_id)
        assert centre is not None
        slot = next_slot(centre.hours, ZoneInfo(policy.timezone), datetime.now(UTC), 2,
                         self.rng)
        if slot is None:
            return None
        r = self.running.post("/v1/requests", {
            "service": "emergency-center", "family_id": family["id"],
            "child_id": family["children"][0]["id"], "start": slot[0].isoformat(),
            "end": slot[1].isoformat(), "location": {"center_id": centre_id}})
        assert r.status_code == 202, r.text
        return r.json()  # type: ignore[no-any-return]

    def open_offers(self, request_id: str) -> list[str]:
        return [o["carer_id"] for o in self.running.get_request(request_id)["offers"]
                if o["status"] == "open"]

    def everyone_says_no(self, request: dict[str, Any]) -> None:
        """Each carer offered the job answers NO from their phone, wave after wave, until
        nobody is left and the request escalates."""
        phones = {c["id"]: c["phone"] for c in self.running.http.get("/v1/carers").json()}
        answered: set[str] = set()

        def step() -> bool:
            detail = self.running.get_request(request["id"])
            if detail["status"] == "escalated":
                return True
            for carer_id in (o["carer_id"] for o in detail["offers"] if o["status"] == "open"):
                if carer_id not in answered:
                    answered.add(carer_id)
                    r = self.running.post("/v1/console/sms", {
                        "from": phones[carer_id], "body": f"NO {request['code']}"})
                    assert r.status_code == 202, r.text
            return False

        wait_for(step, 60, f"request {request['code']} to escalate after every NO")


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    with console_system(tmp_path_factory.mktemp("demo-board")) as running:
        city = City(running)
        city.demo.seed()
        fams = city.demo.families
        by_district = {f["district"]: f for f in fams}  # families 5–9, one per district
        # Escalated twice over in 동구 (its five hospital carers all say NO): one left
        # ringing, one a dispatcher has acknowledged.
        loud = city.hospital(fams[0], "동구")
        city.everyone_says_no(loud)
        quiet = city.hospital(fams[5], "동구", hours=2)
        city.everyone_says_no(quiet)
        assert running.http.post(f"/v1/requests/{quiet['id']}/acknowledge").status_code == 200
        # Offers out in 광산구 and 북구, waiting for an answer.
        waiting = city.hospital(by_district["광산구"], "광산구")
        wait_for(lambda: city.open_offers(waiting["id"]), 30, "offers in 광산구")
        other = city.hospital(by_district["북구"], "북구", hours=4)
        wait_for(lambda: city.open_offers(other["id"]), 30, "offers in 북구")
        # Filled by a YES in 남구.
        filled = city.hospital(by_district["남구"], "남구", hours=2)
        first = wait_for(lambda: city.open_offers(filled["id"]), 30, "offers in 남구")[0]
        phone = next(c["phone"] for c in running.http.get("/v1/carers").json()
                     if c["id"] == first)
        assert running.post("/v1/console/sms", {"from": phone,
                                                "body": f"YES {filled['code']}"}
                            ).status_code == 202
        running.wait_status(filled["id"], "assigned")
        # A centre booking at the main centre (its next opening if it is closed now).
        booked = city.centre(by_district["서구"], "gwangju-main")
        if booked is not None:
            wait_for(lambda: running.get_request(booked["id"])["status"] != "received", 30,
                     "the centre booking to be placed")
        city.requests = {"loud": loud, "quiet": quiet, "waiting": waiting, "other": other,
                         "filled": filled, **({"booked": booked} if booked else {})}
        yield city


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        yield b
        b.close()


@contextmanager
def signed_in(city: City, browser: Browser, width: int, height: int,
              touch: bool = False) -> Iterator[tuple[Page, list[tuple[str, str]]]]:
    context = browser.new_context(viewport={"width": width, "height": height},
                                  locale="ko-KR", has_touch=touch, is_mobile=False)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    dialogs: list[tuple[str, str]] = []

    def answer(dialog: Dialog) -> None:
        dialogs.append((dialog.type, dialog.message))
        dialog.accept() if dialog.type == "confirm" else dialog.dismiss()

    page.on("dialog", answer)
    page.goto(city.running.system.api_url + "/console")
    page.fill("#token", city.token)
    page.click("#signin-button")
    expect(page.locator("#board")).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-state", "open")
    try:
        yield page, dialogs
    finally:
        context.close()


def _row(page: Page, request: dict[str, Any]) -> Any:
    return page.locator(f'tr.req[data-id="{request["id"]}"]')


def test_the_board_shows_the_demo_city_and_saves_a_screenshot(city: City,
                                                               browser: Browser) -> None:
    with signed_in(city, browser, 1440, 900) as (page, _):
        loud, quiet = city.requests["loud"], city.requests["quiet"]
        # Most urgent first: the escalation nobody has acknowledged rings; the other is quiet.
        expect(page.locator("tr.req").first).to_have_attribute("data-id", loud["id"])
        expect(_row(page, loud)).to_have_attribute("data-acknowledged", "false")
        expect(_row(page, quiet)).to_have_attribute("data-acknowledged", "true")
        expect(page.locator("#alarm")).to_have_attribute("data-count", "1")
        # Labels from the policy files, the child's age in Korean, the offer clock.
        waiting = _row(page, city.requests["waiting"])
        expect(waiting).to_contain_text(city.policies["hospital"].label)
        expect(waiting.locator("td.child-age")).to_have_text(re.compile(r"^\d+(세|개월)$"))
        expect(waiting.locator(".countdown")).to_contain_text("남음")
        expect(page.locator("#carers .district")).to_have_count(5)
        filled = city.running.get_request(city.requests["filled"]["id"])
        expect(page.locator(f'#carers li[data-carer="{filled["carer"]["id"]}"] .job').first
               ).to_contain_text(f'#{filled["code"]}')
        expect(page.locator("#centres .centre")).to_have_count(2)
        if "booked" in city.requests:
            expect(_row(page, city.requests["booked"])).to_contain_text("광주긴급아이돌봄센터")
        expect(page.locator("#phones .phone")).to_have_count(45)  # 35 carers, 10 parents

        _row(page, loud).locator("td").first.click()  # (the row's middle is its 확인 button)
        expect(page.locator("#escalation-banner")).to_have_attribute("data-acknowledged",
                                                                     "false")
        expect(page.locator('#timeline tr[data-type="sms_in"]').first).to_be_visible()
        expect(page.locator('#offers tr[data-status="declined"]')).to_have_count(5)
        OUTPUT.mkdir(exist_ok=True)
        page.wait_for_timeout(300)  # the clocks have ticked once
        page.screenshot(path=str(OUTPUT / "board.png"), full_page=True)


def _no_horizontal_overflow(page: Page) -> None:
    width = page.evaluate("document.documentElement.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for panel in ("#requests-section", "#detail-section", "#side-section", "#phones-section"):
        box = page.locator(panel).bounding_box()
        assert box is not None, panel
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (panel, box, width)


@pytest.mark.parametrize(("width", "height"), [(768, 1024), (1024, 768)])
def test_the_board_works_on_a_tablet(city: City, browser: Browser, width: int,
                                     height: int) -> None:
    with signed_in(city, browser, width, height, touch=True) as (page, _):
        for panel in ("#requests-section", "#detail-section", "#side-section",
                      "#phones-section"):
            expect(page.locator(panel)).to_be_visible()
        expect(page.locator("tr.req")).to_have_count(len(city.requests))
        _row(page, city.requests["waiting"]).locator("td").first.click()
        expect(page.locator("#assign-carer optgroup").first).to_be_attached()
        _no_horizontal_overflow(page)
        # Buttons a finger can hit.
        for button in ("#assign", "#reoffer", "#cancel", "#mute"):
            box = page.locator(button).bounding_box()
            assert box is not None and box["height"] >= 44, (button, box)
        requests = page.locator("#requests-section").bounding_box()
        detail = page.locator("#detail-section").bounding_box()
        assert requests is not None and detail is not None
        if width < 900:  # upright: the panels stack
            assert detail["y"] >= requests["y"] + requests["height"]
        else:  # sideways: the list and the detail side by side
            assert detail["x"] >= requests["x"] + requests["width"]
        if width == 768:
            OUTPUT.mkdir(exist_ok=True)
            page.screenshot(path=str(OUTPUT / "board-tablet.png"), full_page=True)


def test_a_simulated_phone_shows_the_offer_and_its_reply_assigns_the_carer(
        city: City, browser: Browser) -> None:
    other = city.requests["other"]
    # A carer holding the offer and no other job (a carer serving 남구 too may have taken the
    # 남구 job at an overlapping time: their YES here would rightly be refused).
    offered = [city.running.http.get(f"/v1/carers/{cid}").json()
               for cid in city.open_offers(other["id"])]
    carer = next(c for c in offered if c["current_job"] is None)
    carer_id = carer["id"]
    with signed_in(city, browser, 1440, 900) as (page, _):
        phone = page.locator(f'#phones .phone[data-phone="{carer["phone"]}"]')
        page.fill("#phone-filter", carer["name"])  # finding the phone by name
        expect(phone).to_be_visible()
        # The offer SMS as the carer reads it (a carer serving two districts may hold others).
        offer = phone.locator('.bubble[data-kind="offer"]', has_text=other["code"])
        expect(offer).to_have_count(1)
        expect(offer).to_contain_text(city.policies["hospital"].label)
        phone.locator("input").fill(f"네 {other['code']}")
        phone.locator("button").click()
        expect(phone.locator('.bubble[data-direction="in"]').last).to_contain_text(
            f"네 {other['code']}")
        row = _row(page, other)
        expect(row).to_have_attribute("data-status", "assigned")
        expect(row.locator("td.carer")).to_have_text(carer["name"])
        # …and the carer's phone gets the confirmation of the job.
        expect(phone.locator('.bubble[data-kind="accepted_ack"]')).to_contain_text(
            other["code"])
    assert city.running.get_request(other["id"])["carer"]["id"] == carer_id
