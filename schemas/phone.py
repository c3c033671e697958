"""Phone numbers: parsed with `phonenumbers` (KR by default), stored as E.164, masked in logs."""

from __future__ import annotations

import phonenumbers


class InvalidPhone(ValueError):
    pass


def normalise(raw: str, region: str = "KR") -> str:
    """`010-1234-5678` or `+821012345678` → `+821012345678`; raises InvalidPhone."""
    try:
        parsed = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number: {mask(raw)}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone(f"not a valid phone number: {mask(raw)}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask(phone: str | None) -> str:
    """Keep the last four digits only: enough to tell two numbers apart in a log."""
    if not phone:
        return "-"
    digits = [c for c in phone if c.isdigit()]
    if len(digits) <= 4:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + "".join(digits[-4:])
