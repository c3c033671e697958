"""Phone intake (IVR): a registered parent books care with the keypad or by voice.

The server keeps no call state. Each answer's state rides in the query string of the
next `<Gather action>`; Twilio signs that full URL, so a caller cannot alter it.

    POST /webhooks/twilio/voice                      known caller → service menu
    POST .../voice/step?step=service&try=N           1..9 = a policy           → child menu
    POST .../voice/step?step=child&service=S&try=N   1..9 = a child (oldest first) → time menu
    POST .../voice/step?step=time&service=S&child=C&t1=…&t2=…&try=N
                                                     1 = today from now, 2 = tomorrow 10:00
    POST .../voice/step?step=confirm&service=S&child=C&at=YYYYMMDDHHMM&try=N
                                                     1 = submit, 2 = cancel
    POST .../voice/step?step=dialed                  after <Dial>: nobody answered → centre's number

Times (`t1`, `t2`, `at`) are local to the policy's time zone, as YYYYMMDDHHMM, fixed when the
menu is spoken, so "1" books exactly the time the parent heard.

0 at any step, an unknown caller, or a second silence / wrong key at one step → the on-duty
dispatcher (`<Dial>`), or the centre's number when none is configured. The first silence or
wrong key repeats the step with try=2.

Speech (`SpeechResult`) is read like a key, in this order: a word for the dispatcher
(상담원, 상담사, 직원) → 0; a step keyword (a service label or 병원/센터/집, a child's name,
오늘/지금/내일, 네/확인/취소/아니) → that option; the first Arabic digit; a Korean number word
as a whole word, optionally with 번/번째/요 (일·하나·첫 → 1, 이·둘·두 → 2, …). Whole words,
because "내일" (tomorrow) contains "일" (one).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from twilio.twiml.voice_response import VoiceResponse

from api.webhooks import signed_form
from dispatch import commands as c
from dispatch.domain.errors import Ineligible, NotFound
from dispatch.domain.policy import ServicePolicy
from dispatch.unit_of_work import UnitOfWork
from schemas.config import Settings
from schemas.phone import InvalidPhone, mask, normalise

log = logging.getLogger("dolbom.voice")
router = APIRouter(prefix="/webhooks/twilio/voice")

LANG = "ko-KR"
PATH = "/webhooks/twilio/voice"
CENTRE_PHONE = "062-714-3635"  # 광주긴급아이돌봄센터, for when no dispatcher number is set
BOOKING = timedelta(hours=4)
TOMORROW_AT = time(10)
GATHER_TIMEOUT_S = 6
DIAL_TIMEOUT_S = 30
# The phone line exists first of all for hospital care (a parent at the bedside), so it is
# always "1"; the other policies follow by id. A policy field for menu order would be better.
FIRST_SERVICE = "hospital"
# A caller can't key in a hospital or ward: placeholders the dispatcher replaces by calling back.
PHONE_PLACEHOLDERS = {"hospital": "전화 접수", "ward": "확인 필요"}
SERVICE_WORDS = {"hospital": ("병원", "입원"), "emergency-center": ("센터", "긴급"),
                 "home-emergency": ("집", "가정")}
DISPATCHER_WORDS = ("상담원", "상담사", "직원")
NUMBER_WORDS = {"공": "0", "영": "0", "일": "1", "하나": "1", "한": "1", "첫": "1",
                "이": "2", "둘": "2", "두": "2", "삼": "3", "셋": "3", "세": "3",
                "사": "4", "넷": "4", "네": "4", "오": "5", "다섯": "5", "육": "6",
                "여섯": "6", "칠": "7", "일곱": "7", "팔": "8", "여덟": "8", "구": "9",
                "아홉": "9"}
_SUFFIXES = ("번째", "번", "이요", "요", "입니다", "이에요", "예요")
_STAMP = "%Y%m%d%H%M"
_REFUSALS = {
    "outside_service_hours": "{topic} 운영 시간 안에서만 신청할 수 있습니다.{hours}",
    "age_out_of_range": "아이의 나이가 {label} 이용 대상이 아닙니다.",
    "health_consent_required": "{topic} 건강정보 이용 동의가 있어야 신청할 수 있습니다.",
    "lead_time": "선택하신 시간은 {label} 예약 가능 시간이 아닙니다.",
    "duplicate_request": "이 아이는 그 시간에 이미 접수된 신청이 있습니다.",
    "duration_out_of_range": "선택하신 이용 시간은 {label}에서 받을 수 없습니다.",
}


def _now() -> datetime:
    return datetime.now(UTC)


# -- who is calling -------------------------------------------------------------------

@dataclass(frozen=True)
class Caller:
    """What the IVR needs of a family, copied out of the unit of work's session."""

    family_id: str
    district: str
    children: tuple[tuple[str, str], ...]  # (id, name), oldest first: "1" is the eldest


