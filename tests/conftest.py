from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.db import upgrade
from tests.helpers import postgres_database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'dolbom.db'}"
    upgrade(url)
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store's tests run on both backends."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dolbom.db'}"
        upgrade(url)
        yield url
    else:
        with postgres_database() as url:
            yield url
