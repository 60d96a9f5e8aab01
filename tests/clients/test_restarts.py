"""Kill and restart a real server under a running subscription while a writer keeps tracking."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest

from journey_client import Backoff, JourneyClient, JourneyError, pb, tracked_event
from tests.clients.server_process import journey_serve

pytestmark = pytest.mark.slow

# Server-side failures a writer must retry through: the server going down under a call.
RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}


async def keep_tracking(client: JourneyClient, stop: asyncio.Event, tracked: list[str]) -> None:
    """Track one event at a time, retrying each with its id until stored, until `stop`."""
    i = 0
    while not stop.is_set():
        event = tracked_event("page-view", {"n": i}, id=f"event-{i}")
        try:
            await client.track("web", [event], profile_id=f"profile-{i % 4}")
        except JourneyError as error:
            if error.code not in RETRY:
                raise
            await asyncio.sleep(0.05)
            continue  # the same id again: stored at most once
        tracked.append(event.id)
        i += 1
        await asyncio.sleep(0.01)


async def consume(subscription: object, into: list[pb.SystemEvent]) -> None:
    """Append every event the subscription yields."""
    async for event in subscription:  # type: ignore[attr-defined]
        into.append(event)


async def wait_for(condition: object, what: str) -> None:
    """Poll a condition (a callable) for up to 60 s."""
    async with asyncio.timeout(60):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_every_event_arrives_exactly_once_in_order_across_restarts(
    database_url: str, tmp_path: Path
) -> None:
    fast = Backoff(initial=0.05, maximum=0.5)
    async with (
        journey_serve(
            database_url, tmp_path, heartbeat_interval="200ms", shutdown_grace="1s"
        ) as server,
        JourneyClient(server.address, timeout=10, backoff=fast) as client,
    ):
        received: list[pb.SystemEvent] = []
        subscription = client.subscribe(start="beginning")
        consumer = asyncio.create_task(consume(subscription, received))
        # A second consumer that stops mid-way and comes back from its saved position.
        early: list[pb.SystemEvent] = []
        paused = client.subscribe(start="beginning")
        paused_task: asyncio.Task[None] | None = asyncio.create_task(consume(paused, early))
        stop, tracked = asyncio.Event(), list[str]()
        writer = asyncio.create_task(keep_tracking(client, stop, tracked))

        for how in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM):
            seen = len(received)
            await wait_for(lambda seen=seen: len(received) >= seen + 15, "progress")
            if paused_task is not None:
                paused_task.cancel()
                await asyncio.gather(paused_task, return_exceptions=True)
                saved = paused.last_position
                paused_task = None
            code = await server.stop(how)
            assert code == (0 if how == signal.SIGTERM else -signal.SIGKILL)
            await asyncio.sleep(0.3)  # tracking fails meanwhile; the writer retries
            await server.start()  # same database, same port

        seen = len(received)
        await wait_for(lambda: len(received) >= seen + 15, "progress after the last restart")
        stop.set()
        await writer
        stored = [e async for e in client.list_system_events(page_size=1000)]
        await wait_for(lambda: len(received) >= len(stored), "the subscriber to catch up")
        await asyncio.sleep(0.5)  # anything extra (a repeat) would arrive now
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)

        assert saved is not None
        resumed = client.subscribe(start=saved)
        rest: list[pb.SystemEvent] = []
        rest_task = asyncio.create_task(consume(resumed, rest))
        await wait_for(lambda: len(early) + len(rest) >= len(stored), "the resumed consumer")
        await asyncio.sleep(0.5)
        rest_task.cancel()
        await asyncio.gather(rest_task, return_exceptions=True)

    assert subscription.reconnects >= 3
    # Each Track (no session id) opened one session with one visit; a retried id caused nothing.
    assert len(tracked) >= 30
    visits = [e for e in stored if e.type == pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_STARTED]
    assert len(visits) == len(tracked)
    assert [e.position for e in stored] == list(range(1, len(stored) + 1))
    assert [e.id for e in received] == [e.id for e in stored]
    assert [e.id for e in early + rest] == [e.id for e in stored]
