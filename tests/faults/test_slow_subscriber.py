"""Fault test 3: a subscriber that stops reading slows no one, and later gets everything once.

Timing is compared, not asserted absolutely: the same test first runs the load without the slow
subscriber (the baseline), then with it, on the same server. Medians are compared, since a
noisy 2-core machine makes single calls and even high percentiles jump; and 2x the baseline
gets an absolute slack of 50 ms on top, because a median of a few milliseconds doubles from
scheduling noise alone. A slow subscriber that blocked the writer or the broker would stall
Track for the whole 10 s pause, orders of magnitude beyond either margin.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import Harness, serving

pytestmark = pytest.mark.slow

EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
WRITERS, CALLS, EVENTS_PER_CALL = 4, 125, 10  # 5,000 tracked events per run
PAUSE = 10.0
SLACK = 0.05
# Small enough that the paused subscriber overflows it (each call makes 3 system events).
LIVE_BUFFER = 500
# Without BDP probing the HTTP/2 window stays small, so a client that stops reading soon
# pushes back on the server's writes (a default client would buffer about 4 MB first).
SLOW_CHANNEL = [("grpc.http2.bdp_probe", 0)]


@dataclass
class Run:
    """One load run: Track latencies and, per system event, its delivery latency."""

    sent: dict[str, float] = field(default_factory=dict)
    track_latency: list[float] = field(default_factory=list)
    delivery_latency: list[float] = field(default_factory=list)
    last_position: int = 0


async def write(h: Harness, run: Run, name: str) -> None:
    for i in range(CALLS):
        session = f"{name}-{i}"
        started = time.perf_counter()
        run.sent[session] = started
        response = await h.tracker.Track(
            pb.TrackRequest(
                source_id="web",
                profile_id=session,
                session_id=session,
                events=[pb.TrackedEvent(type="page-view")] * EVENTS_PER_CALL,
            )
        )
        run.track_latency.append(time.perf_counter() - started)
        run.last_position = max(run.last_position, response.system_events[-1].position)


Stream = grpc.aio.UnaryStreamCall[pb.SubscribeRequest, pb.SubscribeResponse]


async def follow(stream: Stream, run: Run, seen: list[int], index: int) -> None:
    """A normal subscriber: timestamps each event's delivery, and notes how far it got."""
    while (message := await stream.read()) is not EOF:
        assert isinstance(message, pb.SubscribeResponse)
        if message.HasField("event"):
            event = message.event
            run.delivery_latency.append(time.perf_counter() - run.sent[event.profile_id])
            seen[index] = event.position


async def load(h: Harness, prefix: str, subscribers: int = 2) -> Run:
    run = Run()
    streams = [h.events.Subscribe(pb.SubscribeRequest(end=Empty())) for _ in range(subscribers)]
    for stream in streams:
        first = await stream.read()  # caught_up: live from here
        assert isinstance(first, pb.SubscribeResponse)
        assert first.HasField("caught_up")
    seen = [0] * subscribers
    following = [asyncio.create_task(follow(s, run, seen, i)) for i, s in enumerate(streams)]
    await asyncio.gather(*(write(h, run, f"{prefix}{w}") for w in range(WRITERS)))
    async with asyncio.timeout(60):
        while min(seen) < run.last_position:
            await asyncio.sleep(0.01)
    for stream in streams:
        stream.cancel()
    await asyncio.gather(*following, return_exceptions=True)
    return run


async def test_a_slow_subscriber_slows_no_one_and_misses_nothing(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings(live_buffer_size=LIVE_BUFFER)) as h:
        for i in range(20):  # first-use costs out of the way
            await h.track("page-view", session_id=f"warm-{i}")
        baseline = await load(h, "base-")

        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{h.port}", options=SLOW_CHANNEL
        ) as slow_channel:
            slow = pb.SystemEventServiceStub(slow_channel).Subscribe(
                pb.SubscribeRequest(end=Empty())
            )
            caught_up = await slow.read()
            assert isinstance(caught_up, pb.SubscribeResponse)
            after = caught_up.caught_up.position
            paused = time.perf_counter()
            loaded = await load(h, "slow-")
            # The reader stays away for the full pause, as a stuck consumer would.
            await asyncio.sleep(max(0.0, PAUSE - (time.perf_counter() - paused)))
            messages: list[pb.SubscribeResponse] = []
            async with asyncio.timeout(60):
                while (message := await slow.read()) is not EOF:
                    assert isinstance(message, pb.SubscribeResponse)
                    messages.append(message)
                    if message.HasField("caught_up"):
                        break
            slow.cancel()
        log = await h.all_events()

    kinds = [m.WhichOneof("content") for m in messages]
    assert "fell_behind" in kinds
    assert kinds[-1] == "caught_up"
    assert kinds.index("fell_behind") < len(kinds) - 1
    positions = [m.event.position for m in messages if m.HasField("event")]
    assert positions == [e.position for e in log if after < e.position <= loaded.last_position]

    for name, base, slow_run in (
        ("Track", baseline.track_latency, loaded.track_latency),
        ("delivery", baseline.delivery_latency, loaded.delivery_latency),
    ):
        base_median, slow_median = statistics.median(base), statistics.median(slow_run)
        print(f"{name} median: {base_median * 1000:.1f} ms alone, {slow_median * 1000:.1f} ms")
        assert slow_median <= 2 * base_median + SLACK, (name, base_median, slow_median)
