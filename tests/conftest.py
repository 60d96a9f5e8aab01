"""Shared fixtures: a database per test on SQLite and, when reachable, PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from journey.config import Settings
from journey.storage.schema import Base

# The server to test against; the run makes a database of its own there and drops it at the end,
# so that two runs at once (CI beside a developer's run) never wipe each other's tables.
ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
RUN_DATABASE = f"journey_test_{os.getpid()}_{secrets.token_hex(4)}"
POSTGRES_URL = make_url(ADMIN_URL).set(database=RUN_DATABASE).render_as_string(hide_password=False)
# CI sets this so that an unreachable PostgreSQL fails the run instead of skipping half of it.
REQUIRE_POSTGRES = os.environ.get("TEST_REQUIRE_POSTGRES") == "1"
_created = False


async def _admin(statement: str) -> None:
    engine = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with asyncio.timeout(10), engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def _reset_postgres() -> str | None:
    """Make this run's database on first use, else drop its tables; a reason if unreachable."""
    global _created
    engine = create_async_engine(POSTGRES_URL)
    try:
        if not _created:
            await _admin(f'CREATE DATABASE "{RUN_DATABASE}"')
            _created = True
        async with asyncio.timeout(10), engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
            # Else the next test's server would find the schema "migrated" with no tables.
            await connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    except (OSError, TimeoutError) as error:
        return f"PostgreSQL at {ADMIN_URL} is not reachable: {error!r}"
    finally:
        await engine.dispose()
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop this run's PostgreSQL database, if it made one."""
    if _created:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{RUN_DATABASE}" WITH (FORCE)'))


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: an SQLite file, or the PostgreSQL test database wiped."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}"
        return
    problem = await _reset_postgres()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(problem)
        pytest.skip(problem)
    yield POSTGRES_URL


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(database_url: str) -> SettingsFactory:
    """Settings for a test server on a free port and the test's database; keywords override."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"listen": "127.0.0.1:0", "database_url": database_url}
        values.update(overrides)
        return Settings(**values)

    return make
