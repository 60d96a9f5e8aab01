"""Fault test 1: SIGKILL under load loses nothing acknowledged; subscribers resume exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

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

WRITERS, SUBSCRIBERS = 4, 3
# Bounds: each writer tracks at most this many times; the kill comes after ACKED_BEFORE_KILL.
CALLS_PER_WRITER = 2000
ACKED_BEFORE_KILL = 300


async def test_sigkill_under_load_loses_nothing_acknowledged(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url)
    outcomes = Outcomes()
    subscribers = [Subscriber() for _ in range(SUBSCRIBERS)]

    async with running(config) as server, server.stubs() as stubs:
        following = [asyncio.create_task(s.follow(stubs)) for s in subscribers]
        async with asyncio.timeout(20):
            await asyncio.gather(*(s.caught_up.wait() for s in subscribers))
        writers = [
            asyncio.create_task(write(stubs, f"w{i}", CALLS_PER_WRITER, outcomes))
            for i in range(WRITERS)
        ]
        async with asyncio.timeout(60):
            while len(outcomes.acked) < ACKED_BEFORE_KILL:
                await asyncio.sleep(0.01)
        server.kill()  # mid-flight: calls queued, committing and answering
        async with asyncio.timeout(30):
            await asyncio.gather(*writers)
            ended = await asyncio.gather(*following)
        assert await server.wait() == -9
    # The crash cut every stream and call; none of them was a success or a bug.
    assert set(ended) == {grpc.StatusCode.UNAVAILABLE}
    assert set(outcomes.failed.values()) == {grpc.StatusCode.UNAVAILABLE}

    async with running(config) as server, server.stubs() as stubs:
        async with asyncio.timeout(30):
            for subscriber in subscribers:
                assert await subscriber.follow(stubs, until_caught_up=True) == grpc.StatusCode.OK
        log = await all_events(stubs)
    assert [e.position for e in log] == list(range(1, len(log) + 1))
    for subscriber in subscribers:
        assert_exactly_the_log(subscriber, log)
    assert_acked_are_stored(outcomes, log, await stored_event_counts(database_url))
