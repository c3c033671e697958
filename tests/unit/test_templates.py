"""SMS templates: every text fits one segment, and the segment arithmetic matches Twilio's."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import defaultdict

import pytest

from notifiers import templates
from notifiers.grammar import TWILIO_KEYWORDS, parse
from notifiers.templates import is_gsm7, render, sms_segments, ucs2_length

# Realistic and deliberately on the long side: a 14-character ward, a dated start time.
KO_PARAMS: dict[str, object] = {
    "code": "4821",
    "service_label": "입원아동돌봄",
    "place": "광주기독병원 소아병동 5층",
    "start": "11/26 10:00",
    "end": "14:00",
    "valid_until": "10:20",
    "carer_name": "김민지",
    "address": "광주 광산구 수완로 123, 101동 1001호",
    "status_label": "돌봄 선생님 찾는 중",
    "reason": "no_candidates",
    "codes": "4821, 5932",
    "child_name": "박서연",
    "children": "1 박서연, 2 박서준",
    "hours": "08:00-20:00",
    "center": "광주긴급아이돌봄센터",
    "fee": "12,000원",
}
EN_PARAMS: dict[str, object] = {
    "code": "4821",
    "service_label": "hospital child care",
    "place": "Chosun Univ. Hospital, pediatric ward 5F",
    "start": "11/26 10:00",
    "end": "14:00",
    "valid_until": "10:20",
    "carer_name": "Kim Minji",
    "address": "123 Suwan-ro, Gwangsan-gu, Gwangju, 101-1001",
    "status_label": "finding a carer",
    "reason": "no_candidates",
    "codes": "4821, 5932",
    "child_name": "Park Seoyeon",
    "children": "1 Park Seoyeon, 2 Park Seojun",
    "hours": "08:00-20:00",
    "center": "Gwangju Emergency Childcare Centre",
    "fee": "KRW 12,000",
}
ALL_KINDS = [
    "request_received",
    "offer",
    "assigned",
    "already_filled",
    "accepted_ack",
    "job_address",
    "declined_ack",
    "duty_on",
    "duty_off",
    "cancelled",
    "no_open_offer",
    "help",
    "unknown_number",
    "status",
    "escalated",
    "dispatcher_escalation",
    "which_code",
    "busy_conflict",
    "job_cancelled",
    "arrived",
    "completed",
    "intake_confirm",
    "intake_which_child",
    "intake_refused",
    "intake_outside_hours",
    "intake_cancelled",
    "intake_expired",
    "offer_rescinded",
    "carer_withdrew",
    "withdrawn_ack",
    "center_child_arriving",
    "center_booked",
    "center_pickup_reminder",
    "center_provisional",
    "center_confirmed",
]


def test_kind_list_is_complete() -> None:
    assert set(ALL_KINDS) == templates.KINDS


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_korean_text_is_one_ucs2_segment(kind: str) -> None:
    text = render(kind, KO_PARAMS)
    assert text == render(kind, KO_PARAMS, lang="ko")
    assert ucs2_length(text) <= 70, (ucs2_length(text), text)
    assert sms_segments(text) == 1
    assert re.search("[가-힣]", text)


@pytest.mark.parametrize(
    "place", ["전남대병원 소아병동 5층", "조선대병원 소아병동 5층", "광주기독병원 소아청소년과"]
)
@pytest.mark.parametrize("name", ["김민지", "남궁민수"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_korean_text_fits_with_other_realistic_values(kind: str, place: str, name: str) -> None:
    text = render(kind, {**KO_PARAMS, "place": place, "carer_name": name})
    assert sms_segments(text) == 1, (ucs2_length(text), text)


@pytest.mark.parametrize("kind", [k for k in ALL_KINDS if k != "help"])
def test_english_text_is_one_gsm7_segment(kind: str) -> None:
    text = render(kind, EN_PARAMS, lang="en")
    assert is_gsm7(text), text
    assert len(text) <= 160, (len(text), text)
    assert sms_segments(text) == 1
    assert not re.search("[가-힣]", text)


def test_english_help_shows_korean_cancel_within_one_segment() -> None:
    # 취소 is the only cancel command (CANCEL is Twilio's), so English help must show it, which
    # makes it UCS-2: the 70-unit budget applies.
    text = render("help", {}, lang="en")
    assert "취소" in text
    assert not is_gsm7(text)
    assert ucs2_length(text) <= 70
    assert sms_segments(text) == 1
    for word in ("YES", "NO", "ARRIVED", "DONE", "ON", "OFF", "STATUS"):
        assert re.search(rf"\b{word}\b", text), word


def test_korean_help_lists_the_commands() -> None:
    text = render("help", {})
    for word in ("네", "거절", "도착", "완료", "출근", "퇴근", "취소", "상태"):
        assert word in text, word


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_offer_carries_code_and_deadline(lang: str) -> None:
    params = KO_PARAMS if lang == "ko" else EN_PARAMS
    text = render("offer", {**params, "code": "7305", "valid_until": "23:50"}, lang=lang)
    assert "7305" in text
    assert "23:50" in text
    assert str(params["place"]) in text
    assert "11/26 10:00" in text and "14:00" in text


def test_offer_tells_the_replies_that_the_grammar_understands() -> None:
    ko = render("offer", KO_PARAMS)
    assert "네 4821" in ko and "거절 4821" in ko
    assert parse("네 4821").verb == "accept" and parse("거절 4821").verb == "decline"
    en = render("offer", EN_PARAMS, lang="en")
    assert "YES 4821" in en and "NO 4821" in en
    assert parse("YES 4821").verb == "accept" and parse("NO 4821").verb == "decline"


@pytest.mark.parametrize("lang", ["ko", "en"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_texts_never_suggest_a_twilio_keyword_or_use_emoji(kind: str, lang: str) -> None:
    text = render(kind, KO_PARAMS if lang == "ko" else EN_PARAMS, lang=lang)
    assert not set(re.findall(r"[A-Z]{2,}", text)) & TWILIO_KEYWORDS, text
    assert all(ord(ch) <= 0xFFFF and unicodedata.category(ch) != "So" for ch in text), text
    assert "\n" not in text and "  " not in text


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("request_received", ["4821", "입원아동돌봄", "11/26 10:00"]),
        ("assigned", ["4821", "김민지", "11/26 10:00"]),
        ("already_filled", ["4821"]),
        ("accepted_ack", ["4821", "광주기독병원 소아병동 5층", "11/26 10:00"]),
        ("declined_ack", ["4821"]),
        ("cancelled", ["4821"]),
        ("no_open_offer", ["4821"]),
        ("status", ["4821", "돌봄 선생님 찾는 중"]),
        ("unknown_number", ["062-714-3635"]),
        ("duty_on", ["출근"]),
        ("duty_off", ["퇴근"]),
    ],
)
def test_korean_text_shows_its_values(kind: str, expected: list[str]) -> None:
    text = render(kind, KO_PARAMS)
    for value in expected:
        assert value in text, (value, text)


def test_exact_korean_texts() -> None:
    assert render("cancelled", {"code": "4821"}) == "[돌봄콜] 4821번 요청이 취소됐어요."
    assert render("offer", KO_PARAMS) == (
        "입원아동돌봄 광주기독병원 소아병동 5층 11/26 10:00~14:00 답장:네 4821/거절 4821 10:20까지"
    )
    assert render("help", {}) == "[돌봄콜] 명령: 네/거절 코드, 도착, 완료, 출근, 퇴근, 취소, 상태"


def test_no_open_offer_without_a_code() -> None:
    ko = render("no_open_offer", {"code": ""})
    assert "번" not in ko and "  " not in ko
    assert ko == "[돌봄콜] 지금 응답할 수 있는 요청이 없어요."
    en = render("no_open_offer", {"code": ""}, lang="en")
    assert en == "Dolbom: you have no open offer right now."
    assert "4821번" in render("no_open_offer", {"code": "4821"})


@pytest.mark.parametrize(
    ("kind", "name"), [(kind, name) for kind in ALL_KINDS for name in templates.PARAMS[kind]]
)
def test_missing_param_raises_key_error_naming_it(kind: str, name: str) -> None:
    params = {k: v for k, v in KO_PARAMS.items() if k != name}
    with pytest.raises(KeyError) as excinfo:
        render(kind, params)
    assert excinfo.value.args == (name,)


def test_params_table_matches_what_the_texts_use() -> None:
    assert templates.PARAMS["offer"] == (
        "code",
        "service_label",
        "place",
        "start",
        "end",
        "valid_until",
    )
    for kind in ALL_KINDS:
        for lang in ("ko", "en"):
            used = {
                field
                for _, field, _, _ in string.Formatter().parse(templates._TEMPLATES[kind][lang])
                if field
            }
            assert used == set(templates.PARAMS[kind]), (kind, lang)


def test_missing_param_is_reported_even_for_a_defaulting_mapping() -> None:
    with pytest.raises(KeyError) as excinfo:
        render("cancelled", defaultdict(str))
    assert excinfo.value.args == ("code",)


def test_unknown_kind_raises_key_error() -> None:
    with pytest.raises(KeyError):
        render("welcome", {})


def test_extra_params_are_ignored_and_values_are_tidied() -> None:
    text = render("assigned", {**KO_PARAMS, "carer_name": " 김\n민지 ", "unused": 1})
    assert "김 민지 선생님" in text
    assert render("cancelled", {"code": 4821}) == "[돌봄콜] 4821번 요청이 취소됐어요."


def test_language_fallback() -> None:
    assert render("duty_on", {}, lang="en-US") == render("duty_on", {}, lang="en")
    assert render("duty_on", {}, lang="EN") == render("duty_on", {}, lang="en")
    assert render("duty_on", {}, lang="ja") == render("duty_on", {}, lang="ko")
    assert render("duty_on", {}, lang="en") != render("duty_on", {}, lang="ko")


# --- segment arithmetic -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("{" * 80, 1),  # extension characters cost two septets
        ("{" * 81, 2),
        ("a" * 159 + "€", 2),
        ("a" * 158 + "^", 1),
        ("a" * 152 + "[" + "a" * 152, 3),  # ESC+[ never straddles a part: 306 septets, 3 parts
        ("가" * 70, 1),
        ("가" * 71, 2),
        ("가" * 134, 2),
        ("가" * 135, 3),
        ("a" * 69 + "가", 1),  # one Hangul character makes the whole text UCS-2
        ("a" * 70 + "가", 2),
        ("a" * 160 + "`", 3),  # backtick is not GSM-7
        ("a\tb", 1),
        ("가" * 68 + "😀", 1),  # an emoji is two UTF-16 units
        ("가" * 69 + "😀", 2),
        ("😀" * 35, 1),
        ("😀" * 36, 2),
        ("가" * 66 + "😀" + "가" * 66, 3),  # a surrogate pair never straddles a part
    ],
)
def test_sms_segments(text: str, segments: int) -> None:
    assert sms_segments(text) == segments


def test_ucs2_length() -> None:
    assert ucs2_length("") == 0
    assert ucs2_length("가나다") == 3
    assert ucs2_length("😀") == 2
    assert ucs2_length("a😀b") == 4
    assert ucs2_length("\ud800") == 1


def test_is_gsm7() -> None:
    assert is_gsm7("Hello @ £5 é {x}")
    assert not is_gsm7("안녕")
    assert not is_gsm7("tab\there")
    assert not is_gsm7("`")


# --- centre mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("center", ["광주긴급아이돌봄센터", "서구긴급아이돌봄센터"])
@pytest.mark.parametrize("child_name", ["서연", "민수", "하늘별"])
@pytest.mark.parametrize("fee", ["", "8,000원", "120,000원"])
@pytest.mark.parametrize("kind", ["center_child_arriving", "center_booked", "center_confirmed"])
def test_centre_texts_fit_one_segment_with_both_centres(kind: str, center: str,
                                                          child_name: str, fee: str) -> None:
    text = render(kind, {**KO_PARAMS, "center": center, "child_name": child_name, "fee": fee})
    assert sms_segments(text) == 1, (ucs2_length(text), text)
    assert center in text


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_centre_booking_without_a_fee_says_nothing_about_a_fee(lang: str) -> None:
    params = KO_PARAMS if lang == "ko" else EN_PARAMS
    priced = render("center_booked", params, lang=lang)
    unpriced = render("center_booked", {**params, "fee": ""}, lang=lang)
    assert str(params["fee"]) in priced
    assert ("요금" in priced) if lang == "ko" else ("Fee" in priced)
    assert "요금" not in unpriced and "Fee" not in unpriced
    assert "  " not in unpriced and not unpriced.endswith(("요금", "Fee", "Fee ."))
    for value in ("4821", params["center"], "11/26 10:00", "14:00"):
        assert str(value) in unpriced, (value, unpriced)


def test_centre_texts_carry_what_the_reader_needs() -> None:
    arriving = render("center_child_arriving", {**KO_PARAMS, "child_name": "서연"})
    assert "서연" in arriving and "11/26 10:00" in arriving and "광주긴급아이돌봄센터" in arriving
    # The carer checks the child in with the grammar's ARRIVED command and the job code.
    assert "도착 4821" in arriving and parse("도착 4821").verb == "arrived"
    assert "ARRIVED 4821" in render("center_child_arriving", EN_PARAMS, lang="en")
    assert parse("ARRIVED 4821").verb == "arrived"
    reminder = render("center_pickup_reminder", KO_PARAMS)
    assert "4821" in reminder and "보호자만" in reminder
    assert "guardians named" in render("center_pickup_reminder", EN_PARAMS, lang="en")
    assert "가예약" in render("center_provisional", KO_PARAMS)
    assert "확정" in render("center_confirmed", KO_PARAMS)


# --- visit-mode engine ------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_visit_engine_texts_carry_the_code_and_say_what_happens(lang: str) -> None:
    params = KO_PARAMS if lang == "ko" else EN_PARAMS
    rescinded = render("offer_rescinded", params, lang=lang)
    withdrew = render("carer_withdrew", params, lang=lang)
    ack = render("withdrawn_ack", params, lang=lang)
    for text in (rescinded, withdrew, ack):
        assert "4821" in text
    if lang == "ko":
        assert "마감" in rescinded and "답장하지 않으셔도" in rescinded
        assert "못 가게" in withdrew and "다시 찾고" in withdrew
        assert "취소를 확인" in ack
    else:
        assert "closed" in rescinded and "no need to reply" in rescinded
        assert "can no longer come" in withdrew and "finding another carer" in withdrew
        assert "no longer on job" in ack
