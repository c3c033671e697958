"""Carers, families and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from dispatch import commands as c
from dispatch.domain.errors import Conflict, Ineligible, NotFound
from dispatch.domain.model import Carer, Child, Family
from dispatch.domain.policy import ServicePolicy
from dispatch.handlers.matching import offer_waiting_requests
from dispatch.ports import Clock
from dispatch.records import ApiToken
from dispatch.unit_of_work import UnitOfWork
from schemas import messages as m

ROLES = ("dispatcher", "intake", "admin")

HEALTH_CONSENT_MESSAGE = (
    "장애 여부는 건강정보입니다. 보호자의 건강정보 이용 동의가 필요합니다 / a disability is "
    "health data: the guardian must consent to it separately (consent.health_data = true)")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def register_carer(cmd: c.RegisterCarer, uow: UnitOfWork, clock: Clock, **_: Any) -> Carer:
    with uow:
        if uow.carers.by_phone(cmd.phone) is not None:
            raise Conflict("a carer with this phone number is already registered",
                           code="phone_taken")
        carer = Carer(name=cmd.name, phone=cmd.phone, districts=cmd.districts, skills=cmd.skills,
                      home_lat=cmd.home_lat, home_lon=cmd.home_lon, center_id=cmd.center_id,
                      lang=cmd.lang, created_at=clock())
        uow.carers.add(carer)
        uow.commit()
        return carer


def set_duty(cmd: c.SetDuty, uow: UnitOfWork, clock: Clock,
             policies: Mapping[str, ServicePolicy], dispatcher_phone: str | None = None,
             **_: Any) -> Carer:
    now = clock()
    with uow:
        carer = uow.carers.get(cmd.carer_id)
        if carer is None:
            raise NotFound("no such carer")
        if carer.on_duty != cmd.on_duty:
            carer.on_duty = cmd.on_duty
            uow.emit(m.CarerDutyChanged(carer_id=carer.id, on_duty=cmd.on_duty), key=carer.id,
                     now=now)
            if cmd.on_duty:
                offer_waiting_requests(uow, carer.id, policies, now, dispatcher_phone)
        uow.commit()
        return carer


def register_family(cmd: c.RegisterFamily, uow: UnitOfWork, clock: Clock, **_: Any) -> Family:
    # 개인정보보호법 §22-2: a child's data needs the guardian's recorded consent.
    if not cmd.consent_child_data:
        raise Ineligible("보호자의 아동 정보 이용 동의가 필요합니다 / a guardian's consent to "
                         "store the child's data is required (consent.child_data = true)",
                         code="consent_required")
    # §23: a disability is health data, which needs its own consent, separate from the above.
    if any(ch.disability for ch in cmd.children) and not cmd.consent_health_data:
        raise Ineligible(HEALTH_CONSENT_MESSAGE, code="health_consent_required")
    with uow:
        family = Family(
            guardian_name=cmd.guardian_name, guardian_phone=cmd.guardian_phone,
            district=cmd.district, address=cmd.address, pickup_guardians=cmd.pickup_guardians,
            consent_child_data=True, consent_health_data=cmd.consent_health_data,
            consent_at=clock(), lang=cmd.lang,
            children=[Child(name=ch.name, birth_date=ch.birth_date, disability=ch.disability)
                      for ch in cmd.children])
        uow.families.add(family)
        uow.commit()
        return family


def create_token(cmd: c.CreateToken, uow: UnitOfWork, clock: Clock, **_: Any) -> str:
    if cmd.role not in ROLES:
        raise Ineligible(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
    token = "dlb_" + secrets.token_urlsafe(32)
    with uow:
        uow.tokens.add(ApiToken(name=cmd.name, role=cmd.role, token_hash=hash_token(token),
                                created_at=clock()))
        uow.commit()
    return token
