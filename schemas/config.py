"""The environment dolbom reads (CONTRACT.md, "Configuration"). One place, validated at start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOLBOM_", extra="ignore")

    database_url: str = "sqlite:///./var/dolbom.db"
    kafka_bootstrap: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    policy_dir: Path | None = None
    # Where a worker keeps Faust's local files (it holds no state of ours there).
    data_dir: Path = Path("var")

    # The embedded broker never answers a waiting fetch early, so this wait is the
    # latency floor of every hop; against Apache Kafka it only bounds idle polling.
    kafka_fetch_wait_ms: int = Field(default=10, ge=1, le=5000)
    # Tansu answers a group join only after about half the session timeout (measured:
    # 45 s → 23 s, 6 s → 3.2 s), so both are short by default; a production cluster may
    # raise them. Faust's poll interval stays long: a busy worker must not be evicted.
    kafka_rebalance_timeout_s: float = Field(default=3.0, gt=0)
    kafka_session_timeout_s: float = Field(default=6.0, gt=0)
    # How long the relay sleeps when the outbox is empty.
    relay_poll_ms: int = Field(default=10, ge=1, le=10_000)
    worker_id: str = "dolbom-worker"
    # How often a worker looks for SMS retries that are due and uncertain sends.
    sweep_interval_s: float = Field(default=1.0, gt=0)

    dispatcher_phone: str | None = None
    # Messages per second per sender (a long code takes about 1).
    sms_rate_per_s: float = Field(default=1.0, gt=0)
    log_level: str = "INFO"
    # `text` for people, `json` (one object per line) for a log collector.
    log_format: Literal["text", "json"] = "text"

    twilio_account_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_AUTH_TOKEN"))
    twilio_from_number: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_FROM_NUMBER"))
    twilio_messaging_service_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_MESSAGING_SERVICE_SID"))
    twilio_api_base_url: str = Field(
        default="https://api.twilio.com", validation_alias=AliasChoices("TWILIO_API_BASE_URL"))

    @property
    def twilio_enabled(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def as_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process see the same settings."""
    env: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        alias = info.validation_alias
        key = str(alias.choices[0]) if isinstance(alias, AliasChoices) else f"DOLBOM_{name.upper()}"
        env[key] = str(value)
    return env
