"""The message bus under database faults, without a database: which failures it runs a
handler again for, and for how long (dispatch/messagebus.py)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from dispatch.commands import Command
from dispatch.messagebus import MessageBus


class Boom(Command):
    pass


class Orig(Exception):
    pass


def _bus(fail: list[Exception], **kw: Any) -> tuple[MessageBus, list[int]]:
    calls: list[int] = []

    def handler(cmd: Command, uow: Any) -> str:
        calls.append(1)
        if fail:
            raise fail.pop(0)
        return "done"

    return MessageBus(lambda: None, {Boom: handler}, {}, **kw), calls  # type: ignore[arg-type,return-value]


def _lost(text: str = "terminating connection due to administrator command") -> OperationalError:
    return OperationalError("SELECT 1", {}, Orig(text))


def test_a_lost_connection_is_waited_out_longer_than_the_contention_budget() -> None:
    """A database restart (connections terminated, then refused) lasting more attempts than
    `attempts` allows is still waited out, within `outage_s`."""
    fail: list[Exception] = [_lost(), _lost("connection refused")] + [
        _lost('database "x" is not currently accepting connections')] * 5
    bus, calls = _bus(fail, attempts=3, outage_s=30)
    assert bus.handle(Boom()) == "done"
    assert len(calls) == 8


def test_an_outage_longer_than_outage_s_is_raised_for_the_caller() -> None:
    """The API turns it into a 503 + Retry-After, the worker waits and tries again."""
    bus, calls = _bus([_lost()] * 100, outage_s=0.3)
    with pytest.raises(OperationalError):
        bus.handle(Boom())
    assert 2 <= len(calls) < 10


def test_contention_is_retried_a_bounded_number_of_times() -> None:
    race = IntegrityError("INSERT", {}, Orig("duplicate key value violates unique constraint"))
    bus, calls = _bus([race] * 10, attempts=4)
    with pytest.raises(IntegrityError):
        bus.handle(Boom())
    assert len(calls) == 4
    locked = OperationalError("BEGIN", {}, Orig("database is locked"))
    bus, calls = _bus([locked, locked], attempts=4)
    assert bus.handle(Boom()) == "done" and len(calls) == 3


def test_a_bug_is_not_retried() -> None:
    bad = ProgrammingError("SELECT nope", {}, Orig("syntax error at or near nope"))
    bus, calls = _bus([bad])
    with pytest.raises(ProgrammingError):
        bus.handle(Boom())
    assert len(calls) == 1


@pytest.mark.postgres
def test_the_api_answers_503_with_retry_after_when_the_database_is_away() -> None:
    """CONTRACT: 503 with Retry-After only if the request could not be stored at all."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from infra.twilio_stub import sign
    from schemas.config import Settings

    # A database that does not exist: every connection is refused, as while it restarts.
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/dolbom_missing_for_503_test"
    twilio: dict[str, Any] = {"TWILIO_AUTH_TOKEN": "t0ken", "TWILIO_ACCOUNT_SID": "ACx"}
    app = create_app(Settings(database_url=url, public_url="http://testserver", **twilio))
    app.state.bus.outage_s = 0.3  # the bus's own wait, shortened for the test
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [client.post("/v1/requests", json={}, headers={"Authorization": "Bearer x"}),
                   client.get("/healthz")]
        params = {"MessageSid": "SM1", "From": "+821012345678", "To": "+15005550006",
                  "Body": "YES 4821"}
        answers.append(client.post("/webhooks/twilio/sms", data=params, headers={
            "X-Twilio-Signature": sign("http://testserver/webhooks/twilio/sms", params,
                                       "t0ken")}))
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
    assert answers[0].json()["code"] == "unavailable"
    assert answers[2].json()["code"] == "unavailable"