def find_caller(uow_factory: Callable[[], UnitOfWork], raw_phone: str) -> Caller | None:
    try:
        phone = normalise(raw_phone)
    except InvalidPhone:  # withheld numbers arrive as "anonymous" and the like
        return None
    with uow_factory() as uow:
        family = uow.families.by_phone(phone)
        if family is None:
            return None
        kids = sorted(family.children, key=lambda ch: (ch.birth_date, ch.name, ch.id))
        return Caller(family.id, family.district, tuple((ch.id, ch.name) for ch in kids))


# -- menus --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    digit: str
    value: str
    label: str
    words: tuple[str, ...] = ()  # speech keywords besides the digit


@dataclass(frozen=True)
class Menu:
    state: dict[str, str]  # the query string of this step, without `try`
    question: str
    options: tuple[Option, ...]


def _stamp(dt: datetime) -> str:
    return dt.strftime(_STAMP)


def _parse_stamp(text: str, policy: ServicePolicy) -> datetime | None:
    try:
        return datetime.strptime(text, _STAMP).replace(tzinfo=policy.tz)
    except ValueError:
        return None


def _topic(word: str) -> str:
    """word + 은/는, chosen by whether the last Hangul syllable ends in a consonant."""
    last = word[-1:]
    closed = "가" <= last <= "힣" and (ord(last) - ord("가")) % 28 != 0
    return word + ("은" if closed else "는")


def _clock(t: time | datetime) -> str:
    return f"{t.hour}시" + (f" {t.minute}분" if t.minute else "")


def _spoken_time(dt: datetime) -> str:
    return f"{dt.month}월 {dt.day}일 {_clock(dt)}"


def services(policies: Mapping[str, ServicePolicy]) -> list[ServicePolicy]:
    ordered = sorted(policies.values(), key=lambda p: (p.id != FIRST_SERVICE, p.id))
    return ordered[:9]


def _quarter(moment: datetime, *, up: bool) -> datetime:
    minute = moment.replace(second=0, microsecond=0)
    if up:
        if minute < moment:
            minute += timedelta(minutes=1)
        return minute + timedelta(minutes=-minute.minute % 15)
    return minute - timedelta(minutes=minute.minute % 15)


def offered_times(policy: ServicePolicy, now: datetime) -> tuple[datetime, datetime]:
    """The two starts the menu offers, both within the policy's lead time: the soonest
    (now, or its minimum lead from now), rounded up to the quarter hour; and tomorrow at
    10:00, or, for a service booked only a few hours ahead, the latest quarter it takes."""
    local = now.astimezone(policy.tz)
    soonest = _quarter(local + timedelta(minutes=policy.min_lead_minutes), up=True)
    later = datetime.combine(local.date() + timedelta(days=1), TOMORROW_AT, policy.tz)
    if policy.max_lead_minutes is not None:
        latest = _quarter(local + timedelta(minutes=policy.max_lead_minutes), up=False)
        if later > latest:
            later = max(latest, soonest + timedelta(minutes=15))
    return soonest, later


