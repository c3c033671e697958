"""The dispatcher's live board (`/console`) in a real browser against the running system.

Uses Playwright's Python package with the system Chromium (`/usr/bin/chromium`, the Debian
package CI installs); it never downloads a browser.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from infra.harness import Running, running_system, tomorrow_at, wait_for

CHROMIUM = Path("/usr/bin/chromium")
# The demo-data screenshots (board.png, board-tablet.png) are test_board_demo.py's.
SCREENSHOT = Path(__file__).resolve().parents[2] / "test-output" / "board-escalated.png"
HOSTILE = "<img src=x onerror=alert(1)>"

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
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with mock.patch.dict(os.environ, {"DOLBOM_STREAM_HEARTBEAT_S": "1",
                                      "DOLBOM_STREAM_POLL_S": "0.1"}), \
            running_system(tmp_path_factory.mktemp("board")) as running:
        running.carer("김민지", "010-5555-0001")
        running.carer("이서연", "010-5555-0002")
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        yield b
        b.close()


class Board:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[tuple[str, str]] = []
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append((dialog.type, dialog.message))
        if dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    def row(self, request_id: str) -> Any:
        return self.page.locator(f'tr.req[data-id="{request_id}"]')


@pytest.fixture
def board(system: Running, browser: Browser) -> Iterator[Board]:
    context = browser.new_context(viewport={"width": 1500, "height": 900}, locale="ko-KR")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    b = Board(page)
    page.goto(system.system.api_url + "/console")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#token", system.http.headers["Authorization"].split()[1])
    page.click("#signin-button")
    expect(page.locator("#board")).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-state", "open")
    yield b
    context.close()


def family(system: Running, phone: str, district: str = "광산구") -> dict[str, Any]:
    r = system.post("/v1/families", {
        "guardian": {"name": "박보호", "phone": phone}, "district": district,
        "children": [{"name": "박아이", "birth_date": "2019-05-05"}],
        "consent": {"child_data": True, "health_data": True}})
    assert r.status_code == 201, r.text
    return r.json()


def hospital_request(system: Running, fam: dict[str, Any], district: str | None = None,
                     start_hour: int = 10) -> dict[str, Any]:
    start = tomorrow_at(start_hour)
    location = {"hospital": "전남대병원", "ward": "소아병동 5층"}
    if district:
        location["district"] = district
    r = system.post("/v1/requests", {
        "service": "hospital", "family_id": fam["id"], "child_id": fam["children"][0]["id"],
        "start": start.isoformat(), "end": start.replace(hour=start_hour + 3).isoformat(),
        "location": location})
    assert r.status_code == 202, r.text
    return r.json()


def test_sign_in_shows_the_board_with_carers_and_the_sms_queue(board: Board) -> None:
    page = board.page
    expect(page.locator("#carers")).to_contain_text("김민지")
    expect(page.locator('#carers .district[data-district="광산구"]')).to_be_visible()
    expect(page.locator("#backlog")).to_contain_text("보낼 문자")
    expect(page.locator("#clock")).to_have_text(re.compile(r"\d\d:\d\d:\d\d"))
    # The cookie is HttpOnly: the page's script cannot read it.
    assert "dolbom_session" not in page.evaluate("document.cookie")


def test_a_new_request_appears_live_and_is_assigned_from_the_board(
        system: Running, board: Board) -> None:
    page = board.page
    created = hospital_request(system, family(system, "010-5555-0901"))
    row = board.row(created["id"])
    expect(row).to_be_visible()  # no reload: the stream told the page
    expect(row).to_contain_text(created["code"])
    expect(row).to_have_attribute("data-status", re.compile("matching|received"))
    age = row.locator("td.age")
    first = age.inner_text()
    expect(age).not_to_have_text(first, timeout=5_000)  # the clock runs without events

    row.click()
    expect(page.locator("#detail")).to_have_attribute("data-id", created["id"])
    expect(page.locator('#timeline tr[data-type="sms_out"]').first).to_be_visible()
    carer_id = page.locator("#assign-carer option", has_text="이서연").get_attribute("value")
    assert carer_id
    page.select_option("#assign-carer", carer_id)
    page.click("#assign")
    expect(row).to_have_attribute("data-status", "assigned")
    expect(row.locator("td.carer")).to_have_text("이서연")
    expect(page.locator("#detail")).to_have_attribute("data-status", "assigned")
    assert any(kind == "confirm" and "이서연" in msg for kind, msg in board.dialogs)
    expect(page.locator(f'#carers li[data-carer="{carer_id}"] .job')).to_contain_text(
        created["code"])

    # A conflict shows the API's message (409): the request already has its carer.
    other = page.locator("#assign-carer option", has_text="김민지").get_attribute("value")
    page.select_option("#assign-carer", other)
    page.click("#assign")
    expect(page.locator("#error")).to_contain_text("처리할 수 없습니다")
    expect(row).to_have_attribute("data-status", "assigned")

    page.click("#cancel")
    expect(page.locator("#notice")).to_have_text("취소했습니다.")
    expect(row).to_have_count(0)  # no longer open
    assert system.get_request(created["id"])["status"] == "cancelled"


def test_an_escalated_request_is_highlighted_first_and_takes_a_note(
        system: Running, board: Board) -> None:
    page = board.page
    created = hospital_request(system, family(system, "010-5555-0902", district="동구"),
                               district="동구")
    row = board.row(created["id"])
    expect(row).to_have_attribute("data-status", "escalated", timeout=30_000)
    expect(row).to_have_class(re.compile(r"\bescalated\b"))
    color = row.evaluate("r => getComputedStyle(r).backgroundColor")
    assert color == "rgb(253, 226, 225)", color
    # Escalated comes first in the list.
    assert page.locator("tr.req").first.get_attribute("data-id") == created["id"]
    assert page.evaluate("dolbomBoard.beeps") >= 1

    row.click()
    page.fill("#note", "보호자와 통화함")
    page.click("#add-note")
    expect(page.locator('#timeline tr[data-type="note"]')).to_contain_text("보호자와 통화함")

    hospital_request(system, family(system, "010-5555-0904"), start_hour=12)
    expect(page.locator("tr.req")).to_have_count(2)
    expect(page.locator("tr.req").first).to_have_attribute("data-id", created["id"])
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_a_hostile_carer_name_renders_as_text(system: Running, board: Board) -> None:
    page = board.page
    carer = system.carer(HOSTILE, "010-5555-0003")
    name = page.locator(f'#carers li[data-carer="{carer["id"]}"] .carer-name')
    expect(name).to_have_text(HOSTILE)
    # …and in the assign picker of a request it could take (광산구, hospital care).
    created = hospital_request(system, family(system, "010-5555-0905"), start_hour=16)
    board.row(created["id"]).click()
    option = page.locator(f'#assign-carer option[value="{carer["id"]}"]')
    expect(option).to_have_count(1)
    expect(option).to_contain_text(HOSTILE)
    assert page.locator("#carers img, #assign-carer img, main img").count() == 0
    page.wait_for_timeout(500)
    assert not [d for d in board.dialogs if d[0] == "alert"]
    assert system.http.post(f"/v1/requests/{created['id']}/cancel",
                            json={"reason": "test"}).status_code == 200


def test_new_events_arrive_after_the_stream_is_dropped(system: Running, board: Board) -> None:
    page = board.page
    page.wait_for_timeout(500)  # the refresh that follows sign-in is done
    before = page.evaluate("dolbomBoard.reconnects")
    page.evaluate("dolbomBoard.es.close()")  # the stream is gone; the browser won't retry
    created = hospital_request(system, family(system, "010-5555-0903"), start_hour=14)
    expect(board.row(created["id"])).to_be_visible()  # the page reopened the stream itself
    assert page.evaluate("dolbomBoard.reconnects") > before
    expect(page.locator("#live")).to_have_attribute("data-state", "open")
    # …and keeps following it: the next change arrives too.
    assert system.http.post(f"/v1/requests/{created['id']}/cancel",
                            json={"reason": "test"}).status_code == 200
    expect(board.row(created["id"])).to_have_count(0)


def _acknowledge_open_escalations(system: Running) -> None:
    for r in system.http.get("/v1/requests", params={"open": "true"}).json():
        if r["status"] == "escalated" and not r["escalation"]["acknowledged"]:
            assert system.http.post(f"/v1/requests/{r['id']}/acknowledge").status_code == 200


def test_an_escalation_rings_until_acknowledged_then_stays_listed_quietly(
        system: Running, board: Board) -> None:
    page = board.page
    _acknowledge_open_escalations(system)  # earlier tests' escalations: a quiet board first
    page.evaluate("dolbomBoard.alarmEveryMs = 400")
    expect(page.locator("#alarm")).to_be_hidden()
    created = hospital_request(system, family(system, "010-5555-0906", district="동구"),
                               district="동구", start_hour=15)
    row = board.row(created["id"])
    expect(row).to_have_attribute("data-status", "escalated", timeout=30_000)
    expect(row).to_have_attribute("data-acknowledged", "false")
    expect(page.locator("#alarm")).to_be_visible()
    expect(page.locator("#alarm")).to_have_attribute("data-count", "1")
    # It keeps ringing: several beeps while nobody acknowledges it.
    start = page.evaluate("dolbomBoard.beeps")
    # (wait_for_function would need eval, which the page's CSP forbids: poll instead)
    wait_for(lambda: page.evaluate("dolbomBoard.beeps") >= start + 2, 5, "two more beeps")
    assert row.evaluate("r => getComputedStyle(r).backgroundColor") == "rgb(253, 226, 225)"
    # Muting silences the sound only: the alarm still rings on screen and is still counted.
    page.click("#mute")
    expect(page.locator("#mute")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("localStorage.getItem('dolbom-muted')") == "1"
    muted = page.evaluate("dolbomBoard.beeps")
    wait_for(lambda: page.evaluate("dolbomBoard.beeps") > muted, 5, "a muted beep")
    expect(page.locator("#alarm")).to_be_visible()
    page.click("#mute")
    expect(page.locator("#mute")).to_have_attribute("aria-pressed", "false")

    row.locator("button.ack").click()  # asks first, then records the dispatcher's name
    expect(row).to_have_attribute("data-acknowledged", "true")
    assert any(kind == "confirm" and created["code"] in msg and "확인" in msg
               for kind, msg in board.dialogs)
    expect(row.locator(".ack-badge")).to_have_text("확인됨")
    expect(row.locator("button.ack")).to_have_count(0)
    expect(page.locator("#alarm")).to_be_hidden()
    assert page.evaluate("dolbomBoard.alarming.size") == 0
    quiet = page.evaluate("dolbomBoard.beeps")
    page.wait_for_timeout(1_500)  # more than three alarm periods
    assert page.evaluate("dolbomBoard.beeps") == quiet
    # Still listed, still escalated (it needs a carer), no longer the alarm colour.
    expect(row).to_have_attribute("data-status", "escalated")
    assert row.evaluate("r => getComputedStyle(r).backgroundColor") != "rgb(253, 226, 225)"

    row.click()
    banner = page.locator("#escalation-banner")
    expect(banner).to_have_attribute("data-acknowledged", "true")
    expect(banner).to_contain_text("e2e dispatcher")
    ack = page.locator('#timeline tr[data-type="escalation_acknowledged"]')
    expect(ack).to_contain_text("e2e dispatcher")
    detail = system.get_request(created["id"])
    assert detail["escalation"]["acknowledged_by"] == "e2e dispatcher"


def test_the_assign_picker_lists_candidates_in_rank_order(system: Running,
                                                          board: Board) -> None:
    page = board.page
    # 남구, around the ward at 35.13N 126.90E: homes 5, 1 and 3 km away.
    carers = {}
    for name, phone, km in (("남먼곳", "010-5555-0031", 5), ("남가까", "010-5555-0032", 1),
                            ("남중간", "010-5555-0033", 3)):
        r = system.post("/v1/carers", {"name": name, "phone": phone, "districts": ["남구"],
                                       "skills": ["hospital"],
                                       "home": {"lat": 35.13 + km * 0.009, "lon": 126.90}})
        assert r.status_code == 201, r.text
        carers[name] = r.json()["id"]
        assert system.http.put(f"/v1/carers/{carers[name]}/duty",
                               json={"on_duty": True}).status_code == 200
    start = tomorrow_at(11)
    r = system.post("/v1/requests", {
        "service": "hospital", "family_id": (fam := family(system, "010-5555-0907", "남구"))["id"],
        "child_id": fam["children"][0]["id"], "start": start.isoformat(),
        "end": start.replace(hour=14).isoformat(),
        "location": {"hospital": "전남대병원", "ward": "소아병동 5층", "district": "남구",
                     "lat": 35.13, "lon": 126.90}})
    assert r.status_code == 202, r.text
    created = r.json()
    board.row(created["id"]).click()
    ranked = page.locator("#assign-carer optgroup").first.locator("option")
    expect(ranked).to_have_count(3)
    assert ranked.evaluate_all("os => os.map(o => o.value)") == [
        carers["남가까"], carers["남중간"], carers["남먼곳"]]
    expect(ranked.first).to_contain_text("1. 남가까")
    expect(ranked.first).to_contain_text("1km")
    api = system.http.get(f"/v1/requests/{created['id']}/candidates").json()
    assert [c["carer"]["id"] for c in api["candidates"]] == ranked.evaluate_all(
        "os => os.map(o => o.value)")

    page.select_option("#assign-carer", carers["남중간"])
    page.click("#assign")
    row = board.row(created["id"])
    expect(row).to_have_attribute("data-status", "assigned")
    expect(row.locator("td.carer")).to_have_text("남중간")
    assert any(kind == "confirm" and "남중간" in msg for kind, msg in board.dialogs)
