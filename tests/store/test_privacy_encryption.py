"""Sensitive fields are ciphertext in the database and plaintext in the domain, on both
backends; a wrong key is a clear error; keys rotate; migration 0004 encrypts old rows."""

from __future__ import annotations

import json
import os
import stat
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, text

from dispatch import commands as c
from dispatch import orm
from dispatch.bootstrap import bootstrap
from dispatch.db import data_keyring, make_engine
from dispatch.domain.errors import Ineligible
from dispatch.domain.policy import load_policies
from dispatch.encryption import DataKeyError, Keyring, keyring_for, new_key
from dispatch.messagebus import MessageBus
from infra.db import alembic_config
from notifiers import grammar, intake_grammar, templates
from schemas.config import Settings, as_environment
from tests.helpers import NOW, Clock, RecordingSms, add_carers

HOSPITAL, WARD, NOTE = "비밀대학교병원", "비밀병동 7층", "천식 발작 이력 있음"


def _bus(engine: Engine, clock: Clock | None = None) -> MessageBus:
    return bootstrap(engine, load_policies(), sms=RecordingSms(), templates=templates.render,
                     grammar=grammar.parse, intake=intake_grammar.parse_request,
                     clock=clock or Clock())


def _family(bus: MessageBus, *, disability: bool = True, health: bool = True,
            phone: str = "+821037774242", born: date = date(2020, 3, 15)) -> Any:
    return bus.handle(c.RegisterFamily(
        guardian_name="최비밀", guardian_phone=phone, district="광산구",
        children=[c.ChildDetails(name="김비밀", birth_date=born,
                                 disability=disability)],
        consent_child_data=True, consent_health_data=health))


def _request(bus: MessageBus, family: Any) -> Any:
    from datetime import timedelta

    start = NOW + timedelta(hours=1)
    request, _ = bus.handle(c.SubmitRequest(
        service="hospital", family_id=family.id, child_id=family.children[0].id,
        start=start, end=start + timedelta(hours=3), notes=NOTE,
        location={"hospital": HOSPITAL, "ward": WARD}))
    return request


def _escaped(word: str) -> str:
    return json.dumps(word)[1:-1]  # how a JSON column may spell it: \uXXXX


def _raw(engine: Engine, sql: str) -> str:
    with engine.connect() as conn:
        return " ".join(str(value) for row in conn.exec_driver_sql(sql) for value in row)


def test_sensitive_fields_are_ciphertext_at_rest_and_plain_in_the_domain(db_url: str) -> None:
    engine = make_engine(db_url, keyring=Keyring(new_key()))
    bus = _bus(engine)
    carers = add_carers(bus, 2)
    family = _family(bus)
    request = _request(bus, family)
    bus.handle(c.StartMatching(request_id=request.id, event_id="m1"))
    with engine.connect() as conn:
        pending = list(conn.scalars(select(orm.notifications.c.id)))
    for notification_id in pending:  # renders and stores each SMS body
        bus.handle(c.DeliverNotification(notification_id=notification_id))

    raw_request = _raw(engine, "SELECT location, notes FROM requests")
    raw_sms = _raw(engine, "SELECT params, body FROM notifications")
    raw_child = _raw(engine, "SELECT disability FROM children")
    for word in (HOSPITAL, WARD, NOTE):
        for spelling in (word, _escaped(word)):
            assert spelling not in raw_request and spelling not in raw_sms
    assert "enc1:" in raw_request and "enc1:" in raw_sms and "enc1:" in raw_child
    assert "광산구" in raw_request or _escaped("광산구") in raw_request  # district stays plain

    # What the domain and the carers see is the plaintext.
    with engine.connect() as conn:
        location, notes = conn.execute(select(orm.requests.c.location,
                                              orm.requests.c.notes)).one()
        disability = conn.scalar(select(orm.children.c.disability))
        offer_bodies = list(conn.scalars(select(orm.notifications.c.body).where(
            orm.notifications.c.kind == "offer")))
    assert location == {"hospital": HOSPITAL, "ward": WARD, "district": "광산구"}
    assert notes == NOTE and disability is True
    assert offer_bodies and all(WARD in body for body in offer_bodies)
    assert any(WARD in body for _, body in bus.dependencies["sms"].sent)
    assert {to for to, _ in bus.dependencies["sms"].sent} >= {carers[0].phone}


