"""Inbound SMS grammar: turn what a carer or parent typed into one verb and an optional job code.

The grammar is deliberately small (CONTRACT.md, "SMS commands"). It forgives how people type on
a phone -- case, spacing, full-width characters from a Korean IME, trailing punctuation, a code
glued to the word or written with `#` -- but it never guesses: extra words, a code of the wrong
length or a code on a command that takes none all parse as `unknown`, so the caller answers with
the command list instead of acting on a misread message.

Twilio's own opt-out/opt-in/help keywords are reported as `twilio_keyword` and are never commands:
Twilio acts on them itself, and the caller only records them (DESIGN.md section 5).

Pure functions, no I/O; `parse` never raises for any `str`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

ACCEPT: Final = "accept"
DECLINE: Final = "decline"
ARRIVED: Final = "arrived"
DONE: Final = "done"
ON_DUTY: Final = "on_duty"
OFF_DUTY: Final = "off_duty"
CANCEL: Final = "cancel"
STATUS: Final = "status"
UNKNOWN: Final = "unknown"
TWILIO_KEYWORD: Final = "twilio_keyword"

VERBS: Final[frozenset[str]] = frozenset(
    {ACCEPT, DECLINE, ARRIVED, DONE, ON_DUTY, OFF_DUTY, CANCEL, STATUS, UNKNOWN, TWILIO_KEYWORD}
)

# Twilio handles these before (or besides) our webhook: opt-out, opt-in and help words. YES is
# also a Twilio opt-in word in its default configuration, but the CONTRACT makes it our accept
# command; for someone who never opted out Twilio's handling of it is a no-op.
TWILIO_KEYWORDS: Final[frozenset[str]] = frozenset(
    {
        "STOP",
        "CANCEL",
        "END",
        "QUIT",
        "UNSUBSCRIBE",
        "STOPALL",
        "REVOKE",
        "OPTOUT",
        "HELP",
        "INFO",
        "START",
        "UNSTOP",
    }
)

# Keys are upper-cased NFKC forms, so Hangul is unaffected and Latin matches case-insensitively.
# 아니요 is the standard spelling of the CONTRACT's 아니오; people type both.
WORDS: Final[dict[str, str]] = {
    "YES": ACCEPT,
    "Y": ACCEPT,
    "네": ACCEPT,
    "예": ACCEPT,
    "수락": ACCEPT,
    "NO": DECLINE,
    "N": DECLINE,
    "거절": DECLINE,
    "아니오": DECLINE,
    "아니요": DECLINE,
    "ARRIVED": ARRIVED,
    "도착": ARRIVED,
    "DONE": DONE,
    "완료": DONE,
    "ON": ON_DUTY,
    "출근": ON_DUTY,
    "OFF": OFF_DUTY,
    "퇴근": OFF_DUTY,
    "취소": CANCEL,
    "상태": STATUS,
    "STATUS": STATUS,
}

# Only job-scoped commands may carry a code; a code on ON/OFF/STATUS means the sender had
# something else in mind, so it is not accepted.
VERBS_WITH_CODE: Final[frozenset[str]] = frozenset({ACCEPT, DECLINE, ARRIVED, DONE, CANCEL})

# The grammar must never be a superset of Twilio's keywords, or a carer's opt-out would also act.
assert not (set(WORDS) & TWILIO_KEYWORDS)


@dataclass(frozen=True)
class ParsedSms:
    verb: str
    code: str | None
    raw: str


# A word made of letters only (so a glued code splits off), then optionally a separator and a
# code. ASCII digits only: NFKC has already folded full-width digits, and other scripts' digits
# are not something a job code is ever written in.
_COMMAND = re.compile(r"(?P<word>[^\W\d_]+)(?:[\s,:]*#?\s*(?P<code>[0-9]+))?")
_LEADING_WORD = re.compile(r"[^\W\d_]+")


def _is_edge_noise(ch: str) -> bool:
    # Punctuation, symbols (~, emoji), separators, controls and marks at either end carry no
    # meaning for a command ("네!", "완료!!", "도착~", quotes around the text).
    return unicodedata.category(ch)[0] in "PSZCM"


def fold(text: str) -> str:
    """The text as a command reader sees it (case kept): shared by every SMS grammar.

    NFKC folds full-width Latin/digits/space from Korean IMEs to ASCII and composes any
    decomposed Hangul; format characters (zero-width space, BOM, joiners) are invisible to
    the sender, so they are dropped rather than allowed to break a match.
    """
    folded = unicodedata.normalize("NFKC", text)
    visible = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")
    start, end = 0, len(visible)
    while start < end and _is_edge_noise(visible[start]):
        start += 1
    while end > start and _is_edge_noise(visible[end - 1]):
        end -= 1
    return visible[start:end]


def _normalize(text: str) -> str:
    return fold(text).upper()


def parse(text: str) -> ParsedSms:
    """Parse one inbound SMS body. Anything that is not exactly a command is `unknown`.

    `raw` is the text exactly as received, so the caller can store it unchanged.
    """
    body = _normalize(text)

    # Twilio matches its keywords on the message itself; anything that starts with one is left
    # alone whatever follows, so "STOP please" or "CANCEL 4821" never becomes one of our commands.
    lead = _LEADING_WORD.match(body)
    if lead is not None and lead.group() in TWILIO_KEYWORDS:
        return ParsedSms(TWILIO_KEYWORD, None, text)

    match = _COMMAND.fullmatch(body)
    if match is None:
        return ParsedSms(UNKNOWN, None, text)
    verb = WORDS.get(match.group("word"))
    code = match.group("code")
    if verb is None:
        return ParsedSms(UNKNOWN, None, text)
    if code is not None and (verb not in VERBS_WITH_CODE or len(code) != 4):
        return ParsedSms(UNKNOWN, None, text)
    return ParsedSms(verb, code, text)
