"""Three replicas under load, one SIGKILLed: nothing lost or doubled, subscribers exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.faults.load import (
    BATCH_SIZES,
    Outcomes,
    Subscriber,
    all_events,
    assert_nothing_lost,
    write,
)
from tests.faults.process import write_config
from tests.replicas.cluster import (
    assert_gapless,
    replicas,
    stop,
    wait_for_events,
    wiped_postgres,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPLICAS, WRITERS = 3, 4
CALLS_PER_WRITER = 400
ACKED_BEFORE_KILL = 200


async def test_sigkill_of_one_replica_loses_nothing_and_its_subscriber_resumes_elsewhere(
    tmp_path: Path,
) -> None:
    database_url = await wiped_postgres()
    config = write_config(tmp_path, database_url)
    outcomes = Outcomes()
    subscribers = [Subscriber(max_batch_size=BATCH_SIZES[i]) for i in range(REPLICAS)]
    async with replicas(config, REPLICAS) as (servers, stubs):
        following = [asyncio.create_task(s.follow(stubs[i])) for i, s in enumerate(subscribers)]
        async with asyncio.timeout(20):
            await asyncio.gather(*(s.caught_up.wait() for s in subscribers))
        # Writers 0 and 3 track through the replica that is killed, 1 and 2 through the others.
        writing = [
            asyncio.create_task(write(stubs[i % REPLICAS], f"w{i}", CALLS_PER_WRITER, outcomes))
            for i in range(WRITERS)
        ]
        async with asyncio.timeout(60):
            while len(outcomes.acked) < ACKED_BEFORE_KILL:
                await asyncio.sleep(0.01)
        servers[0].kill()
        async with asyncio.timeout(90):
            await asyncio.gather(*writing)
        assert await servers[0].wait() == -9
        assert await following[0] == grpc.StatusCode.UNAVAILABLE
        # The survivors' writers went on to the end; the killed one's stopped at its crash.
        assert set(outcomes.failed.values()) == {grpc.StatusCode.UNAVAILABLE}
        assert {s.rsplit("-", 1)[0] for s in outcomes.failed} <= {"w0", "w3"}
        assert len(outcomes.acked) >= 2 * CALLS_PER_WRITER
        log = await all_events(stubs[1])
        assert_gapless(log, "the log")
        assert log == await all_events(stubs[2])
        # The survivors' subscribers got everything live, their own replica's commits and
        # the others' alike.
        await wait_for_events(subscribers[1:], len(log), 20)
        await stop(following[1:])
        # The killed replica's subscriber resumes on another replica after its last position.
        resumed = await subscribers[0].follow(stubs[1], until_caught_up=True)
        assert resumed == grpc.StatusCode.OK
    await assert_nothing_lost(log, subscribers, outcomes, database_url)
