"""The rules hold across replicas: what one process would do, whichever replica each call hits."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from journey.config import Settings
from journey.storage.database import open_database
from journey_client import pb
from tests.faults.load import Subscriber, stored_event_counts
from tests.faults.process import Stubs
from tests.integration.harness import Harness, serving, status_of
from tests.replicas.cluster import assert_gapless, stop, wait_for_events, wiped_postgres

T = pb.SystemEventType
pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def two_replicas(
    expiry: timedelta = timedelta(hours=1),
) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two in-process servers on the one PostgreSQL database."""
    url = await wiped_postgres()
    settings = Settings(
        listen="127.0.0.1:0", database_url=url, visit_timeout=expiry, session_timeout=expiry
    )
    async with serving(settings) as a, serving(settings) as b:
        yield a, b


def stubs(h: Harness) -> Stubs:
    return Stubs(h.channel, h.tracker, h.events, h.sessions)


def count(events: list[pb.SystemEvent], kind: int, session_id: str) -> int:
    return sum(1 for e in events if e.type == kind and e.session_id == session_id)


async def test_concurrent_tracks_for_one_session_through_two_replicas() -> None:
    async with two_replicas() as (a, b):
        for round_ in range(5):
            session, profile = f"s{round_}", f"p{round_}"
            await asyncio.gather(
                *(
                    (a if i % 2 else b).track(session_id=session, profile_id=profile)
                    for i in range(20)
                )
            )
            got = (await b.sessions.GetSession(pb.GetSessionRequest(session_id=session))).session
            assert (got.event_count, got.visit_count) == (20, 1)
            owner = await a.sessions.GetProfile(pb.GetProfileRequest(profile_id=profile))
            assert (owner.profile.session_count, owner.profile.visit_count) == (1, 1)
        log = await a.all_events()
        for round_ in range(5):
            assert count(log, T.SYSTEM_EVENT_TYPE_SESSION_OPENED, f"s{round_}") == 1
            assert count(log, T.SYSTEM_EVENT_TYPE_VISIT_STARTED, f"s{round_}") == 1
        assert_gapless(log, "the log")


async def test_a_retried_track_on_another_replica_is_stored_once() -> None:
    async with two_replicas() as (a, b):
        first = await a.track("view", "click", session_id="s", ids=["e1", "e2"])
        again = await b.track("view", "click", session_id="s", ids=["e1", "e2"])
        assert (again.profile_id, again.session_id) == (first.profile_id, first.session_id)
        # And racing: the same ids through both replicas at once.
        await asyncio.gather(
            a.track("view", session_id="s", ids=["e3"]),
            b.track("view", session_id="s", ids=["e3"]),
        )
        counts = await stored_event_counts(
            a.server.database.engine.url.render_as_string(hide_password=False)
        )
        assert counts == Counter({"e1": 1, "e2": 1, "e3": 1})
        got = (await a.sessions.GetSession(pb.GetSessionRequest(session_id="s"))).session
        assert got.event_count == 3


async def test_end_session_racing_end_session_and_track_closes_once() -> None:
    async with two_replicas() as (a, b):
        for i in range(10):
            await a.track(session_id=f"s{i}")
        for i in range(10):
            end = pb.EndSessionRequest(session_id=f"s{i}")
            codes = await asyncio.gather(
                status_of(a.sessions.EndSession(end)),
                status_of(b.sessions.EndSession(end)),
                status_of(b.track(session_id=f"s{i}")),
            )
            assert set(codes[:2]) == {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}
            assert codes[2] == grpc.StatusCode.OK
        log = await b.all_events()
        for i in range(10):
            assert count(log, T.SYSTEM_EVENT_TYPE_SESSION_CLOSED, f"s{i}") == 1
            assert count(log, T.SYSTEM_EVENT_TYPE_VISIT_ENDED, f"s{i}") == 1


@pytest.mark.slow
async def test_end_session_racing_the_sweepers_closes_once() -> None:
    async with two_replicas(timedelta(seconds=1)) as (a, b):
        sessions = [f"s{i}" for i in range(20)]
        for session in sessions:
            await a.track(session_id=session)
        # Both replicas sweep; EndSession arrives around the deadline through both.
        await asyncio.sleep(0.95)
        for session in sessions:
            end = pb.EndSessionRequest(session_id=session)
            codes = await asyncio.gather(
                status_of(a.sessions.EndSession(end)), status_of(b.sessions.EndSession(end))
            )
            assert grpc.StatusCode.OK not in codes or codes.count(grpc.StatusCode.OK) == 1
        await asyncio.sleep(1.5)  # sweeps that must add nothing
        log = await a.all_events()
        for session in sessions:
            assert count(log, T.SYSTEM_EVENT_TYPE_SESSION_CLOSED, session) == 1
            assert count(log, T.SYSTEM_EVENT_TYPE_VISIT_ENDED, session) == 1


async def test_pages_are_the_same_and_a_position_resumes_on_the_other_replica() -> None:
    async with two_replicas() as (a, b):
        for i in range(12):
            await (a if i % 2 else b).track(session_id=f"s{i}")
        token = ""
        pages = 0
        while True:
            page_a, page_b = await asyncio.gather(
                a.events.ListSystemEvents(
                    pb.ListSystemEventsRequest(page_size=7, page_token=token)
                ),
                b.events.ListSystemEvents(
                    pb.ListSystemEventsRequest(page_size=7, page_token=token)
                ),
            )
            assert page_a == page_b
            token = page_a.next_page_token
            pages += 1
            if not token:
                break
        assert pages > 2
        # A subscriber that read part of the log on one replica goes on on the other, even
        # while the other has not yet read the newest commits into its broker.
        subscriber = Subscriber(max_batch_size=5)
        assert await subscriber.follow(stubs(a), until_caught_up=True) == grpc.StatusCode.OK
        for i in range(5):
            await a.track(session_id=f"t{i}")
        part = await a.all_events()
        subscriber.events = subscriber.events[:-3] + list(part[len(subscriber.events) - 3 : -2])
        following = asyncio.create_task(subscriber.follow(stubs(b)))
        for i in range(5):
            await b.track(session_id=f"u{i}")
        log = await a.all_events()
        await wait_for_events([subscriber], len(log), 10)
        await stop([following])
        assert [(e.position, e.id) for e in subscriber.events] == [(e.position, e.id) for e in log]


async def test_the_writer_reads_committed_whatever_the_server_default() -> None:
    # Under REPEATABLE READ the head read after the lock would use a snapshot from before it.
    url = await wiped_postgres()
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    name = make_url(url).database
    try:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(
                f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
            )
        database = await open_database(url)
        try:
            async with database.engine.begin() as connection:
                level = (await connection.exec_driver_sql("SHOW transaction_isolation")).scalar()
            assert level == "read committed"
        finally:
            await database.close()
    finally:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(
                f'ALTER DATABASE "{name}" RESET default_transaction_isolation'
            )
        await admin.dispose()
