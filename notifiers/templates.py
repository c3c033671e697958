"""Outbound SMS texts, Korean first, and the segment arithmetic that keeps them to one SMS.

Hangul forces UCS-2, where one SMS holds 70 UTF-16 units (DESIGN.md section 5), so every Korean
text is budgeted to stay within 70 with realistic values: a 3-character name, a place of about
14 characters, times like "11/26 10:00". English texts (for people who asked for English) stay in
GSM-7 and within 160 -- as long as the caller passes English labels: a Hangul place or name
turns the whole message into UCS-2.

Texts are service messages only: no emoji (carriers mangle them and they force UCS-2), no
advertising, polite 해요체. No particle follows a parameter, because the right Korean particle
depends on the parameter's last sound (4821번은 but 5층으로), which a template cannot know.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

KO: Final = "ko"
EN: Final = "en"
LANGS: Final[frozenset[str]] = frozenset({KO, EN})

# Every kind's parameters; `render` requires all of them even where a variant does not print one
# (no_open_offer with an empty code), so a caller's missing field shows up on the first call.
PARAMS: Final[Mapping[str, tuple[str, ...]]] = {
    "request_received": ("code", "service_label", "start"),
    "offer": ("code", "service_label", "place", "start", "end", "valid_until"),
    "assigned": ("code", "carer_name", "start"),
    "already_filled": ("code",),
    "accepted_ack": ("code", "place", "start"),
    "job_address": ("code", "address"),
    "declined_ack": ("code",),
    "duty_on": (),
    "duty_off": (),
    "cancelled": ("code",),
    "no_open_offer": ("code",),
    "help": (),
    "unknown_number": (),
    "status": ("code", "status_label"),
    "escalated": ("code",),
    "dispatcher_escalation": ("code", "service_label", "reason"),
    "which_code": ("codes",),
    "busy_conflict": ("code",),
    "job_cancelled": ("code",),
    "arrived": ("code", "carer_name"),
    "completed": ("code", "carer_name"),
    # SMS intake (dispatch/sms_intake.py): a parent asks for care in one text, we ask back once.
    "intake_confirm": ("child_name", "service_label", "start", "end"),
    "intake_which_child": ("children",),
    "intake_refused": ("reason",),
    "intake_outside_hours": ("service_label", "hours"),
    "intake_cancelled": (),
    "intake_expired": (),
    # Visit-mode engine (dispatch/handlers/matching.py): offers closed, a carer pulling out.
    "offer_rescinded": ("code",),
    "carer_withdrew": ("code",),
    "withdrawn_ack": ("code",),
    # Centre mode (dispatch/handlers/centers.py): a place in a carer's group at a centre.
    "center_child_arriving": ("code", "child_name", "start", "center"),
    "center_booked": ("code", "center", "start", "end", "fee"),
    "center_pickup_reminder": ("code",),
    "center_provisional": ("code",),
    "center_confirmed": ("code", "center", "start"),
}

KINDS: Final[frozenset[str]] = frozenset(PARAMS)

_BRAND_KO: Final = "[돌봄콜] "
_BRAND_EN: Final = "Dolbom: "

_TEMPLATES: Final[Mapping[str, Mapping[str, str]]] = {
    "request_received": {
        KO: _BRAND_KO
        + "{start} {service_label} 요청을 접수했어요. 돌봄 선생님을 찾고 있어요. 코드 {code}",
        EN: _BRAND_EN + "we received your {service_label} request for {start} and are finding "
        "a carer. Your code is {code}.",
    },
    # The offer is the longest text and the one that matters most, so it spends no characters on
    # the brand (carers are registered and know the sender number). With a 6-character label, a
    # 14-character place and a dated start it is 66 units: re-measure before adding a word.
    "offer": {
        KO: "{service_label} {place} {start}~{end} 답장:네 {code}/거절 {code} {valid_until}까지",
        EN: "Dolbom job {code}: {service_label}, {place}, {start}-{end}. Reply YES {code} to "
        "accept or NO {code} to decline, by {valid_until}.",
    },
    "assigned": {
        KO: _BRAND_KO + "{code}번 요청에 {carer_name} 선생님이 배정됐어요. 시작 {start}",
        EN: _BRAND_EN + "carer {carer_name} is assigned to your request {code}, starting {start}.",
    },
    "already_filled": {
        KO: _BRAND_KO + "{code}번은 다른 선생님이 먼저 맡았어요. 응답 감사합니다.",
        EN: _BRAND_EN + "thank you. Job {code} was already taken by another carer.",
    },
    "accepted_ack": {
        KO: _BRAND_KO + "{code}번 배정이 확정됐어요. {start}, {place}",
        EN: _BRAND_EN + "confirmed, job {code} is yours. {start} at {place}.",
    },
    # Sent after accepted_ack, to the carer who took a home visit: the only place the
    # family's address goes.
    "job_address": {
        KO: _BRAND_KO + "{code}번 방문 주소: {address}",
        EN: _BRAND_EN + "job {code} address: {address}",
    },
    "declined_ack": {
        KO: _BRAND_KO + "{code}번 거절을 확인했어요. 감사합니다.",
        EN: _BRAND_EN + "noted, you declined job {code}.",
    },
    "duty_on": {
        KO: _BRAND_KO + "출근 처리됐어요. 새 요청이 오면 문자로 알려 드릴게요.",
        EN: _BRAND_EN + "you are on duty. We will text you job offers.",
    },
    "duty_off": {
        KO: _BRAND_KO + "퇴근 처리됐어요. 다시 출근하기 전까지 요청을 보내지 않아요.",
        EN: _BRAND_EN + "you are off duty. No offers until you text ON.",
    },
    "cancelled": {
        KO: _BRAND_KO + "{code}번 요청이 취소됐어요.",
        EN: _BRAND_EN + "your request {code} has been cancelled.",
    },
    "no_open_offer": {
        KO: _BRAND_KO + "{code}번으로 응답할 수 있는 요청이 없어요. 코드를 확인해 주세요.",
        EN: _BRAND_EN + "there is no open offer with code {code}. Please check the code.",
    },
    "help": {
        KO: _BRAND_KO + "명령: 네/거절 코드, 도착, 완료, 출근, 퇴근, 취소, 상태",
        # Parents cancel only with 취소 (CANCEL is a Twilio opt-out word), so the English help
        # has to show it; that one Hangul word makes it UCS-2, hence the 70-unit budget here.
        EN: "Commands: YES/NO code, ARRIVED, DONE, ON, OFF, STATUS, 취소 (cancel)",
    },
    "unknown_number": {
        KO: _BRAND_KO
        + "등록되지 않은 번호예요. 062-714-3635로 전화하거나 홈페이지에서 등록해 주세요.",
        EN: _BRAND_EN + "this number is not registered. To register, call 062-714-3635 or use "
        "our website.",
    },
    "status": {
        KO: _BRAND_KO + "{code}번 요청 상태: {status_label}",
        EN: _BRAND_EN + "request {code} status: {status_label}.",
    },
    # Honest: nobody has taken it yet, and a person is now looking at it.
    "escalated": {
        KO: _BRAND_KO + "{code}번 요청에 아직 선생님을 못 찾았어요. 상황실 담당자가 직접 연락드릴게요.",
        EN: _BRAND_EN + "no carer has taken request {code} yet. A dispatcher is on it and "
        "will contact you.",
    },
    "dispatcher_escalation": {
        KO: "[돌봄콜 상황실] {code}번 {service_label} 배정 필요 ({reason})",
        EN: "Dolbom dispatch: request {code} ({service_label}) needs a carer ({reason}).",
    },
    "which_code": {
        KO: _BRAND_KO + "응답할 요청이 여러 개예요. 코드와 함께 보내 주세요: {codes}",
        EN: _BRAND_EN + "you have several open offers. Reply with the code: {codes}",
    },
    "busy_conflict": {
        KO: _BRAND_KO + "{code}번은 이미 맡은 일정과 겹쳐서 배정할 수 없어요.",
        EN: _BRAND_EN + "job {code} overlaps a job you already have, so it can't be yours.",
    },
    "job_cancelled": {
        KO: _BRAND_KO + "{code}번 요청이 취소됐어요. 가지 않으셔도 돼요.",
        EN: _BRAND_EN + "job {code} has been cancelled. You don't need to go.",
    },
    "arrived": {
        KO: _BRAND_KO + "{carer_name} 선생님이 도착해 {code}번 돌봄을 시작했어요.",
        EN: _BRAND_EN + "carer {carer_name} has arrived; care for request {code} has started.",
    },
    "completed": {
        KO: _BRAND_KO + "{carer_name} 선생님의 {code}번 돌봄이 끝났어요. 감사합니다.",
        EN: _BRAND_EN + "carer {carer_name} has finished care for request {code}. Thank you.",
    },
    # The question before a parent's SMS request is booked. Its answers are the grammar's bare
    # 네 and 아니오 (YES/NO): a carer's 네 needs a code, a parent's bare one confirms this.
    "intake_confirm": {
        KO: _BRAND_KO + "{child_name} {service_label} {start}~{end} 신청할까요? 맞으면 네, 아니면 아니오",
        EN: _BRAND_EN + "book {service_label} for {child_name}, {start}-{end}? Reply YES if this "
        "is right, NO if not.",
    },
    # {children} is "1 박서연, 2 박서준": the parent answers with the number alone.
    "intake_which_child": {
        KO: _BRAND_KO + "어느 아이인가요? 번호만 답해 주세요. {children}",
        EN: _BRAND_EN + "which child is it for? Reply with the number only: {children}",
    },
    # {reason} is an Ineligible code (dispatch.domain.errors); render prints what it means.
    "intake_refused": {
        KO: _BRAND_KO + "신청할 수 없어요. {reason} 문의 062-714-3635",
        EN: _BRAND_EN + "we can't book this: {reason} Questions: 062-714-3635",
    },
    "intake_outside_hours": {
        KO: _BRAND_KO + "운영 시간이 아니라 신청할 수 없어요. {service_label} 운영 시간 {hours}",
        EN: _BRAND_EN + "that is outside the service hours, so it can't be booked. "
        "{service_label} hours: {hours}",
    },
    "intake_cancelled": {
        KO: _BRAND_KO + "신청하지 않았어요. 필요하면 다시 보내 주세요.",
        EN: _BRAND_EN + "OK, nothing was booked. Text us again when you need care.",
    },
    "intake_expired": {
        KO: _BRAND_KO + "15분이 지나 신청되지 않았어요. 다시 보내 주세요. 예: 병원 내일 10-14",
        EN: _BRAND_EN + "15 minutes have passed, so nothing was booked. Please send it again, "
        "e.g. hospital tomorrow 10-14",
    },
    # To a carer still holding an offer when another carer took the job or it was cancelled:
    # no reason given (either way the answer is "don't go"), and no reply needed.
    "offer_rescinded": {
        KO: _BRAND_KO + "{code}번 요청은 마감됐어요. 답장하지 않으셔도 돼요. 감사합니다.",
        EN: _BRAND_EN + "job {code} is closed, so no need to reply. Thank you.",
    },
    # Honest: the carer who took the job can't come, and we are looking again (no name, no
    # blame: the parent needs to know what happens next, not why).
    "carer_withdrew": {
        KO: _BRAND_KO + "{code}번 요청의 선생님이 사정상 못 가게 됐어요. 다른 선생님을 다시 찾고 있어요.",
        EN: _BRAND_EN + "the carer for request {code} can no longer come. We are finding "
        "another carer now.",
    },
    "withdrawn_ack": {
        KO: _BRAND_KO + "{code}번 배정 취소를 확인했어요. 다른 선생님을 찾을게요.",
        EN: _BRAND_EN + "noted, you are no longer on job {code}. We will find another carer.",
    },
    # To the carer whose group the child joins: the given name only, and how to check it in.
    "center_child_arriving": {
        KO: _BRAND_KO + "{code}번 {child_name} 어린이 {start} 도착 예정({center}) 입실 시 답장:도착 {code}",
        EN: _BRAND_EN + "job {code}: {child_name} arrives {start} at {center}. "
        "Reply ARRIVED {code} at check-in.",
    },
    # To the parent. {fee} is empty until the policy prices bookings: see _WITHOUT_FEE. The
    # pickup rule does not fit in the same segment, so it is a second SMS.
    "center_booked": {
        KO: _BRAND_KO + "{code}번 예약됐어요. {center} {start}~{end} 요금 {fee}",
        EN: _BRAND_EN + "booking {code} is made: {center}, {start}-{end}. Fee {fee}.",
    },
    "center_pickup_reminder": {
        KO: _BRAND_KO + "{code}번 안내: 아이는 서약서에 적은 보호자만 데려갈 수 있어요. "
        "다른 분께는 인계하지 않아요.",
        EN: _BRAND_EN + "booking {code}: only the guardians named on your pledge form can "
        "collect your child. We hand the child to nobody else.",
    },
    # An infant's booking holds until a dispatcher confirms it (the centre may still refuse it).
    "center_provisional": {
        KO: _BRAND_KO + "{code}번은 영아 예약이라 아직 가예약이에요. 센터가 확인하면 확정 문자를 드려요.",
        EN: _BRAND_EN + "booking {code} is for an infant, so it is provisional until the "
        "centre confirms it. We will text you then.",
    },
    "center_confirmed": {
        KO: _BRAND_KO + "{code}번 예약이 확정됐어요. {center} {start}",
        EN: _BRAND_EN + "booking {code} is confirmed: {center}, {start}.",
    },
}

# center_booked before bookings are priced (an empty {fee}): no "요금" with nothing after it.
_WITHOUT_FEE: Final[Mapping[str, str]] = {
    KO: _BRAND_KO + "{code}번 예약됐어요. {center} {start}~{end}",
    EN: _BRAND_EN + "booking {code} is made: {center}, {start}-{end}.",
}

# What an intake refusal's code means, in words a parent can act on. Codes not listed here get
# the general sentence; the code itself never reaches the parent.
_REFUSAL_REASONS: Final[Mapping[str, Mapping[str, str]]] = {
    KO: {
        "age_out_of_range": "아이 나이가 이용 대상이 아니에요.",
        "lead_time": "그 시간은 아직 예약할 수 없어요.",
        "duration_out_of_range": "이용 시간 길이가 맞지 않아요.",
        "invalid_time": "이미 지났거나 맞지 않는 시간이에요.",
        "health_consent_required": "건강정보 이용 동의가 필요해요.",
        "unknown_service": "문자로는 신청할 수 없는 서비스예요.",
        "outside_service_hours": "운영 시간이 아니에요.",
        "duplicate_request": "그 시간에 이미 신청된 돌봄이 있어요.",
    },
    EN: {
        "age_out_of_range": "the child's age is not covered by this service.",
        "lead_time": "that time can't be booked yet.",
        "duration_out_of_range": "the length of care is not allowed for this service.",
        "invalid_time": "that time is over or not valid.",
        "health_consent_required": "we need your consent to use health data.",
        "unknown_service": "this service can't be booked by text.",
        "outside_service_hours": "that is outside the service hours.",
        "duplicate_request": "the child already has care booked at that time.",
    },
}
_REFUSAL_DEFAULT: Final[Mapping[str, str]] = {
    KO: "신청 조건에 맞지 않아요.",
    EN: "it does not meet the service's conditions.",
}

# "No open offer" without a code (the carer sent a bare 네) must not print an empty "번".
_NO_OPEN_OFFER_WITHOUT_CODE: Final[Mapping[str, str]] = {
    KO: _BRAND_KO + "지금 응답할 수 있는 요청이 없어요.",
    EN: _BRAND_EN + "you have no open offer right now.",
}


def _lang(lang: str) -> str:
    # A stored preference like "en-US" still means English; anything we have no text for gets
    # Korean, the service's language, rather than a failed send.
    base = lang.strip().lower().replace("_", "-").split("-", 1)[0]
    return base if base in LANGS else KO


def _clean(value: object) -> str:
    # Values may come from people (names, notes); a newline or run of spaces would waste units
    # and break the layout of a one-segment text.
    return " ".join(str(value).split())


def render(kind: str, params: Mapping[str, object], lang: str = KO) -> str:
    """Render one SMS text.

    Raises KeyError for an unknown `kind`, and KeyError(name) for the first missing parameter.
    Extra parameters are ignored, so callers may pass one dict for several kinds.
    """
    if kind not in PARAMS:
        raise KeyError(kind)
    for name in PARAMS[kind]:
        if name not in params:
            raise KeyError(name)
    values = {name: _clean(params[name]) for name in PARAMS[kind]}
    language = _lang(lang)
    if kind == "no_open_offer" and not values["code"]:
        return _NO_OPEN_OFFER_WITHOUT_CODE[language]
    if kind == "center_booked" and not values["fee"]:
        return _WITHOUT_FEE[language].format_map(values)
    if kind == "intake_refused":
        values["reason"] = _REFUSAL_REASONS[language].get(values["reason"],
                                                          _REFUSAL_DEFAULT[language])
    return _TEMPLATES[kind][language].format_map(values)


# GSM 03.38 default alphabet (as Unicode) and its extension table. Backtick and tab are not in it.
_GSM7_BASIC: Final[frozenset[str]] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Each is sent as ESC + char, so it costs two septets.
_GSM7_EXTENSION: Final[frozenset[str]] = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE: Final = 160
GSM7_PART: Final = 153  # 7 septets go to the concatenation header
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67  # 3 units go to the concatenation header


def is_gsm7(text: str) -> bool:
    """Whether the whole text can go out in GSM-7 (otherwise Twilio sends it as UCS-2)."""
    return all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in text)


def ucs2_length(text: str) -> int:
    """Length in UTF-16 code units: characters outside the BMP (emoji) count 2."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _gsm7_cost(ch: str) -> int:
    return 2 if ch in _GSM7_EXTENSION else 1


def _ucs2_cost(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def sms_segments(text: str) -> int:
    """Number of SMS segments Twilio bills for `text` (1 for the empty text, as Twilio counts).

    A multi-part message is packed greedily: a character never straddles two parts, so an
    extension character or a surrogate pair at a boundary moves whole to the next part and a
    part may hold one unit less than its nominal size.
    """
    if is_gsm7(text):
        cost, single, part = _gsm7_cost, GSM7_SINGLE, GSM7_PART
    else:
        cost, single, part = _ucs2_cost, UCS2_SINGLE, UCS2_PART
    costs = [cost(ch) for ch in text]
    if sum(costs) <= single:
        return 1
    segments, used = 1, 0
    for units in costs:
        if used + units > part:
            segments += 1
            used = 0
        used += units
    return segments