class Ivr:
    """Rebuilds the menu a step offered from its query string, and decides what comes next."""

    def __init__(self, policies: Mapping[str, ServicePolicy], caller: Caller) -> None:
        self.policies, self.caller = policies, caller

    def child_name(self, child_id: str) -> str | None:
        return dict(self.caller.children).get(child_id)

    def menu(self, state: Mapping[str, str]) -> Menu | None:
        """None when the state doesn't describe a step this caller can be at."""
        step = state.get("step", "")
        if step == "service":
            opts = tuple(Option(str(i), p.id, p.label, (p.label, *SERVICE_WORDS.get(p.id, ())))
                         for i, p in enumerate(services(self.policies), 1))
            return Menu({"step": step}, "원하시는 돌봄 서비스를 골라 주세요.", opts)
        policy = self.policies.get(state.get("service", ""))
        if policy is None:
            return None
        if step == "child":
            opts = tuple(Option(str(i), cid, name, (name, name[1:] if len(name) > 2 else name))
                         for i, (cid, name) in enumerate(self.caller.children[:9], 1))
            return Menu({"step": step, "service": policy.id}, "돌봄을 받을 아이를 골라 주세요.",
                         opts) if opts else None
        child = self.child_name(state.get("child", ""))
        if child is None:
            return None
        base = {"service": policy.id, "child": state["child"]}
        if step == "time":
            t1, t2 = (_parse_stamp(state.get(k, ""), policy) for k in ("t1", "t2"))
            if t1 is None or t2 is None:
                return None
            hours = int(BOOKING.total_seconds() // 3600)
            asked = {"step": step, **base, "t1": _stamp(t1), "t2": _stamp(t2)}
            if policy.min_lead_minutes or policy.max_lead_minutes is not None:
                # Booked a set time ahead (home visits: 2 to 4 hours): the soonest and the
                # latest it takes, said by date and hour, never "today from now".
                return Menu(asked, f"{_topic(policy.label)} 미리 신청해야 합니다. "
                                   "언제 돌봄이 필요하신가요?",
                            (Option("1", _stamp(t1), f"가장 빠른 {_spoken_time(t1)}부터 "
                                                     f"{hours}시간", ("빠른", "먼저")),
                             Option("2", _stamp(t2), f"{_spoken_time(t2)}부터 {hours}시간",
                                    ("늦은", "나중"))))
            return Menu(asked, "언제 돌봄이 필요하신가요?",
                        (Option("1", _stamp(t1), f"오늘 지금부터, {_spoken_time(t1)}부터 "
                                                 f"{hours}시간", ("오늘", "지금")),
                         Option("2", _stamp(t2), f"내일 {_spoken_time(t2)}부터 {hours}시간",
                                ("내일",))))
        if step == "confirm":
            start = _parse_stamp(state.get("at", ""), policy)
            if start is None:
                return None
            end = start + BOOKING
            question = (f"{child}, {policy.label}, {_spoken_time(start)}부터 {_clock(end)}까지 "
                        "신청하시겠습니까?")
            return Menu({"step": step, **base, "at": _stamp(start)}, question,
                        (Option("1", "yes", "신청", ("네", "예", "확인", "맞아", "신청")),
                         Option("2", "no", "취소", ("취소", "아니"))))
        return None

    def next_state(self, menu: Menu, picked: Option, now: datetime) -> dict[str, str]:
        step = menu.state["step"]
        if step == "service":
            return {"step": "child", "service": picked.value}
        if step == "child":
            t1, t2 = offered_times(self.policies[menu.state["service"]], now)
            return {"step": "time", "service": menu.state["service"], "child": picked.value,
                    "t1": _stamp(t1), "t2": _stamp(t2)}
        assert step == "time"
        return {"step": "confirm", "service": menu.state["service"],
                "child": menu.state["child"], "at": picked.value}


# -- reading an answer ----------------------------------------------------------------

DISPATCHER = Option("0", "dispatcher", "상담원")


def spoken_digit(speech: str, options: tuple[Option, ...]) -> str | None:
    """The key a spoken answer stands for (module docstring: the order of the rules)."""
    if any(word in speech for word in DISPATCHER_WORDS):
        return "0"
    named = {o.digit for o in options if any(w and w in speech for w in o.words)}
    if len(named) == 1:
        return named.pop()
    digit = re.search(r"\d", speech)
    if digit:
        return digit.group()
    for token in re.findall(r"[가-힣]+", speech):
        word = _number_word(token)
        if word:
            return word
    return None


def _number_word(token: str) -> str | None:
    """"첫번째요" → "첫" → 1: peel polite and counting endings until a number word is left."""
    if token in NUMBER_WORDS:
        return NUMBER_WORDS[token]
    for suffix in _SUFFIXES:
        if token.endswith(suffix) and len(token) > len(suffix):
            found = _number_word(token[:-len(suffix)])
            if found:
                return found
    return None


def choose(form: Mapping[str, str], options: tuple[Option, ...]) -> Option | None:
    """The option answered, DISPATCHER for 0, None for silence or anything else."""
    digits = form.get("Digits", "").strip()
    speech = form.get("SpeechResult", "").strip()
    key = digits[:1] if digits else spoken_digit(speech, options) if speech else None
    if key == "0":
        return DISPATCHER
    return next((o for o in options if o.digit == key), None)


# -- TwiML --------------------------------------------------------------------------------

def _url(settings: Settings, state: Mapping[str, str]) -> str:
    return settings.public_url.rstrip("/") + PATH + "/step?" + urlencode(state)


def _twiml(vr: VoiceResponse) -> Response:
    return Response(str(vr.to_xml()), media_type="text/xml")


def ask(settings: Settings, menu: Menu, attempt: int, note: str = "") -> VoiceResponse:
    action = _url(settings, {**menu.state, "try": str(attempt)})
    listing = ", ".join(f"{_topic(o.label)} {o.digit}번" for o in menu.options)
    vr = VoiceResponse()
    gather = vr.gather(input="dtmf speech", language=LANG, num_digits=1, action=action,
                       method="POST", timeout=GATHER_TIMEOUT_S,
                       hints=", ".join(w for o in menu.options for w in o.words))
    gather.say(" ".join(filter(None, [note, menu.question, listing + "을 누르세요.",
                                      "상담원 연결은 0번입니다."])), language=LANG)
    # Reached only when the Gather heard nothing: the same action without Digits = silence.
    vr.redirect(action, method="POST")
    return vr


def to_dispatcher(settings: Settings, lead: str = "") -> VoiceResponse:
    vr = VoiceResponse()
    if settings.dispatcher_phone:
        vr.say(f"{lead} 상담원에게 연결합니다. 잠시만 기다려 주세요.".strip(), language=LANG)
        vr.dial(settings.dispatcher_phone, timeout=DIAL_TIMEOUT_S, method="POST",
                action=_url(settings, {"step": "dialed"}))
    else:
        vr.say(f"{lead} 지금은 상담원 연결이 어렵습니다. 광주긴급아이돌봄센터 {CENTRE_PHONE} 번으로 "
               "전화해 주세요. 감사합니다.".strip(), language=LANG)
        vr.hangup()
    return vr


def after_dial(form: Mapping[str, str]) -> VoiceResponse:
    vr = VoiceResponse()
    if form.get("DialCallStatus") != "completed":
        vr.say(f"상담원이 전화를 받지 못했습니다. 광주긴급아이돌봄센터 {CENTRE_PHONE} 번으로 "
               "다시 전화해 주세요.", language=LANG)
    vr.hangup()
    return vr


def refusal(policy: ServicePolicy, exc: Ineligible) -> str:
    daily = policy.hours.get("daily")
    hours = "".join(f" 운영 시간은 매일 {_clock(w.start)}부터 {_clock(w.end)}까지입니다."
                    for w in daily or [])
    template = _REFUSALS.get(exc.code, "이 신청은 전화로 바로 접수할 수 없습니다.")
    return template.format(topic=_topic(policy.label), label=policy.label, hours=hours)


def received(code: str, placeholders: bool) -> VoiceResponse:
    spelled = " ".join(code)  # digit by digit: "4 8 2 1", not "사천팔백이십일"
    vr = VoiceResponse()
    vr.say(f"접수되었습니다. 접수번호는 {spelled} 입니다. 다시 한 번, {spelled}. "
           + ("병원과 병동은 상담원이 전화로 확인합니다. " if placeholders else "")
           + "접수 내용은 곧 문자로 보내 드립니다. 감사합니다.", language=LANG)
    vr.hangup()
    return vr


# -- routes -------------------------------------------------------------------------------

def _call_sid(form: Mapping[str, str]) -> str:
    sid = form.get("CallSid", "")
    if not sid:
        raise HTTPException(422, "CallSid is required")
    return sid


@router.post("")
async def incoming_call(request: Request) -> Response:
    form = await signed_form(request)
    _call_sid(form)
    settings: Settings = request.app.state.settings
    caller = await run_in_threadpool(find_caller, request.app.state.uow_factory,
                                     form.get("From", ""))
    if caller is None:
        log.info("voice call from unregistered %s", mask(form.get("From")))
        return _twiml(to_dispatcher(settings, "등록된 보호자 번호가 아닙니다."))
    menu = Ivr(request.app.state.policies, caller).menu({"step": "service"})
    assert menu is not None
    return _twiml(ask(settings, menu, 1, "안녕하세요, 돌봄콜 전화 접수입니다."))


@router.post("/step")
async def call_step(request: Request) -> Response:
    form = await signed_form(request)
    settings: Settings = request.app.state.settings
    state = dict(request.query_params)
    if state.get("step") == "dialed":
        return _twiml(after_dial(form))
    call_sid = _call_sid(form)
    caller = await run_in_threadpool(find_caller, request.app.state.uow_factory,
                                     form.get("From", ""))
    if caller is None:
        return _twiml(to_dispatcher(settings, "등록된 보호자 번호가 아닙니다."))
    policies: Mapping[str, ServicePolicy] = request.app.state.policies
    ivr = Ivr(policies, caller)
    menu = ivr.menu(state)
    if menu is None:  # a policy or a child changed during the call
        return _twiml(to_dispatcher(settings))
    picked = choose(form, menu.options)
    if picked is DISPATCHER:
        return _twiml(to_dispatcher(settings))
    if picked is None:
        if state.get("try", "1") == "1":
            heard = form.get("Digits") or form.get("SpeechResult")
            note = "잘못 선택하셨습니다. 다시 골라 주세요." if heard else "입력이 없었습니다. 다시 들려 드립니다."
            return _twiml(ask(settings, menu, 2, note))
        return _twiml(to_dispatcher(settings, "선택을 확인하지 못했습니다."))
    if menu.state["step"] != "confirm":
        following = ivr.menu(ivr.next_state(menu, picked, _now()))
        assert following is not None
        return _twiml(ask(settings, following, 1))
    if picked.value == "no":
        vr = VoiceResponse()
        vr.say("신청을 취소했습니다. 필요하시면 다시 전화해 주세요.", language=LANG)
        vr.hangup()
        return _twiml(vr)
    return await _submit(request, settings, policies[menu.state["service"]], caller,
                         menu.state, call_sid)


async def _submit(request: Request, settings: Settings, policy: ServicePolicy, caller: Caller,
                  state: Mapping[str, str], call_sid: str) -> Response:
    start = _parse_stamp(state["at"], policy)
    assert start is not None
    placeholders = {f: PHONE_PLACEHOLDERS[f] for f in policy.location_fields
                    if f in PHONE_PLACEHOLDERS}
    location: dict[str, str] = {"district": caller.district, **placeholders}
    center = policy.center.open_for(policy.tz, start, start + BOOKING) if policy.center else None
    if center is not None:
        location["center_id"] = center.id  # the caller can't name one: the first one open
    command = c.SubmitRequest(
        service=policy.id, family_id=caller.family_id, child_id=state["child"],
        start=start, end=start + BOOKING,
        location=location,
        notes="전화(ARS) 접수: 병원·병동은 보호자에게 확인 필요" if placeholders else "전화(ARS) 접수",
        # A retried Twilio callback for this call finds the first request, never a second.
        idempotency_key="voice:" + call_sid, channel="voice")
    try:
        created, fresh = await run_in_threadpool(request.app.state.bus.handle, command)
    except Ineligible as exc:
        log.info("voice request refused: %s", exc.code)
        return _twiml(to_dispatcher(settings, refusal(policy, exc)))
    except NotFound:
        return _twiml(to_dispatcher(settings))
    log.info("voice request %s (%s) for call %s", created.id, "new" if fresh else "replay",
             call_sid)
    return _twiml(received(created.code, bool(placeholders)))
