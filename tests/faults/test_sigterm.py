"""Fault test 5: SIGTERM under load; each Track is OK and stored or UNAVAILABLE and not; exit 0."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from journey_client import pb
from tests.faults.load import (
    Outcomes,
    Subscriber,
    all_events,
    assert_acked_are_stored,
    assert_exactly_the_log,
    stored_event_counts,
    write,
)
from tests.faults.process import running, write_config

pytestmark = pytest.mark.slow

WRITERS, SUBSCRIBERS = 4, 2
CALLS_PER_WRITER = 2000
ACKED_BEFORE_STOP = 300
GIVE_UP_AFTER = 50


async def test_sigterm_under_load_stores_exactly_what_succeeded(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url, 'shutdown_grace = "5s"\n')
    outcomes = Outcomes()
    subscribers = [Subscriber() for _ in range(SUBSCRIBERS)]

    async with running(config) as server, server.stubs() as stubs:
        following = [asyncio.create_task(s.follow(stubs)) for s in subscribers]
        async with asyncio.timeout(20):
            await asyncio.gather(*(s.caught_up.wait() for s in subscribers))
        writers = [
            asyncio.create_task(write(stubs, f"w{i}", CALLS_PER_WRITER, outcomes, GIVE_UP_AFTER))
            for i in range(WRITERS)
        ]
        async with asyncio.timeout(60):
            while len(outcomes.acked) < ACKED_BEFORE_STOP:
                await asyncio.sleep(0.01)
        server.terminate()
        async with asyncio.timeout(30):
            await asyncio.gather(*writers)
            ended = await asyncio.gather(*following)
        code = await server.wait()
    assert code == 0, "".join(server.output[-20:])
    # Every writer was still running at the signal, so each ends with a refusal.
    # Every writer went on through the shutdown until refused this often.
    assert len(outcomes.failed) == WRITERS * GIVE_UP_AFTER
    # Never CANCELLED: a client could not tell whether such a call was stored.
    assert set(outcomes.failed.values()) == {grpc.StatusCode.UNAVAILABLE}, outcomes.failed
    # Streams end cleanly on shutdown.
    assert set(ended) == {grpc.StatusCode.OK}

    async with running(config) as server, server.stubs() as stubs:
        for session_id in outcomes.failed:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stubs.sessions.GetSession(pb.GetSessionRequest(session_id=session_id))
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND, session_id
        async with asyncio.timeout(30):
            for subscriber in subscribers:
                assert await subscriber.follow(stubs, until_caught_up=True) == grpc.StatusCode.OK
        log = await all_events(stubs)
        server.terminate()
        assert await server.wait() == 0
    # Nothing but the acknowledged calls was stored: three system events each.
    assert len(log) == 3 * len(outcomes.acked)
    for subscriber in subscribers:
        assert_exactly_the_log(subscriber, log)
    assert_acked_are_stored(outcomes, log, await stored_event_counts(database_url))
