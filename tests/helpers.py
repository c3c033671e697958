"""Shared test helpers: databases on both backends, a bus wired for tests, sample data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from dispatch import commands as c
from dispatch.bootstrap import bootstrap
from dispatch.db import make_engine
from dispatch.domain.policy import load_policies
from dispatch.messagebus import MessageBus
from infra.db import upgrade
from notifiers import grammar, intake_grammar, templates
from notifiers.gateway import SentSms

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
# Thursday 26 Nov 2026, 10:00 in Seoul.
NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, dropped afterwards."""
    name = "dolbom_test_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class RecordingSms:
    """An SmsGateway that keeps what it was given."""

    name: str = "recording"
    sent: list[tuple[str, str]] = field(default_factory=list)

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        self.sent.append((to, body))
        return SentSms(sid=f"SMtest{len(self.sent):04d}", status="queued")


def make_bus(url: str, clock: Clock | None = None, sms: Any = None,
             wave_size: int | None = None) -> MessageBus:
    policies = load_policies()
    if wave_size is not None:
        policies = {k: p.model_copy(update={"offers": p.offers.model_copy(
            update={"wave_size": wave_size})}) for k, p in policies.items()}
    return bootstrap(make_engine(url), policies, sms=sms or RecordingSms(),
                     templates=templates.render, grammar=grammar.parse,
                     intake=intake_grammar.parse_request, clock=clock or Clock())


def add_carers(bus: MessageBus, n: int, *, district: str = "광산구",
               skills: tuple[str, ...] = ("hospital",), on_duty: bool = True,
               first_phone: int = 10_000_000) -> list[Any]:
    carers = []
    for i in range(n):
        carer = bus.handle(c.RegisterCarer(name=f"김돌봄{i}", phone=f"+8210{first_phone + i:08d}",
                                           districts=[district], skills=list(skills)))
        if on_duty:
            bus.handle(c.SetDuty(carer_id=carer.id, on_duty=True))
        carers.append(carer)
    return carers


def add_family(bus: MessageBus, *, phone: str = "+821099990000", district: str = "광산구",
               birth_date: date = date(2020, 3, 15), health: bool = True) -> Any:
    return bus.handle(c.RegisterFamily(
        guardian_name="박보호", guardian_phone=phone, district=district,
        children=[c.ChildDetails(name="박아이", birth_date=birth_date)],
        consent_child_data=True, consent_health_data=health))


def hospital_request(family: Any, *, start: datetime = NOW + timedelta(hours=1),
                     hours: float = 4, **extra: Any) -> c.SubmitRequest:
    return c.SubmitRequest(service="hospital", family_id=family.id,
                           child_id=family.children[0].id, start=start,
                           end=start + timedelta(hours=hours),
                           location={"hospital": "전남대병원", "ward": "소아병동 5층"}, **extra)
