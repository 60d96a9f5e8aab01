"""Fault test 5: SIGTERM under load; each Track is OK and stored or UNAVAILABLE and not; exit 0."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from journey_client import pb
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
CALLS_PER_WRITER = 2000
ACKED_BEFORE_STOP = 300
GIVE_UP_AFTER = 50


async def test_sigterm_under_load_stores_exactly_what_succeeded(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url, 'shutdown_grace = "5s"\n')
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
            acked=ACKED_BEFORE_STOP,
            give_up_after=GIVE_UP_AFTER,
        )
        server.terminate()
        async with asyncio.timeout(30):
            await asyncio.gather(*writers)
            ended = await asyncio.gather(*following)
        code = await server.wait()
    assert code == 0, "".join(server.output[-20:])
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
        log = await resume_all(stubs, subscribers)
        server.terminate()
        assert await server.wait() == 0
    # Nothing but the acknowledged calls was stored: three system events each.
    assert len(log) == 3 * len(outcomes.acked)
    await assert_nothing_lost(log, subscribers, outcomes, database_url)
