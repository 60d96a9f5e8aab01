"""The database drops every Journey connection under load: UNAVAILABLE only, quick recovery."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from journey_client import pb
from tests.faults.load import SOURCE, Outcomes, Subscriber, all_events, assert_nothing_lost, write
from tests.faults.process import Stubs, write_config
from tests.replicas.cluster import (
    assert_gapless,
    keep_following,
    replicas,
    stop,
    terminate_backends,
    wait_for_events,
    wiped_postgres,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPLICAS, WRITERS_PER_REPLICA = 2, 2
CALLS_PER_WRITER = 500
ACKED_BEFORE = 200
# Each drop of every connection comes this long after the last replica recovered.
DROPS, BETWEEN_DROPS = 3, 0.5
RECOVERY_SECONDS = 5.0


async def recovery(stubs: Stubs, name: str, failed: list[grpc.StatusCode]) -> float:
    """Seconds until a Track through `stubs` succeeds again; every failure is kept."""
    start = time.monotonic()
    for attempt in range(10_000):
        request = pb.TrackRequest(
            source_id=SOURCE,
            session_id=f"{name}-{attempt}",
            events=[pb.TrackedEvent(type="probe", id=f"{name}-{attempt}-event")],
        )
        try:
            await stubs.tracker.Track(request, timeout=10)
            return time.monotonic() - start
        except grpc.aio.AioRpcError as error:
            failed.append(error.code())
        await asyncio.sleep(0.05)
    raise AssertionError("never recovered")


async def test_every_connection_dropped_under_load(tmp_path: Path) -> None:
    database_url = await wiped_postgres()
    config = write_config(tmp_path, database_url)
    outcomes = Outcomes()
    subscribers = [Subscriber(max_batch_size=i * 7) for i in range(REPLICAS)]
    probes_failed: list[grpc.StatusCode] = []
    recoveries: list[float] = []
    async with replicas(config, REPLICAS) as (_, stubs):
        following = [
            asyncio.create_task(keep_following(s, stubs[i])) for i, s in enumerate(subscribers)
        ]
        async with asyncio.timeout(20):
            await asyncio.gather(*(s.caught_up.wait() for s in subscribers))
        writing = [
            asyncio.create_task(
                write(stubs[i % REPLICAS], f"w{i}", CALLS_PER_WRITER, outcomes, 10**6)
            )
            for i in range(REPLICAS * WRITERS_PER_REPLICA)
        ]
        async with asyncio.timeout(60):
            while len(outcomes.acked) < ACKED_BEFORE:
                await asyncio.sleep(0.01)
        for drop in range(DROPS):
            # The pools, the writers' transactions and the LISTEN connections all at once;
            # the other replica commits while each replica's listener is away.
            assert await terminate_backends(database_url) >= REPLICAS
            recoveries += await asyncio.gather(
                *(recovery(s, f"probe{drop}-{i}", probes_failed) for i, s in enumerate(stubs))
            )
            await asyncio.sleep(BETWEEN_DROPS)
        async with asyncio.timeout(120):
            await asyncio.gather(*writing)
        log = await all_events(stubs[0])
        assert_gapless(log, "the log")
        await wait_for_events(subscribers, len(log), 20)
        await stop(following)
    print(f"recovery after dropping every connection: {[round(r, 2) for r in recoveries]} s")
    print(f"failed: {len(outcomes.failed)} tracks, {len(probes_failed)} probes")
    # Failures are retryable, never INTERNAL or UNKNOWN, and some calls did meet the drops.
    assert set(outcomes.failed.values()) | set(probes_failed) <= {grpc.StatusCode.UNAVAILABLE}
    assert outcomes.failed or probes_failed
    assert max(recoveries) < RECOVERY_SECONDS
    # Probes and writers alike: every stored event reached both subscribers once, in order.
    await assert_nothing_lost(log, subscribers, outcomes, database_url)