def test_a_wrong_key_is_a_clear_error_not_garbage(db_url: str) -> None:
    right, wrong = new_key(), new_key()
    bus = _bus(make_engine(db_url, keyring=Keyring(right)))
    request = _request(bus, _family(bus))
    other = make_engine(db_url, keyring=Keyring(wrong, source="DOLBOM_DATA_KEY"))
    with pytest.raises(DataKeyError, match="encrypted with another key") as caught, \
            other.connect() as conn:
        conn.execute(select(orm.requests.c.location).where(
            orm.requests.c.id == request.id)).all()
    assert right not in str(caught.value) and wrong not in str(caught.value)


def test_keys_rotate_old_key_still_reads_until_rotated(db_url: str) -> None:
    old, new = new_key(), new_key()
    bus = _bus(make_engine(db_url, keyring=Keyring(old)))
    request = _request(bus, _family(bus))
    both = _bus(make_engine(db_url, keyring=Keyring(new, [old])))
    assert both.handle(c.RotateDataKey()) > 0
    only_new = make_engine(db_url, keyring=Keyring(new))
    with only_new.connect() as conn:
        location = conn.scalar(select(orm.requests.c.location).where(
            orm.requests.c.id == request.id))
    assert location is not None and location["ward"] == WARD
    with pytest.raises(DataKeyError), make_engine(db_url, keyring=Keyring(old)).connect() as conn:
        conn.execute(select(orm.requests.c.notes)).all()


def test_migration_0004_encrypts_existing_rows_and_0003_gets_them_back(db_url: str) -> None:
    cfg = alembic_config(db_url)
    command.downgrade(cfg, "0003")
    engine = make_engine(db_url)  # the key `dolbom db upgrade` uses (the same settings)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO families (id, guardian_name, guardian_phone, district, "
            "pickup_guardians, consent_child_data, consent_health_data) VALUES "
            "('f1', '최비밀', '+821037774242', '광산구', '[]', true, true)"))
        conn.execute(text("INSERT INTO children (id, family_id, name, birth_date, disability) "
                          "VALUES ('c1', 'f1', '김비밀', '2020-03-15', true)"))
        conn.execute(text(
            'INSERT INTO requests (id, code, open_code, service, family_id, child_id, start, '
            '"end", location, notes, status, created_at, updated_at, channel) VALUES '
            "('r1', '1234', '1234', 'hospital', 'f1', 'c1', '2026-11-26 02:00:00', "
            "'2026-11-26 05:00:00', :loc, :notes, 'matching', '2026-11-26 01:00:00', "
            "'2026-11-26 01:00:00', 'api')"),
            {"loc": json.dumps({"hospital": HOSPITAL, "ward": WARD, "district": "광산구"}),
             "notes": NOTE})
    command.upgrade(cfg, "head")
    raw = _raw(engine, "SELECT location, notes FROM requests") + _raw(
        engine, "SELECT disability FROM children")
    assert WARD not in raw and _escaped(WARD) not in raw and NOTE not in raw
    with engine.connect() as conn:
        location, notes = conn.execute(select(orm.requests.c.location,
                                              orm.requests.c.notes)).one()
        assert conn.scalar(select(orm.children.c.disability)) is True
    assert (location["ward"], notes) == (WARD, NOTE)
    command.downgrade(cfg, "0003")
    with engine.connect() as conn:
        notes = conn.exec_driver_sql("SELECT notes FROM requests").scalar()
        disability = conn.exec_driver_sql("SELECT disability FROM children").scalar()
    assert notes == NOTE and disability in (True, 1)
    command.upgrade(cfg, "head")
    command.check(cfg)


# -- consent for health data -------------------------------------------------------------

def test_a_disabled_child_needs_health_consent_to_be_registered(db_url: str) -> None:
    bus = _bus(make_engine(db_url))
    with pytest.raises(Ineligible) as caught:
        _family(bus, disability=True, health=False)
    assert caught.value.code == "health_consent_required"
    assert "consent.health_data" in caught.value.message and "동의" in caught.value.message
    _family(bus, disability=False, health=False, phone="+821037774243")  # no health data


