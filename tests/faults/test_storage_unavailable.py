"""A database that is down, locked or full answers UNAVAILABLE, half-stores nothing, recovers."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.empty_pb2 import Empty
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import event
from sqlalchemy.engine import make_url

from journey.config import Settings
from journey_client import pb
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES, _reset_postgres
from tests.faults.proxy import Proxy
from tests.integration.harness import Harness, serving
from tests.integration.harness import status_of as code_of
from tests.replicas.cluster import terminate_backends

pytestmark = pytest.mark.slow

LOCKED_CALLS = 20
EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


async def first_message(h: Harness) -> Any:
    stream = h.events.Subscribe(pb.SubscribeRequest(beginning=Empty()))
    try:
        return await stream.read()
    finally:
        stream.cancel()


def track(h: Harness, session_id: str, **properties: Any) -> Awaitable[pb.TrackResponse]:
    return h.track("page-view", session_id=session_id, profile_id=session_id, **properties)


async def eventually_ok(call: Callable[[], Awaitable[Any]], seconds: float = 20) -> Any:
    """Retry `call` while it answers UNAVAILABLE, as a client would; fail after `seconds`."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(0.1)


async def assert_serving(h: Harness) -> None:
    check = await health_pb2_grpc.HealthStub(h.channel).Check(health_pb2.HealthCheckRequest())
    assert check.status == health_pb2.HealthCheckResponse.SERVING


async def assert_not_stored(h: Harness, session_id: str) -> None:
    for call in (
        h.sessions.GetSession(pb.GetSessionRequest(session_id=session_id)),
        h.sessions.GetProfile(pb.GetProfileRequest(profile_id=session_id)),
    ):
        assert await code_of(call) == grpc.StatusCode.NOT_FOUND
    page = await h.events.ListSystemEvents(
        pb.ListSystemEventsRequest(filter=pb.SystemEventFilter(profile_id=session_id))
    )
    assert list(page.system_events) == []


@pytest_asyncio.fixture
async def proxied_postgres() -> AsyncIterator[tuple[Proxy, str]]:
    """The test PostgreSQL, wiped, reached through a proxy; yields the proxy and the URL."""
    problem = await _reset_postgres()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(problem)
        pytest.skip(problem)
    url = make_url(POSTGRES_URL)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    finally:
        await proxy.close()


async def test_postgresql_down_gives_unavailable_then_recovers(
    proxied_postgres: tuple[Proxy, str],
) -> None:
    proxy, url = proxied_postgres
    async with serving(Settings(listen="127.0.0.1:0", database_url=url)) as h:
        await track(h, "before")
        proxy.cut()
        for i in range(3):  # the writer, each time: nothing is cached that hides the outage
            assert await code_of(track(h, f"down-{i}")) == grpc.StatusCode.UNAVAILABLE
        down = h.sessions.EndSession(pb.EndSessionRequest(session_id="before"))
        assert await code_of(down) == grpc.StatusCode.UNAVAILABLE
        for read in (
            h.sessions.GetSession(pb.GetSessionRequest(session_id="before")),
            h.sessions.GetProfile(pb.GetProfileRequest(profile_id="before")),
            h.events.ListSystemEvents(pb.ListSystemEventsRequest()),
            first_message(h),  # the replay reads storage
        ):
            assert await code_of(read) == grpc.StatusCode.UNAVAILABLE
        await assert_serving(h)

        proxy.restore()
        await eventually_ok(lambda: track(h, "after"))
        session = await h.sessions.GetSession(pb.GetSessionRequest(session_id="before"))
        assert session.session.state == pb.SessionState.SESSION_STATE_ACTIVE
        for i in range(3):
            await assert_not_stored(h, f"down-{i}")
        events = await h.all_events()
        # Two sessions of three events each, with positions 1..6: none lost, none reused.
        assert [e.position for e in events] == list(range(1, 7))
        assert {e.profile_id for e in events} == {"before", "after"}


async def test_postgresql_writer_connection_dropped_while_idle_is_replaced_unseen() -> None:
    # The writer keeps its connection between group commits. Dropped while idle (a restart,
    # pg_terminate_backend), it must be replaced before the next call, as the pool's pre-ping
    # did, not fail that call: no statement had run on it, so running the batch again on a
    # new connection cannot store anything twice.
    problem = await _reset_postgres()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(problem)
        pytest.skip(problem)
    async with serving(Settings(listen="127.0.0.1:0", database_url=POSTGRES_URL)) as h:
        await track(h, "before")
        for i in range(3):
            assert await terminate_backends(POSTGRES_URL) >= 1
            await track(h, f"after-{i}")
        events = await h.all_events()
        assert [e.position for e in events] == list(range(1, 13))


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "journey.db"


