"""The environment dolbom reads (CONTRACT.md, "Configuration"). One place, validated at start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
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
    # How many worker processes `dolbom up` starts; they share one consumer group (the
    # worker id) and so the topics' partitions.
    workers: int = Field(default=1, ge=1, le=16)
    # Which of several workers on one host this process is (`worker-2`): only keeps their
    # Faust files apart. The data dir itself (and its data key) stays shared.
    worker_instance: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")
    # The embedded broker never frees a message: `dolbom up` swaps it for an empty one once
    # it holds this much memory (MB), when the workers have read everything. 0 = never.
    broker_max_mb: float = Field(default=512.0, ge=0)
    # Threads in each worker that hand SMS to the gateway after their transaction commits
    # (Twilio takes 100 ms or more a call; the handlers go on meanwhile).
    sms_send_threads: int = Field(default=4, ge=1, le=64)
    # How often a worker looks for SMS retries that are due and uncertain sends.
    sweep_interval_s: float = Field(default=1.0, gt=0)
    # Fault injection for the fault tests, never set in service: "before_commit:<type>" or
    # "after_commit:<type>" makes the worker SIGKILL itself once, at that point of handling
    # the first message of that type (a marker file in the data dir stops it happening twice);
    # "before_send:sms", at its first SMS claimed but not yet handed to the provider.
    fault_kill_at: str | None = Field(
        default=None, pattern=r"^(before_commit|after_commit|before_send):[a-z_.]+$")

    dispatcher_phone: str | None = None
    # Messages per second per sender (a long code takes about 1).
    sms_rate_per_s: float = Field(default=1.0, gt=0)
    # Intake limits (api/limits.py), token buckets holding one minute's worth: each API
    # token may create this many requests (and, separately, families) a minute, all at once
    # if it likes; each phone number may send this many SMS a minute that are not a command
    # (new-request intake, free text). YES/NO/취소 and the other commands are never limited.
    intake_rate_per_min: float = Field(default=60.0, gt=0)
    sms_intake_rate_per_min: float = Field(default=10.0, gt=0)
    log_level: str = "INFO"
    # `text` for people, `json` (one object per line) for a log collector.
    log_format: Literal["text", "json"] = "text"

    # Privacy (개인정보보호법, dispatch/encryption.py). `production` refuses to start without
    # DOLBOM_DATA_KEY; anything else falls back to a key generated into data_dir/data.key.
    env: Literal["development", "production"] = "development"
    # The key that encrypts sensitive fields, and older keys (comma-separated) still read.
    data_key: SecretStr | None = None
    data_key_previous: SecretStr | None = None

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
    def production(self) -> bool:
        return self.env == "production"

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
        # A secret goes to the child as itself, not as pydantic's "**********".
        env[key] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return env
