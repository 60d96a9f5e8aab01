"""A rolling restart of two replicas under a client that tracks and subscribes through both."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from journey_client import JourneyClient, JourneyError, pb, tracked_event
from tests.clients.server_process import ServerProcess
from tests.faults.load import stored_event_counts
from tests.replicas.cluster import assert_gapless, wiped_postgres

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WRITERS = 4


async def test_restarting_the_replicas_one_at_a_time_loses_nothing(tmp_path: Path) -> None:
    database_url = await wiped_postgres()
    replicas = [ServerProcess(database_url, tmp_path / f"r{i}") for i in range(2)]
    for i, replica in enumerate(replicas):
        (tmp_path / f"r{i}").mkdir()
        await replica.start()  # one after the other: the first migrates
    acked: list[str] = []
    failed: list[str] = []
    received: list[pb.SystemEvent] = []
    writing = True
    try:
        async with JourneyClient([r.address for r in replicas], timeout=20) as client:
            subscription = client.subscribe(start="beginning", max_batch_size=7)

            async def follow() -> None:
                async for event in subscription:
                    received.append(event)

            async def write(name: str) -> None:
                call = 0
                while writing:
                    call += 1
                    event = tracked_event("page-view", id=f"{name}-{call}")
                    try:
                        await client.track("web", [event], profile_id=name)
                    except JourneyError as error:
                        failed.append(f"{event.id}: {error}")
                    else:
                        acked.append(event.id)
                    await asyncio.sleep(0.01)

            following = asyncio.create_task(follow())
            writers = [asyncio.create_task(write(f"w{i}")) for i in range(WRITERS)]
            for replica in replicas:
                await asyncio.sleep(2)
                assert await replica.stop(signal.SIGTERM) == 0
                before = len(acked)
                await asyncio.sleep(1)  # the other replica alone takes every call meanwhile
                assert len(acked) > before, "no Track succeeded while one replica was down"
                await replica.start()
            await asyncio.sleep(2)
            writing = False
            await asyncio.gather(*writers)
            log = [event async for event in client.list_system_events(page_size=1000)]
            async with asyncio.timeout(30):
                while len(received) < len(log):
                    await asyncio.sleep(0.05)
            following.cancel()
            with pytest.raises(asyncio.CancelledError):
                await following
    finally:
        for replica in replicas:
            await replica.stop(signal.SIGKILL)
    # The client retries on the other replica, so a restart is never seen by the caller.
    assert failed == []
    assert len(acked) > 100
    stored = await stored_event_counts(database_url)
    assert {event_id: stored[event_id] for event_id in acked} == dict.fromkeys(acked, 1)
    assert_gapless(log, "the log")
    # Every event once, in order, across both restarts and the resumes they caused.
    assert [e.position for e in received] == [e.position for e in log]
    assert Counter(e.id for e in received) == Counter(e.id for e in log)
