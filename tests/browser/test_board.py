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

from infra.harness import Running, running_system, tomorrow_at

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "test-output" / "board.png"
HOSTILE = "<img src=x onerror=alert(1)>"

playwright_sync = pytest.importorskip("playwright.sync_api",
                                      reason="the playwright package is not installed")
if not CHROMIUM.exists():
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
    expect(page.locator(f'#assign-carer option[value="{carer["id"]}"]')).to_have_count(1)
    assert page.locator("#carers img, #assign-carer img, main img").count() == 0
    page.wait_for_timeout(500)
    assert not [d for d in board.dialogs if d[0] == "alert"]


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
