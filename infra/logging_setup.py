"""Log output: text or one JSON object per line, with phone numbers masked in both.

Phone numbers are personal data (DESIGN.md §9): whatever a log call is given, the final
message keeps only the last four digits of anything that looks like one (`schemas.phone.mask`).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from schemas.phone import mask

# E.164 (`+821012345678`, `+82 10-1234-5678`) or a Korean local number (`010-1234-5678`,
# `01012345678`, `062-123-4567`). Not inside a longer word or number (ids, hex, timestamps).
PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?\d{1,4}(?:[ .-]?\d{2,4}){1,3}"
    r"|0\d{1,2}[ .-]?\d{3,4}[ .-]?\d{4}"
    r")(?![\w])"
)


def _mask_match(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    return mask(text) if 9 <= digits <= 15 else text


def mask_phones(text: str) -> str:
    """Every phone-number-looking run in `text` masked to its last four digits."""
    return PHONE.sub(_mask_match, text)


class PhoneMaskFilter(logging.Filter):
    """Masks phone numbers in the final message (after %-formatting with the args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to the handler to report
            return True
        masked = mask_phones(message)
        if masked != message or record.args:
            record.msg, record.args = masked, ()
        return True


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_phones(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_") or key in entry:
                continue
            entry[key] = mask_phones(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc_info"] = mask_phones(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter_for(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: str, fmt: str = "text") -> None:
    """The root logger: one stderr handler in `fmt`, phone numbers masked.

    The mask is also applied as each record is made (the record factory), so handlers that
    other libraries install later (uvicorn's, Faust's) never see a full number either.
    """
    logging.basicConfig(level=level.upper(), force=True)
    phone_filter = PhoneMaskFilter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter_for(fmt))
        handler.addFilter(phone_filter)
    _install_record_factory(phone_filter)


def _install_record_factory(phone_filter: PhoneMaskFilter) -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_dolbom_masks", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        phone_filter.filter(record)
        return record

    factory._dolbom_masks = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
