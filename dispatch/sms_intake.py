"""SMS intake: a registered parent asks for care by SMS in at most two messages.

    parent  병원 내일 10-14
    us      [돌봄콜] 박아이 입원아동돌봄 11/27 10:00~14:00 신청할까요? 맞으면 네, 아니면 아니오
    parent  네
    us      [돌봄콜] 11/27 10:00 입원아동돌봄 요청을 접수했어요. … 코드 4821

The first text is read by the injected intake parser (notifiers.intake_grammar.parse_request) and
checked against the service's policy at once: an ineligible ask is answered with the reason and
leaves nothing behind. An eligible one becomes an `SmsDraft` that waits 15 minutes for the
parent's bare 네 (grammar verb `accept`, no code), which submits it exactly as the API does
(dispatch.handlers' shared submit path, `channel="sms"`, idempotency key ``sms-draft:<id>``), or
their 아니오 (`decline`, no code), which drops it. A family with several children is first asked
which child ("1 박서연, 2 박서준") and answers with the number; a draft in that state has an empty
`child_id`. A phone has at most one pending draft: a new ask replaces the one before.

Everything happens inside the inbound SMS handler's unit of work; the caller commits.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from dispatch import commands as c
from dispatch.domain.errors import Ineligible, NotFound
from dispatch.domain.model import Child, Family, Request
from dispatch.domain.policy import ServicePolicy, check_request
from dispatch.records import InboundSms, SmsDraft
from dispatch.unit_of_work import UnitOfWork

DRAFT_TTL = timedelta(minutes=15)
# Every built-in policy runs on Seoul time; 오늘/내일 in a parent's text are read in it.
SERVICE_TZ = ZoneInfo("Asia/Seoul")
# A parent can't be expected to type the ward in the same text: the dispatcher calls back.
PLACEHOLDERS = {"hospital": "문자 접수", "ward": "확인 필요"}
NOTE = "문자 접수"
NOTE_WITH_PLACEHOLDERS = "문자 접수: 병원·병동은 보호자에게 확인 필요"
_CHOICE = re.compile(r"([1-9])\s*번?")


class IntakeAsk(Protocol):
    @property
    def service(self) -> str: ...

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


class IntakeParser(Protocol):
    """Reads an SMS body as a request for care (notifiers.intake_grammar.parse_request)."""

    def __call__(self, text: str, now: datetime, tz: ZoneInfo) -> IntakeAsk | None: ...


Reply = Callable[[str, dict[str, Any] | None, str | None], None]
Submit = Callable[[UnitOfWork, c.SubmitRequest, ServicePolicy, datetime], tuple[Request, bool]]


def _local(dt: datetime, policy: ServicePolicy, fmt: str = "%m/%d %H:%M") -> str:
    return dt.astimezone(policy.tz).strftime(fmt)


def _choice(text: str) -> int | None:
    body = unicodedata.normalize("NFKC", text).strip().rstrip(".!")
    found = _CHOICE.fullmatch(body.strip())
    return int(found.group(1)) if found else None


class SmsIntake:
    """One inbound SMS from a family's guardian, as far as asking for care goes."""

    def __init__(self, uow: UnitOfWork, inbound: InboundSms, family: Family, now: datetime,
                 policies: Mapping[str, ServicePolicy], parse: IntakeParser, reply: Reply,
                 submit: Submit) -> None:
        self.uow, self.inbound, self.family, self.now = uow, inbound, family, now
        self.policies, self.parse, self._reply, self.submit = policies, parse, reply, submit

    def reply(self, kind: str, params: dict[str, Any] | None = None,
              request_id: str | None = None) -> None:
        self._reply(kind, params, request_id)

    # -- the first message ----------------------------------------------------------
    def answer(self) -> str | None:
        """A new ask, or the number of a child; None when the text is neither."""
        return self.ask() or self.choose()

    def ask(self) -> str | None:
        asked = self.parse(self.inbound.body, self.now, SERVICE_TZ)
        if asked is None:
            return None
        for earlier in self.uow.drafts.pending_for_phone(self.inbound.from_phone):
            earlier.status = "cancelled"  # replaced by this ask
        policy = self.policies.get(asked.service)
        if policy is None:
            self.reply("intake_refused", {"reason": "unknown_service"})
            return "ineligible"
        children = self.children()
        if not children:
            self.reply("intake_refused", {"reason": "no_child"})
            return "ineligible"
        # The policy first: an ask no child of this family could have is answered now, and
        # leaves no draft behind. (Which child is asked only among several.)
        problems = [self._check(policy, child, asked.start, asked.end) for child in children]
        first_problem = problems[0]
        if first_problem is not None and all(problems):
            self._refuse(policy, first_problem, asked.start)
            return "ineligible"
        draft = SmsDraft(family_id=self.family.id, phone=self.inbound.from_phone,
                         service=policy.id, child_id=children[0].id if len(children) == 1 else "",
                         start=asked.start, end=asked.end, created_at=self.now,
                         expires_at=self.now + DRAFT_TTL, inbound_id=self.inbound.id)
        self.uow.drafts.add(draft)
        if draft.child_id:
            self._ask_to_confirm(draft, policy, children[0])
            return "intake_confirm"
        self._ask_which_child(children)
        return "intake_which_child"

    def choose(self) -> str | None:
        """The answer to "which child?": its number in the list we sent."""
        number = _choice(self.inbound.body)
        if number is None:
            return None
        draft = self._pending()
        if draft is None or draft.child_id:
            return None
        if draft.expires_at <= self.now:
            return self._expired(draft)
        children = self.children()
        policy = self.policies.get(draft.service)
        if not 1 <= number <= len(children) or policy is None:
            self._ask_which_child(children)
            return "intake_which_child"
        child = children[number - 1]
        problem = self._check(policy, child, draft.start, draft.end)
        if problem is not None:
            draft.status = "cancelled"
            self._refuse(policy, problem, draft.start)
            return "ineligible"
        draft.child_id = child.id
        draft.expires_at = self.now + DRAFT_TTL  # the clock restarts with the question
        self._ask_to_confirm(draft, policy, child)
        return "intake_confirm"

    # -- the answer -----------------------------------------------------------------
    def confirm(self) -> str | None:
        """네: submit the pending draft. None when there is no pending draft."""
        draft = self._pending()
        if draft is None:
            return None
        if draft.expires_at <= self.now:
            return self._expired(draft)
        if not draft.child_id:
            self._ask_which_child(self.children())
            return "intake_which_child"
        policy = self.policies.get(draft.service)
        if policy is None:
            draft.status = "cancelled"
            self.reply("intake_refused", {"reason": "unknown_service"})
            return "ineligible"
        location = self._location(policy, draft.start, draft.end)
        command = c.SubmitRequest(
            service=policy.id, family_id=self.family.id, child_id=draft.child_id,
            start=draft.start, end=draft.end, location=location,
            notes=NOTE_WITH_PLACEHOLDERS if set(location) & set(PLACEHOLDERS) else NOTE,
            idempotency_key="sms-draft:" + draft.id, channel="sms")
        try:
            request, created = self.submit(self.uow, command, policy, self.now)
        except Ineligible as exc:  # e.g. the start went by while the parent thought about it
            draft.status = "cancelled"
            self._refuse(policy, exc, draft.start)
            return "ineligible"
        except NotFound:  # the child was removed from the family meanwhile
            draft.status = "cancelled"
            self.reply("intake_refused", {"reason": "no_child"})
            return "ineligible"
        draft.status = "confirmed"
        draft.request_id = request.id
        # Both texts of the conversation now belong to the request (and leave the
        # dispatcher's list of unmatched SMS).
        self.inbound.request_id = request.id
        first = self.uow.inbound.get(draft.inbound_id) if draft.inbound_id else None
        if first is not None and first.request_id is None:
            first.request_id = request.id
        if not created:  # submitted before under this draft's key: repeat the receipt
            self.reply("request_received", {"code": request.code,
                                            "service_label": policy.label,
                                            "start": _local(request.start, policy)}, request.id)
            return "already_submitted"
        return "submitted"  # the request_received SMS (with the job code) is the answer

    def decline(self) -> str | None:
        """아니오: drop the pending draft. None when there is no pending draft."""
        draft = self._pending()
        if draft is None:
            return None
        draft.status = "expired" if draft.expires_at <= self.now else "cancelled"
        self.reply("intake_cancelled")
        return "intake_cancelled"

    # -- helpers ----------------------------------------------------------------------
    def children(self) -> list[Child]:
        """Oldest first, as the phone menu lists them: "1" is the eldest."""
        return sorted(self.family.children, key=lambda ch: (ch.birth_date, ch.name, ch.id))

    def _pending(self) -> SmsDraft | None:
        drafts = self.uow.drafts.pending_for_phone(self.inbound.from_phone)
        return next((d for d in drafts if d.family_id == self.family.id), None)

    def _location(self, policy: ServicePolicy, start: datetime, end: datetime
                  ) -> dict[str, Any]:
        location: dict[str, Any] = {"district": self.family.district}
        if policy.center is not None:
            center = policy.center.open_for(policy.tz, start, end)
            if center is not None:
                location["center_id"] = center.id
        for field in policy.location_fields:
            location.setdefault(field, PLACEHOLDERS.get(field, "확인 필요"))
        return location

    def _check(self, policy: ServicePolicy, child: Child, start: datetime,
               end: datetime) -> Ineligible | None:
        try:
            check_request(policy, birth_date=child.birth_date, start=start, end=end,
                          location=self._location(policy, start, end), now=self.now,
                          consent_health_data=self.family.consent_health_data)
        except Ineligible as exc:
            return exc
        if child.disability and not self.family.consent_health_data:
            # Refused now rather than after the parent's 네 (store_request checks it too).
            return Ineligible("a disability is health data: consent.health_data needed",
                              code="health_consent_required")
        if self.uow.requests.open_for_child(child.id, start, end) is not None:
            return Ineligible("the child already has an open request then",
                              code="duplicate_request")
        return None

    def _label(self, policy: ServicePolicy) -> str:
        english = self.family.lang.lower().startswith("en")
        return policy.label_en if english and policy.label_en else policy.label

    def _refuse(self, policy: ServicePolicy, problem: Ineligible, start: datetime) -> None:
        if problem.code == "outside_service_hours":
            day = start.astimezone(policy.tz).date()
            hours = ", ".join(f"{w.start:%H:%M}-{w.end:%H:%M}" for w in policy.windows_on(day))
            if hours:
                self.reply("intake_outside_hours",
                           {"service_label": self._label(policy), "hours": hours})
                return
        self.reply("intake_refused", {"reason": problem.code})

    def _ask_to_confirm(self, draft: SmsDraft, policy: ServicePolicy, child: Child) -> None:
        same_day = draft.start.astimezone(policy.tz).date() == draft.end.astimezone(policy.tz).date()
        self.reply("intake_confirm", {
            "child_name": child.name, "service_label": self._label(policy),
            "start": _local(draft.start, policy),
            "end": _local(draft.end, policy, "%H:%M" if same_day else "%m/%d %H:%M")})

    def _ask_which_child(self, children: list[Child]) -> None:
        self.reply("intake_which_child", {
            "children": ", ".join(f"{i} {child.name}" for i, child in enumerate(children, 1))})

    def _expired(self, draft: SmsDraft) -> str:
        draft.status = "expired"
        self.reply("intake_expired")
        return "draft_expired"
