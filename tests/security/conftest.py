"""Shared set-up for the security tests: an app on a fresh SQLite database, role tokens."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from dispatch import commands as c
from schemas.config import Settings

PUBLIC_URL = "http://testserver.example"
AUTH_TOKEN = "test-auth-token-not-a-secret"
ACCOUNT_SID = "ACdolbomsecurity"
ENV = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER",
       "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_API_BASE_URL", "DOLBOM_PUBLIC_URL",
       "DOLBOM_POLICY_DIR", "DOLBOM_DATABASE_URL", "DOLBOM_DISPATCHER_PHONE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes to Settings counts, never the developer's shell."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def make_app(url: str, *, twilio: bool = True, **settings: Any) -> FastAPI:
    from api.app import create_app

    extra: dict[str, Any] = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                             "TWILIO_ACCOUNT_SID": ACCOUNT_SID} if twilio else {}
    return create_app(Settings(database_url=url, public_url=PUBLIC_URL, **extra, **settings))


def token(app: FastAPI, role: str, name: str | None = None) -> dict[str, str]:
    raw = app.state.bus.handle(c.CreateToken(name=name or f"sec-{role}", role=role))
    return {"Authorization": f"Bearer {raw}"}
