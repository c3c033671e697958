"""The inbound SMS grammar against the CONTRACT's "SMS commands" table."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from notifiers import grammar
from notifiers.grammar import ParsedSms, parse

# Written out from CONTRACT.md rather than imported, so the test checks the grammar against the
# contract instead of against itself.
CODE_WORDS: dict[str, str] = {
    "YES": "accept",
    "Y": "accept",
    "네": "accept",
    "예": "accept",
    "수락": "accept",
    "NO": "decline",
    "N": "decline",
    "거절": "decline",
    "아니오": "decline",
    # Not in the CONTRACT's table, but the standard spelling of 아니오; accepted on purpose.
    "아니요": "decline",
    "ARRIVED": "arrived",
    "도착": "arrived",
    "DONE": "done",
    "완료": "done",
    "취소": "cancel",
}
BARE_WORDS: dict[str, str] = {
    "ON": "on_duty",
    "출근": "on_duty",
    "OFF": "off_duty",
    "퇴근": "off_duty",
    "상태": "status",
    "STATUS": "status",
}
TWILIO_WORDS = [
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
]
ALL_WORDS = {**CODE_WORDS, **BARE_WORDS}


def full_width(text: str) -> str:
    """What a Korean IME in full-width mode produces for ASCII text."""
    return "".join(
        "\u3000" if ch == " " else chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text
    )


CASES: list[tuple[str, str, str | None]] = [
    # accept, both languages, with and without a code
    ("YES 4821", "accept", "4821"),
    ("yes 4821", "accept", "4821"),
    ("Y 4821", "accept", "4821"),
    ("y", "accept", None),
    ("Yes", "accept", None),
    ("네 4821", "accept", "4821"),
    ("네", "accept", None),
    ("예 0007", "accept", "0007"),
    ("수락 4821", "accept", "4821"),
    # decline
    ("NO 4821", "decline", "4821"),
    ("n 4821", "decline", "4821"),
    ("No", "decline", None),
    ("거절 4821", "decline", "4821"),
    ("거절", "decline", None),
    ("아니오 4821", "decline", "4821"),
    ("아니요", "decline", None),
    # arrived / done
    ("ARRIVED 4821", "arrived", "4821"),
    ("arrived", "arrived", None),
    ("도착 4821", "arrived", "4821"),
    ("도착~", "arrived", None),
    ("DONE 4821", "done", "4821"),
    ("Done", "done", None),
    ("완료 4821", "done", "4821"),
    ("완료!!", "done", None),
    # duty, status, cancel
    ("ON", "on_duty", None),
    ("on", "on_duty", None),
    ("출근", "on_duty", None),
    ("OFF", "off_duty", None),
    ("퇴근.", "off_duty", None),
    ("취소", "cancel", None),
    ("취소 4821", "cancel", "4821"),
    ("상태", "status", None),
    ("status?", "status", None),
    ("STATUS", "status", None),
    # spacing, full width, punctuation, glued and #-prefixed codes
    ("  YES   4821  ", "accept", "4821"),
    ("\tyes\n4821\n", "accept", "4821"),
    ("네\u30004821", "accept", "4821"),
    ("ＹＥＳ\u3000４８２１", "accept", "4821"),
    ("ｎｏ　４８２１", "decline", "4821"),
    ("네!", "accept", None),
    ("YES 4821.", "accept", "4821"),
    ("YES4821", "accept", "4821"),
    ("네4821", "accept", "4821"),
    ("거절4821!", "decline", "4821"),
    ("YES #4821", "accept", "4821"),
    ("YES#4821", "accept", "4821"),
    ("도착 ＃４８２１", "arrived", "4821"),
    ("\u200b네 4821", "accept", "4821"),
    ("도\u200b착 4821", "arrived", "4821"),  # a zero-width space pasted inside the word
    ("YES\ufeff4821", "accept", "4821"),
    # Twilio's keywords are never ours, whatever follows them
    ("STOP", "twilio_keyword", None),
    ("stop", "twilio_keyword", None),
    ("Stop.", "twilio_keyword", None),
    ("CANCEL", "twilio_keyword", None),
    ("cancel 4821", "twilio_keyword", None),
    ("END", "twilio_keyword", None),
    ("QUIT", "twilio_keyword", None),
    ("UNSUBSCRIBE", "twilio_keyword", None),
    ("STOPALL", "twilio_keyword", None),
    ("REVOKE", "twilio_keyword", None),
    ("OPTOUT", "twilio_keyword", None),
    ("HELP", "twilio_keyword", None),
    ("help me", "twilio_keyword", None),
    ("INFO", "twilio_keyword", None),
    ("START", "twilio_keyword", None),
    ("UNSTOP", "twilio_keyword", None),
    ("ＳＴＯＰ", "twilio_keyword", None),
    # codes where none is taken, wrong-length codes, extra words, junk
    ("ON 1234", "unknown", None),
    ("OFF 1234", "unknown", None),
    ("출근 1234", "unknown", None),
    ("상태 4821", "unknown", None),
    ("YES 482", "unknown", None),
    ("YES 48211", "unknown", None),
    ("YES 4821 please", "unknown", None),
    ("네 4821 감사합니다", "unknown", None),
    ("YES YES", "unknown", None),
    ("4821", "unknown", None),
    ("#4821", "unknown", None),
    ("도착했어요", "unknown", None),
    ("yess", "unknown", None),
    ("Y E S", "unknown", None),
    ("YES 48a1", "unknown", None),
    ("YES ٤٨٢١", "unknown", None),
    ("", "unknown", None),
    ("   ", "unknown", None),
    ("?", "unknown", None),
    ("!!!", "unknown", None),
    ("안녕하세요 아이가 아파요", "unknown", None),
    ("\ud800", "unknown", None),
]


@pytest.mark.parametrize(("text", "verb", "code"), CASES)
def test_table(text: str, verb: str, code: str | None) -> None:
    assert parse(text) == ParsedSms(verb=verb, code=code, raw=text)


def test_table_covers_every_verb() -> None:
    assert {verb for _, verb, _ in CASES} == grammar.VERBS
    assert {
        "accept",
        "decline",
        "arrived",
        "done",
        "on_duty",
        "off_duty",
        "cancel",
        "status",
        "unknown",
        "twilio_keyword",
    } == grammar.VERBS


def test_verb_constants() -> None:
    assert (grammar.ACCEPT, grammar.DECLINE, grammar.ARRIVED, grammar.DONE) == (
        "accept",
        "decline",
        "arrived",
        "done",
    )
    assert (grammar.ON_DUTY, grammar.OFF_DUTY, grammar.CANCEL, grammar.STATUS) == (
        "on_duty",
        "off_duty",
        "cancel",
        "status",
    )
    assert (grammar.UNKNOWN, grammar.TWILIO_KEYWORD) == ("unknown", "twilio_keyword")


def test_twilio_keywords_exported_and_disjoint_from_commands() -> None:
    assert frozenset(TWILIO_WORDS) == grammar.TWILIO_KEYWORDS
    assert not set(ALL_WORDS) & grammar.TWILIO_KEYWORDS
    # Parents cancel in Korean only; the English word must never act.
    assert parse("CANCEL 4821").verb == "twilio_keyword"
    assert parse("취소 4821").verb == "cancel"


def test_every_contract_word_is_recognised() -> None:
    for word, verb in ALL_WORDS.items():
        assert parse(word) == ParsedSms(verb, None, word)
    for word, verb in CODE_WORDS.items():
        assert parse(f"{word} 1234") == ParsedSms(verb, "1234", f"{word} 1234")
    for word in BARE_WORDS:
        assert parse(f"{word} 1234").verb == "unknown"


def test_parsed_sms_is_frozen() -> None:
    parsed = parse("YES 4821")
    with pytest.raises(AttributeError):
        parsed.verb = "decline"  # type: ignore[misc]


# --- properties -------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=60)


@given(any_text)
def test_parse_never_raises_and_keeps_raw(text: str) -> None:
    parsed = parse(text)
    assert parsed.raw == text
    assert parsed.verb in grammar.VERBS
    if parsed.code is not None:
        assert len(parsed.code) == 4 and parsed.code.isascii() and parsed.code.isdigit()
        assert parsed.verb in {"accept", "decline", "arrived", "done", "cancel"}


# Near-miss text: made of the pieces commands are made of, so shrinking finds real edge cases.
near_miss = st.text(
    st.sampled_from(
        list(
            "YESNOARIVDTUFyesnoarivdtuf네예수락거절아니오요도착완료출근퇴근취소상태0123456789 #!.~?\t"
        )
    ),
    max_size=20,
)


@given(near_miss)
def test_near_miss_text_yields_a_well_formed_result(text: str) -> None:
    parsed = parse(text)
    assert parsed.verb in grammar.VERBS
    if parsed.verb in {"unknown", "twilio_keyword"}:
        assert parsed.code is None
    if parsed.code is not None:
        # A code is only ever read from four digits that are actually in the text.
        assert parsed.code in unicodedata.normalize("NFKC", text)


codes = st.from_regex(r"[0-9]{4}", fullmatch=True)
edge_space = st.sampled_from(["", " ", "  ", "\t", "\n", "\u3000", " \u3000 ", "\r\n"])
separator = st.sampled_from([" ", "  ", "\t", "\u3000", "", "#", " #", " # ", ", "])
trailing = st.sampled_from(["", "!", "!!", ".", "~", "?", "~!", " !", "...", "\u3002"])


def random_case(word: str, flips: list[bool]) -> str:
    return "".join(
        ch.swapcase() if i < len(flips) and flips[i] else ch for i, ch in enumerate(word)
    )


@given(
    word=st.sampled_from(sorted(CODE_WORDS)),
    code=codes,
    lead=edge_space,
    sep=separator,
    tail=trailing,
    end=edge_space,
    flips=st.lists(st.booleans(), max_size=8),
    wide=st.booleans(),
)
def test_command_with_code_survives_typing_variants(
    word: str,
    code: str,
    lead: str,
    sep: str,
    tail: str,
    end: str,
    flips: list[bool],
    wide: bool,
) -> None:
    text = f"{lead}{random_case(word, flips)}{sep}{code}{tail}{end}"
    if wide:
        text = full_width(text)
    assert parse(text) == ParsedSms(CODE_WORDS[word], code, text)


@given(
    word=st.sampled_from(sorted(ALL_WORDS)),
    lead=edge_space,
    tail=trailing,
    end=edge_space,
    flips=st.lists(st.booleans(), max_size=8),
    wide=st.booleans(),
)
def test_command_without_code_survives_typing_variants(
    word: str, lead: str, tail: str, end: str, flips: list[bool], wide: bool
) -> None:
    text = f"{lead}{random_case(word, flips)}{tail}{end}"
    if wide:
        text = full_width(text)
    assert parse(text) == ParsedSms(ALL_WORDS[word], None, text)


@given(
    word=st.sampled_from(sorted(BARE_WORDS)),
    code=codes,
    sep=separator,
)
def test_bare_commands_reject_a_code(word: str, code: str, sep: str) -> None:
    assert parse(f"{word}{sep}{code}").verb == "unknown"


@given(
    word=st.sampled_from(sorted(CODE_WORDS)),
    code=codes,
    extra=st.text(st.characters(categories=["L"]), min_size=1, max_size=8),
)
def test_extra_words_after_a_command_are_unknown(word: str, code: str, extra: str) -> None:
    assert parse(f"{word} {code} {extra}").verb == "unknown"


@given(
    word=st.sampled_from(sorted(CODE_WORDS)),
    code=st.from_regex(r"[0-9]{1,3}|[0-9]{5,8}", fullmatch=True),
)
def test_codes_of_the_wrong_length_are_unknown(word: str, code: str) -> None:
    assert parse(f"{word} {code}").verb == "unknown"


@given(
    word=st.sampled_from(TWILIO_WORDS),
    flips=st.lists(st.booleans(), max_size=12),
    rest=st.sampled_from(["", " 4821", "!", " please", "."]),
)
def test_twilio_keywords_are_never_commands(word: str, flips: list[bool], rest: str) -> None:
    text = random_case(word, flips) + rest
    assert parse(text) == ParsedSms("twilio_keyword", None, text)


def _mentions_a_command_word(text: str) -> bool:
    # Invisible format characters (zero-width space) do not separate letters for a reader.
    visible = "".join(
        ch for ch in unicodedata.normalize("NFKC", text) if unicodedata.category(ch) != "Cf"
    )
    folded = {visible.upper(), visible.casefold()}
    return any(
        word.upper() in form or word.casefold() in form for word in ALL_WORDS for form in folded
    )


@given(any_text)
def test_text_that_is_not_a_command_is_unknown_or_twilio(text: str) -> None:
    assume(not _mentions_a_command_word(text))
    assert parse(text).verb in {"unknown", "twilio_keyword"}
    assert parse(text).code is None