def test_a_request_for_a_disabled_child_is_refused_without_health_consent(db_url: str) -> None:
    """A family stored before the registration check (or edited in the database) still can't
    book: the request is where every channel (API, SMS, phone) meets."""
    from datetime import timedelta

    engine = make_engine(db_url)
    bus = _bus(engine)
    family = _family(bus, disability=True, health=True, born=date(2023, 3, 15))
    with engine.begin() as conn:
        conn.execute(orm.families.update().values(consent_health_data=False))
    start = NOW.replace(hour=9) + timedelta(days=1)  # 18:00 in Seoul, Friday: centre open
    with pytest.raises(Ineligible) as caught:
        bus.handle(c.SubmitRequest(
            service="emergency-center", family_id=family.id, child_id=family.children[0].id,
            start=start, end=start + timedelta(hours=3),
            location={"center_id": "gwangju-main"}))
    assert caught.value.code == "health_consent_required"
    with engine.connect() as conn:
        assert conn.scalar(select(orm.requests.c.id)) is None


# -- where the key comes from ---------------------------------------------------------------

def test_production_refuses_to_start_without_the_key(tmp_path: Path) -> None:
    with pytest.raises(DataKeyError, match="DOLBOM_DATA_KEY"):
        data_keyring(Settings(env="production", data_dir=tmp_path))
    with pytest.raises(DataKeyError, match="DOLBOM_DATA_KEY"):
        make_engine(f"sqlite:///{tmp_path / 'x.db'}",
                    settings=Settings(env="production", data_dir=tmp_path))
    assert not (tmp_path / "data.key").exists()
    key = new_key()
    keyring = data_keyring(Settings(env="production", data_key=SecretStr(key), data_dir=tmp_path))
    assert Keyring(key).decrypt(keyring.encrypt("x")) == "x"
    assert key not in repr(keyring) and key not in repr(Settings(data_key=SecretStr(key)))


def test_development_generates_one_private_key_file_and_reuses_it(tmp_path: Path) -> None:
    first = keyring_for(data_key=None, previous=None, production=False, data_dir=tmp_path)
    path = tmp_path / "data.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = keyring_for(data_key=None, previous=None, production=False, data_dir=tmp_path)
    assert second.decrypt(first.encrypt("같은 열쇠")) == "같은 열쇠"


def test_a_malformed_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(DataKeyError, match="not a valid data key") as caught:
        data_keyring(Settings(data_key=SecretStr("not-a-key-but-a-secret"), data_dir=tmp_path))
    assert "not-a-key-but-a-secret" not in str(caught.value)


def test_child_processes_get_the_key_itself_not_its_mask() -> None:
    key, old = new_key(), new_key()
    env = as_environment(Settings(data_key=SecretStr(key), data_key_previous=SecretStr(old)))
    assert env["DOLBOM_DATA_KEY"] == key and env["DOLBOM_DATA_KEY_PREVIOUS"] == old


def test_an_sms_ask_for_a_disabled_child_without_health_consent_is_refused_at_once(
        db_url: str) -> None:
    from datetime import timedelta

    engine = make_engine(db_url)
    bus = _bus(engine, Clock(NOW - timedelta(hours=1)))  # Thursday 09:00 in Seoul
    family = _family(bus, disability=True, health=True, born=date(2023, 3, 15))
    with engine.begin() as conn:
        conn.execute(orm.families.update().values(consent_health_data=False))
    bus.handle(c.ReceiveSms(message_sid="SMask", from_phone=family.guardian_phone,
                            to_phone="+15005550006", body="센터 내일 19-23"))
    with engine.connect() as conn:
        inbound_id = conn.scalar(select(orm.inbound_sms.c.id))
    assert bus.handle(c.HandleInboundSms(inbound_id=str(inbound_id), event_id="e-ask")) \
        == "ineligible"
    n = orm.notifications.c
    with engine.connect() as conn:
        replies = conn.execute(select(n.kind, n.params).where(
            n.recipient == family.guardian_phone)).all()
        assert conn.scalar(select(func.count()).select_from(orm.sms_drafts)) == 0
    assert [(kind, params.get("reason")) for kind, params in replies] == [
        ("intake_refused", "health_consent_required")]
