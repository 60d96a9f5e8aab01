"""A sweeping replica SIGKILLed while 1,000 visits are due: each ends once, at most 3 s late."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty

from journey_client import pb
from tests.faults.load import EOF, SOURCE, stored_visit_ends
from tests.faults.process import Stubs, write_config
from tests.replicas.cluster import replicas, stop, wiped_postgres

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ENDED = pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED
VISITS = 1000
VISIT_TIMEOUT = 6.0
MAX_LATE_SECONDS = 3.0


async def record_visit_ends(stubs: Stubs, arrivals: dict[str, list[float]]) -> None:
    """Each visit-ended's lateness: when it arrived here after the deadline it reports."""
    request = pb.SubscribeRequest(filter=pb.SystemEventFilter(types=[ENDED]), end=Empty())
    stream = stubs.events.Subscribe(request)
    try:
        while (message := await stream.read()) is not EOF:
            assert isinstance(message, pb.SubscribeResponse)
            if message.HasField("event"):
                deadline = message.event.occur_time.ToDatetime().timestamp()
                arrivals.setdefault(message.event.session_id, []).append(time.time() - deadline)
    finally:
        stream.cancel()


async def open_visits(stubs: list[Stubs]) -> list[str]:
    ids = [f"visit-{i}" for i in range(VISITS)]
    for start in range(0, VISITS, 250):
        await asyncio.gather(
            *(
                stubs[n % len(stubs)].tracker.Track(
                    pb.TrackRequest(
                        source_id=SOURCE, session_id=i, events=[pb.TrackedEvent(type="page-view")]
                    )
                )
                for n, i in enumerate(ids[start : start + 250])
            )
        )
    return ids


async def test_visits_end_once_and_in_time_when_a_sweeping_replica_dies(tmp_path: Path) -> None:
    database_url = await wiped_postgres()
    config = write_config(
        tmp_path, database_url, f'visit_timeout = "{VISIT_TIMEOUT}s"\nsession_timeout = "1h"\n'
    )
    arrivals: dict[str, list[float]] = {}
    async with replicas(config, 2) as (servers, stubs):
        watching = asyncio.create_task(record_visit_ends(stubs[1], arrivals))
        await asyncio.sleep(0.5)  # subscribed
        opened = time.monotonic()
        ids = await open_visits(stubs)
        assert time.monotonic() - opened < VISIT_TIMEOUT, "too slow to open before they end"
        # Every replica sweeps: kill one as the first visits end, mid-sweep.
        async with asyncio.timeout(VISIT_TIMEOUT + 10):
            while not arrivals:
                await asyncio.sleep(0.001)
        servers[0].kill()
        ended_at_kill = len(arrivals)
        async with asyncio.timeout(30):
            while len(arrivals) < VISITS:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # three more sweeps, which must add nothing
        await stop([watching])
        assert await servers[0].wait() == -9
    late = sorted(max(times) for times in arrivals.values())
    print(
        f"visit-ended lateness over {len(late)} visits ({ended_at_kill} before the kill):"
        f" median {statistics.median(late):.3f} s, max {late[-1]:.3f} s"
    )
    assert await stored_visit_ends(database_url) == Counter(ids)
    assert all(len(times) == 1 for times in arrivals.values())
    assert late[-1] <= MAX_LATE_SECONDS
