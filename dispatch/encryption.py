"""Sensitive fields encrypted at rest (개인정보보호법 §23: a hospital admission, a disability).

The domain sees plaintext; the database holds Fernet tokens (AES-128-CBC + HMAC-SHA256, from
the `cryptography` package). The column types below find their key on the engine's dialect,
put there by `dispatch.db.make_engine`: nothing here reads the environment, so one process can
hold two engines with two keys (a test, a key rotation) and importing the ORM needs no key.

Where the key comes from (`keyring_for`):
- `DOLBOM_DATA_KEY` (the current key, used to encrypt) and `DOLBOM_DATA_KEY_PREVIOUS` (older
  keys, comma-separated, still accepted for reading while `dolbom privacy rotate` re-encrypts);
- without them and with `DOLBOM_ENV=production`: refuse to start (a key generated on the
  server's disk would be lost with the disk, and with it every encrypted field);
- otherwise (a developer's `dolbom up`): a key generated once into `<DOLBOM_DATA_DIR>/data.key`
  (file mode 0600) and reused by every process of that installation.

Every stored value carries the prefix `enc1:`, so a value that was never encrypted (written
before migration 0004) is told apart from one encrypted with a key we no longer have.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import JSON, Dialect, Text
from sqlalchemy.types import TypeDecorator

log = logging.getLogger("dolbom.privacy")

PREFIX = "enc1:"
KEY_FILE = "data.key"
_DIALECT_ATTR = "dolbom_keyring"


class DataKeyError(RuntimeError):
    """The data key is missing, malformed, or not the key this data was encrypted with."""


class Keyring:
    """The current key (encrypts) and older ones (still decrypt). Never logs a key."""

    def __init__(self, current: str | bytes, previous: Iterable[str | bytes] = (),
                 *, source: str = "DOLBOM_DATA_KEY") -> None:
        self.source = source
        try:
            keys = [Fernet(current), *(Fernet(k) for k in previous)]
        except (ValueError, TypeError):
            raise DataKeyError(
                f"{source} (or DOLBOM_DATA_KEY_PREVIOUS) is not a valid data key: it must be "
                "32 random bytes in url-safe base64 (44 characters); `dolbom privacy keygen` "
                "prints a new one") from None
        self._current = keys[0]
        self._all = MultiFernet(keys)

    def __repr__(self) -> str:  # a keyring in a traceback or a log shows where, never what
        return f"Keyring(source={self.source!r})"

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._current.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        if not is_encrypted(stored):
            raise DataKeyError("a sensitive column holds a value that was never encrypted; "
                               "run `dolbom db upgrade` (migration 0004 encrypts old rows)")
        try:
            return self._all.decrypt(stored[len(PREFIX):].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise DataKeyError(
                f"cannot decrypt a sensitive field with the key from {self.source}: the data "
                "was encrypted with another key. After changing DOLBOM_DATA_KEY, put the old "
                "key in DOLBOM_DATA_KEY_PREVIOUS") from None

    def rotate(self, stored: str) -> str:
        """The same plaintext under the current key (for `dolbom privacy rotate`)."""
        return self.encrypt(self.decrypt(stored))


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def _split(keys: str | None) -> list[str]:
    return [k.strip() for k in (keys or "").split(",") if k.strip()]


def keyring_for(*, data_key: str | None, previous: str | None, production: bool,
                data_dir: Path) -> Keyring:
    """The keyring a process uses, by the rule in this module's docstring."""
    if data_key:
        return Keyring(data_key, _split(previous))
    if production:
        raise DataKeyError(
            "DOLBOM_ENV=production needs DOLBOM_DATA_KEY (sensitive fields are encrypted "
            "with it); generate one with `dolbom privacy keygen` and keep it in your secret "
            "store")
    path = data_dir / KEY_FILE
    return Keyring(_key_file(path), _split(previous), source=str(path))


def _key_file(path: Path) -> str:
    """Read the development key, creating it (0600, atomically) the first time."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race: read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(new_key() + "\n")
            log.warning("generated a data key for sensitive fields in %s (mode 0600). Back it "
                        "up: without it the encrypted fields can't be read. In production set "
                        "DOLBOM_DATA_KEY instead", path)
    # A reader can race the writer's single write: give it a moment to land.
    for _ in range(50):
        key = path.read_text("ascii").strip()
        if key:
            return key
        time.sleep(0.02)
    raise DataKeyError(f"{path} is empty; delete it to generate a new data key")


def attach(dialect: Dialect, keyring: Keyring) -> None:
    setattr(dialect, _DIALECT_ATTR, keyring)


def keyring_of(dialect: Dialect) -> Keyring:
    keyring = getattr(dialect, _DIALECT_ATTR, None)
    if keyring is None:
        raise DataKeyError("this engine has no data key: create engines with "
                           "dispatch.db.make_engine")
    return keyring  # type: ignore[no-any-return]


class EncryptedText(TypeDecorator[str]):
    """Free text that may hold health data (request notes, SMS bodies)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else keyring_of(dialect).encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else keyring_of(dialect).decrypt(value)


class EncryptedBool(TypeDecorator[bool]):
    """A yes/no that is itself health data (a child's disability)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: bool | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return keyring_of(dialect).encrypt("1" if value else "0")

    def process_result_value(self, value: str | None, dialect: Dialect) -> bool | None:
        return None if value is None else keyring_of(dialect).decrypt(value) == "1"


class SensitiveJSON(TypeDecorator[Any]):
    """A JSON object whose named keys are encrypted (all keys when `keys` is None).

    The object keeps its shape, so what is not sensitive stays readable for statistics and
    SQL: a request's `district` and `center_id` stay plain, its `hospital` and `ward` do not.
    """

    impl = JSON
    cache_ok = True

    def __init__(self, keys: frozenset[str] | None = None) -> None:
        super().__init__()
        self.keys = keys

    def _sensitive(self, key: str) -> bool:
        return self.keys is None or key in self.keys

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, dict):
            return value
        keyring = keyring_of(dialect)
        return {k: keyring.encrypt(json.dumps(v, ensure_ascii=False))
                if self._sensitive(k) and v is not None else v for k, v in value.items()}

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, dict):
            return value
        keyring = keyring_of(dialect)
        return {k: json.loads(keyring.decrypt(v)) if self._sensitive(k) and v is not None
                else v for k, v in value.items()}


# What is sensitive where (dispatch/orm.py uses these; migration 0004 encrypts old rows).
LOCATION_KEYS = frozenset({"hospital", "ward", "address", "lat", "lon"})
TIMELINE_KEYS = frozenset({"text", "reason"})
