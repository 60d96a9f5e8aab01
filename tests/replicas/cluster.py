"""Replicas for tests: `journey serve` processes on one wiped PostgreSQL database, and checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from journey_client import pb
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES, _reset_postgres
from tests.faults.load import Subscriber
from tests.faults.process import CLEAN_ENV, ServerProcess, Stubs, start_server


async def wiped_postgres() -> str:
    """The test run's PostgreSQL database with its tables dropped (skip or fail if unreachable)."""
    problem = await _reset_postgres()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(problem)
        pytest.skip(problem)
    return POSTGRES_URL


@asynccontextmanager
async def replicas(
    config: Path, count: int, env: dict[str, str] = CLEAN_ENV
) -> AsyncIterator[tuple[list[ServerProcess], list[Stubs]]]:
    """`count` processes serving one config, each with stubs; killed at the end if running."""
    servers: list[ServerProcess] = []
    async with AsyncExitStack() as stack:
        try:
            # One after the other: the first creates the tables.
            for _ in range(count):
                servers.append(await start_server(config, env))
            stubs = [await stack.enter_async_context(s.stubs()) for s in servers]
            yield servers, stubs
        finally:
            for server in servers:
                if server.process.returncode is None:
                    server.kill()
                await server.wait()


async def keep_following(subscriber: Subscriber, stubs: Stubs) -> None:
    """Follow until cancelled, resuming after each UNAVAILABLE as a client would."""
    while True:
        code = await subscriber.follow(stubs)
        assert code == grpc.StatusCode.UNAVAILABLE, code
        await asyncio.sleep(0.1)


async def wait_for_events(subscribers: Sequence[Subscriber], count: int, seconds: float) -> None:
    """Until each subscriber has at least `count` events; TimeoutError after `seconds`."""
    async with asyncio.timeout(seconds):
        while any(len(s.events) < count for s in subscribers):
            await asyncio.sleep(0.05)


async def stop(tasks: Sequence[asyncio.Task[object]]) -> None:
    """Cancel and await tasks (a subscriber's stream ends when its task is cancelled)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def assert_gapless(events: Sequence[pb.SystemEvent], what: str) -> None:
    """Positions 1, 2, 3, ... with none missing or repeated."""
    positions = [e.position for e in events]
    assert positions == list(range(1, len(positions) + 1)), f"{what}: not contiguous"


async def terminate_backends(database_url: str) -> int:
    """pg_terminate_backend of every other connection to the database; how many there were."""
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()