async def test_sqlite_locked_gives_unavailable_then_recovers(sqlite_file: Path) -> None:
    settings = Settings(listen="127.0.0.1:0", database_url=f"sqlite+aiosqlite:///{sqlite_file}")
    async with serving(settings) as h:
        await track(h, "before")
        # Another process's connection takes the write lock and keeps it.
        other = sqlite3.connect(sqlite_file, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            # The writer waits busy_timeout (5 s) for the lock, then gives up. The calls that
            # queued meanwhile share the next attempt and fail with it: one wait for the batch,
            # not 5 s per call in turn (20 calls would then take 100 s; the bound is a guard).
            async with asyncio.timeout(40):
                codes = await asyncio.gather(
                    *(code_of(track(h, f"locked-{i}")) for i in range(LOCKED_CALLS))
                )
            assert set(codes) == {grpc.StatusCode.UNAVAILABLE}
            # WAL lets reads go on meanwhile.
            await h.sessions.GetSession(pb.GetSessionRequest(session_id="before"))
            await assert_serving(h)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await eventually_ok(lambda: track(h, "after"))
        for i in range(LOCKED_CALLS):
            await assert_not_stored(h, f"locked-{i}")
        assert [e.position for e in await h.all_events()] == list(range(1, 7))


async def stop_sweeping(h: Harness) -> None:
    """Stop the sweeper before a test closes the pooled connections under a running server.

    It reads twice a second; a connection it held while the pool was closed would stay open
    with the old pool, holding its lock, until garbage-collected (which aiosqlite warns of).
    """
    await h.server.sweeper.stop()


async def test_sqlite_reads_locked_out_give_unavailable(sqlite_file: Path) -> None:
    settings = Settings(listen="127.0.0.1:0", database_url=f"sqlite+aiosqlite:///{sqlite_file}")
    async with serving(settings) as h:
        await track(h, "before")
        # An exclusive-mode connection that writes keeps every other connection out, readers
        # too (WAL without shared memory), until it closes.
        # The server's pooled connections must let go first, and the writer's own.
        await stop_sweeping(h)
        await h.server.writer.let_go()
        await h.server.database.close()
        other = sqlite3.connect(
            sqlite_file, isolation_level=None, timeout=10, check_same_thread=False
        )
        try:
            other.execute("PRAGMA locking_mode=EXCLUSIVE")
            await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
            other.execute("CREATE TABLE IF NOT EXISTS lock_holder (x INTEGER)")
            other.execute("COMMIT")
            await h.server.writer.let_go()
            await h.server.database.close()
            # Each read waits busy_timeout (5 s) for the lock, so only two of the reads here;
            # the PostgreSQL test above covers every read.
            for read in (
                h.sessions.GetSession(pb.GetSessionRequest(session_id="before")),
                first_message(h),  # ListSystemEvents runs the same query
            ):
                assert await code_of(read) == grpc.StatusCode.UNAVAILABLE
        finally:
            other.close()
        session = await eventually_ok(
            lambda: h.sessions.GetSession(pb.GetSessionRequest(session_id="before"))
        )
        assert session.session.id == "before"


async def test_sqlite_full_gives_unavailable_then_recovers(sqlite_file: Path) -> None:
    settings = Settings(listen="127.0.0.1:0", database_url=f"sqlite+aiosqlite:///{sqlite_file}")
    async with serving(settings) as h:
        await track(h, "before")
        engines = h.server.database.sync_engines

        def no_more_pages(dbapi_connection: Any, _record: Any) -> None:
            # The file may not grow by a single page: to SQLite, the disk is full.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA page_count")
            (pages,) = cursor.fetchone()
            cursor.execute(f"PRAGMA max_page_count={pages}")
            cursor.close()

        for engine in engines:
            event.listen(engine, "connect", no_more_pages)
        await stop_sweeping(h)
        await h.server.writer.let_go()
        await h.server.database.close()
        try:
            big = "x" * 60_000  # needs fresh pages whatever the free space
            for i in range(3):
                full = track(h, f"full-{i}", text=big)
                assert await code_of(full) == grpc.StatusCode.UNAVAILABLE
            await assert_serving(h)
        finally:
            for engine in engines:
                event.remove(engine, "connect", no_more_pages)
            await h.server.writer.let_go()
            await h.server.database.close()
        await eventually_ok(lambda: track(h, "after", text="x" * 60_000))
        for i in range(3):
            await assert_not_stored(h, f"full-{i}")
        assert [e.position for e in await h.all_events()] == list(range(1, 7))
