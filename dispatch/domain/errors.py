"""Domain errors. Each carries the machine-readable `code` of CONTRACT.md."""

from __future__ import annotations


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class Ineligible(DomainError):
    """The request can't be served as asked (HTTP 422)."""

    code = "ineligible"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The action clashes with the current state (HTTP 409)."""

    code = "conflict"
