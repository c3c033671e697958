"""What dispatch needs from the outside, as small protocols the edges fill in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol


class Clock(Protocol):
    def __call__(self) -> datetime: ...


class SentMessage(Protocol):
    sid: str
    status: str


class SmsSender(Protocol):
    """Satisfied by notifiers' gateways (console, Twilio)."""

    name: str

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> Any: ...


class SmsTemplates(Protocol):
    """Renders a notification's text (notifiers.templates.render)."""

    def __call__(self, kind: str, params: Mapping[str, Any], lang: str = "ko") -> str: ...


class ParsedReply(Protocol):
    @property
    def verb(self) -> str: ...

    @property
    def code(self) -> str | None: ...


class SmsGrammar(Protocol):
    """Reads an SMS body as a command (notifiers.grammar.parse)."""

    def __call__(self, text: str) -> ParsedReply: ...


class SenderClaims(Protocol):
    """What this process's sender holds: `id` is written on each row it claims (None when
    the process keeps no heartbeat), and the rows between claim and settle are `held`."""

    @property
    def id(self) -> str | None: ...

    def hold(self, notification_ids: Iterable[str]) -> None: ...

    def let_go(self, notification_ids: Iterable[str]) -> None: ...

    def held(self) -> frozenset[str]: ...
