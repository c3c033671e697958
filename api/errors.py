"""One error shape for every failure: `{"code", "message"}` plus details where useful."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from dispatch.domain.errors import Conflict, DomainError, Ineligible, NotFound

# Validation error types that deserve their own contract code.
_CODES_BY_TYPE = {
    "json_invalid": "invalid_json",
    "invalid_phone": "invalid_phone",
    "timezone_aware": "invalid_time",
    "datetime_parsing": "invalid_time",
    "datetime_from_date_parsing": "invalid_time",
    "datetime_type": "invalid_time",
    "date_from_datetime_parsing": "invalid_date",
    "date_parsing": "invalid_date",
    "model_attributes_type": "invalid_json",
}
_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "body_too_large", 415: "unsupported_media_type",
               429: "rate_limited"}


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
          **extra: Any) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status,
                        headers=headers)


def _validation_code(errors: list[dict[str, Any]]) -> str:
    for err in errors:
        code = _CODES_BY_TYPE.get(str(err.get("type")))
        if code:
            return code
        if err.get("type") == "literal_error" and any("district" in str(p) for p in err["loc"]):
            return "unknown_district"
    return "invalid_input"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")}
                  for e in exc.errors()]
        code = _validation_code(errors)
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
                            for e in errors[:5])
        return error(422, code, message, errors=errors)

    @app.exception_handler(Ineligible)
    async def _ineligible(_: Request, exc: Ineligible) -> JSONResponse:
        return error(422, exc.code, exc.message)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error(404, "not_found", exc.message)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error(409, exc.code, exc.message)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return error(422, exc.code, exc.message)

    # Starlette's HTTPException, the base class: unknown routes (404), wrong methods (405)
    # and errors while reading a body get this shape too.
    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"code": _HTTP_CODES.get(exc.status_code, "error"),
                             "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(DataError)
    async def _unstorable(_: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses as data (PostgreSQL: a NUL character in a path or
        # query parameter, a number out of range): the caller's input, not a server fault.
        return error(422, "invalid_input", "a value in this request cannot be stored or "
                     "searched for (for example a NUL character)")

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)  # psycopg: "the connection is closed"
    async def _db_down(_: Request, exc: OperationalError | InterfaceError) -> JSONResponse:
        # Nothing was stored (the bus has already waited a few seconds for the database):
        # say so, and when to try again.
        return JSONResponse({"code": "unavailable",
                             "message": "the database is not answering; nothing was stored"},
                            status_code=503, headers={"Retry-After": "5"})
