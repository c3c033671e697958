"""Log output (infra/logging_setup.py): JSON lines that parse, phone numbers masked in both formats."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from infra.logging_setup import (
    JsonFormatter,
    PhoneMaskFilter,
    configure,
    formatter_for,
    mask_phones,
)
from schemas.config import Settings


def _logger(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_for(fmt))
    handler.addFilter(PhoneMaskFilter())
    logger = logging.getLogger(f"dolbom.test.{fmt}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


@pytest.mark.parametrize("raw", ["+821012345678", "010-1234-5678", "01012345678",
                                 "+82 10-1234-5678", "062-123-5678"])
def test_phone_numbers_keep_only_their_last_four_digits(raw: str) -> None:
    masked = mask_phones(f"SMS to {raw} failed")
    assert masked.startswith("SMS to *") and masked.endswith("5678 failed")
    assert "1234" not in masked


@pytest.mark.parametrize("text", [
    "request 9f1c0a2b3d4e5f60718293a4b5c6d7e8 assigned",   # ids stay
    "start 2026-11-26T10:00:00+09:00",                     # times stay
    "YES 4821", "took 1500 ms", "outbox id 12345678",
])
def test_what_is_no_phone_number_is_left_alone(text: str) -> None:
    assert mask_phones(text) == text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_phone_number_in_the_args_is_masked(fmt: str) -> None:
    logger, stream = _logger(fmt)
    logger.info("offer sent to %s for %s", "+821012345678", "A1B2")
    out = stream.getvalue()
    assert "+821012345678" not in out and "1012345678" not in out
    assert "********5678" in out and "A1B2" in out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_phone_number_in_the_message_is_masked(fmt: str) -> None:
    logger, stream = _logger(fmt)
    logger.warning("unknown sender 010-1234-5678, body %r", "네 4821")
    out = stream.getvalue()
    assert "010-1234-5678" not in out and "1234" not in out
    assert "*******5678" in out and "4821" in out


def test_json_lines_parse_and_carry_the_extras() -> None:
    logger, stream = _logger("json")
    logger.info("first")
    logger.info("second to %s", "01099990000", extra={"request_id": "r1", "to": "+821099990000"})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("third")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    entries = [json.loads(line) for line in lines]
    assert [e["message"] for e in entries] == ["first", "second to *******0000", "third"]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert entries[0]["level"] == "INFO" and entries[0]["logger"] == "dolbom.test.json"
    assert entries[1]["request_id"] == "r1" and entries[1]["to"] == "********0000"
    assert "ValueError: boom" in entries[2]["exc_info"]


def test_json_formatter_keeps_korean_readable() -> None:
    record = logging.LogRecord("dolbom", logging.INFO, __file__, 1, "배정 완료 %s", ("김민지",),
                               None)
    assert json.loads(JsonFormatter().format(record))["message"] == "배정 완료 김민지"


def test_the_setting_defaults_to_text_and_takes_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOLBOM_LOG_FORMAT", raising=False)
    assert Settings().log_format == "text"
    monkeypatch.setenv("DOLBOM_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    monkeypatch.setenv("DOLBOM_LOG_FORMAT", "xml")
    with pytest.raises(ValueError):
        Settings()


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    factory = logging.getLogRecordFactory()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


@pytest.mark.usefixtures("_restore_logging")
def test_configure_masks_even_on_handlers_it_did_not_install() -> None:
    configure("INFO", "json")
    root = logging.getLogger()
    assert isinstance(root.handlers[0].formatter, JsonFormatter)
    # A library's own handler (uvicorn, Faust) added later still gets masked records.
    stream = io.StringIO()
    other = logging.getLogger("dolbom.test.library")
    other.handlers[:] = [logging.StreamHandler(stream)]
    other.propagate = False
    other.warning("from %s", "+821012345678")
    assert stream.getvalue().strip() == "from ********5678"
