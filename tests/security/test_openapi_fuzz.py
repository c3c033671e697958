"""Property-based fuzzing of every operation in the app's own OpenAPI document.

Schemathesis generates valid and invalid inputs for each operation from `/openapi.json` and
calls the app in-process (ASGI) with a dispatcher token, on a fresh SQLite database for this
module. Checks: no 5xx ever, and where the app declares a response schema, the answer
conforms to it. Bounded and derandomized so CI runs the same cases every time.

The app is built when the module is collected, because schemathesis parametrizes from the
schema then (its `from_fixture` does not work with this pytest).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from infra.db import upgrade
from tests.security.conftest import ENV, make_app, token

MAX_EXAMPLES = int(os.environ.get("DOLBOM_FUZZ_EXAMPLES", "50"))
CASES: dict[str, int] = {}

_DIR = Path(tempfile.mkdtemp(prefix="dolbom-fuzz-"))
# A fresh SQLite file by default; DOLBOM_FUZZ_DATABASE_URL points it at an empty database
# elsewhere (e.g. a throwaway PostgreSQL database) to fuzz that backend's rules too.
_URL = os.environ.get("DOLBOM_FUZZ_DATABASE_URL") or f"sqlite:///{_DIR / 'dolbom.db'}"
upgrade(_URL)
_saved = {name: os.environ.pop(name) for name in ENV if name in os.environ}
try:
    # Intake limits off: after the 60th request a per-token limit would answer every
    # further case 429 and the fuzzer would stop reaching the handlers (test_rate_limit
    # covers the limits themselves).
    APP = make_app(_URL, intake_rate_per_min=1e9, sms_intake_rate_per_min=1e9)
finally:
    os.environ.update(_saved)
AUTH = token(APP, "dispatcher", "fuzzer")
# `GET /v1/stream` is an endless Server-Sent Events stream: every call would hang until the
# deadline. Its auth is covered by test_auth_matrix; everything else is fuzzed.
STREAMING = ("/v1/stream",)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path=list(STREAMING))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    total = sum(CASES.values())
    print(f"\nschemathesis: {total} cases over {len(CASES)} operations")
    for label, n in sorted(CASES.items()):
        print(f"  {n:4d}  {label}")
    shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=2000, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_schema_conformance(case: schemathesis.Case) -> None:
    CASES[case.operation.label] = CASES.get(case.operation.label, 0) + 1
    response = case.call(headers=AUTH)
    assert response.status_code < 500, f"{case.operation.label}: {response.status_code}"
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
