"""Fault test 1: SIGKILL under load loses nothing acknowledged; subscribers resume exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.faults.load import (
    BATCH_SIZES,
    Outcomes,
    Subscriber,
    assert_nothing_lost,
    resume_all,
    start_load,
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
    # One per message, batches of 7 and of 1000: resuming must hold in every packaging.
    subscribers = [
        Subscriber(max_batch_size=BATCH_SIZES[i % len(BATCH_SIZES)]) for i in range(SUBSCRIBERS)
    ]

    async with running(config) as server, server.stubs() as stubs:
        following, writers = await start_load(
            stubs,
            subscribers,
            outcomes,
            writers=WRITERS,
            calls=CALLS_PER_WRITER,
            acked=ACKED_BEFORE_KILL,
        )
        server.kill()  # mid-flight: calls queued, committing and answering
        async with asyncio.timeout(30):
            await asyncio.gather(*writers)
            ended = await asyncio.gather(*following)
        assert await server.wait() == -9
    # The crash cut every stream and call; none of them was a success or a bug.
    assert set(ended) == {grpc.StatusCode.UNAVAILABLE}
    assert set(outcomes.failed.values()) == {grpc.StatusCode.UNAVAILABLE}

    async with running(config) as server, server.stubs() as stubs:
        log = await resume_all(stubs, subscribers)
    await assert_nothing_lost(log, subscribers, outcomes, database_url)
