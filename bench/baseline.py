"""The ceiling: journey.v1 Track and Subscribe on bare grpcio, with no storage and no state.

Track answers at once. Like Journey, a Track that names no session gets the three system
events of a new session (profile-created, session-opened, visit-started), and one that names
a session gets none; each is fanned out to every live subscriber. `beginning` replays
`--replay-events` synthetic events built at start, the analogue of Journey's replay.
With `max_batch_size` above 1, a subscriber gets whatever is queued for it, up to the limit,
as one `SystemEventBatch` (and the replay in batches of the limit), as Journey does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from journey_client import pb

Batch = pb.system_event_pb2.SystemEventBatch

Context = grpc.aio.ServicerContext[Any, Any]
NEW_SESSION_TYPES = (
    pb.SystemEventType.SYSTEM_EVENT_TYPE_PROFILE_CREATED,
    pb.SystemEventType.SYSTEM_EVENT_TYPE_SESSION_OPENED,
    pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_STARTED,
)
# Bounded like Journey's live buffers; the load generator never lets a subscriber lag this far.
QUEUE_SIZE = 10_000
# The contract's cap on max_batch_size. The baseline's events are ~150 bytes, so a full batch
# stays far below the contract's ~1 MiB bound and needs no byte count.
MAX_BATCH_SIZE = 1000


class Hub:
    """The live subscribers' queues; the only thing the baseline holds."""

    def __init__(self) -> None:
        # One-by-one subscribers share each event's prebuilt message; batching ones take
        # the events and build their own batch message from what is queued.
        self.queues: set[asyncio.Queue[pb.SubscribeResponse]] = set()
        self.batch_queues: set[asyncio.Queue[pb.SystemEvent]] = set()
        self.positions = itertools.count(1)

    def publish(self, events: list[pb.SystemEvent]) -> None:
        """Hand each event to every live subscriber."""
        for event in events:
            if self.queues:
                message = pb.SubscribeResponse(event=event)
                for queue in self.queues:
                    queue.put_nowait(message)
            for batch_queue in self.batch_queues:
                batch_queue.put_nowait(event)


class Tracker(pb.TrackerServiceServicer):
    """Track: answer at once, fan out the new-session events."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def Track(self, request: pb.TrackRequest, context: Context) -> pb.TrackResponse:
        """Answer at once."""
        profile_id = request.profile_id or str(uuid.uuid4())
        session_id = request.session_id or str(uuid.uuid4())
        events: list[pb.SystemEvent] = []
        if not request.session_id:
            now = Timestamp()
            now.GetCurrentTime()
            events = [
                pb.SystemEvent(
                    position=next(self._hub.positions),
                    id=str(uuid.uuid4()),
                    type=kind,
                    occur_time=now,
                    profile_id=profile_id,
                    session_id=session_id,
                    source_id=request.source_id,
                )
                for kind in NEW_SESSION_TYPES
            ]
            self._hub.publish(events)
        return pb.TrackResponse(
            profile_id=profile_id,
            session_id=session_id,
            event_ids=[e.id or str(uuid.uuid4()) for e in request.events],
            system_events=events,
        )


class Events(pb.SystemEventServiceServicer):
    """Subscribe: the synthetic replay for `beginning`, then live events."""

    def __init__(self, hub: Hub, replay: list[pb.SubscribeResponse]) -> None:
        self._hub = hub
        self._replay = replay

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeResponse]:
        """Replay (when asked), caught_up, then live."""
        limit = min(request.max_batch_size, MAX_BATCH_SIZE)
        if limit > 1:
            async for message in self._batches(request, limit):
                yield message
            return
        queue: asyncio.Queue[pb.SubscribeResponse] = asyncio.Queue(QUEUE_SIZE)
        self._hub.queues.add(queue)
        try:
            if request.HasField("beginning"):
                for message in self._replay:
                    yield message
            yield pb.SubscribeResponse(caught_up=pb.CaughtUp(position=len(self._replay)))
            while True:
                yield await queue.get()
        finally:
            self._hub.queues.discard(queue)

    async def _batches(
        self, request: pb.SubscribeRequest, limit: int
    ) -> AsyncIterator[pb.SubscribeResponse]:
        """Subscribe with batches: the replay `limit` events a message, then what is queued."""
        queue: asyncio.Queue[pb.SystemEvent] = asyncio.Queue(QUEUE_SIZE)
        self._hub.batch_queues.add(queue)
        try:
            if request.HasField("beginning"):
                for i in range(0, len(self._replay), limit):
                    chunk = self._replay[i : i + limit]
                    yield pb.SubscribeResponse(batch=Batch(events=[m.event for m in chunk]))
            yield pb.SubscribeResponse(caught_up=pb.CaughtUp(position=len(self._replay)))
            while True:
                # Whatever is already queued, up to the limit: a live event never waits for
                # others to fill a batch.
                events = [await queue.get()]
                while len(events) < limit and not queue.empty():
                    events.append(queue.get_nowait())
                yield pb.SubscribeResponse(batch=Batch(events=events))
        finally:
            self._hub.batch_queues.discard(queue)

    async def ListSystemEvents(
        self, request: pb.ListSystemEventsRequest, context: Context
    ) -> pb.ListSystemEventsResponse:
        """Not part of the baseline: it stores nothing to page through."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the baseline stores nothing")


def synthetic_log(count: int) -> list[pb.SubscribeResponse]:
    """`count` made-up events, built once at start."""
    now = Timestamp()
    now.GetCurrentTime()
    out = []
    for position in range(1, count + 1):
        event = pb.SystemEvent(
            position=position,
            id=str(uuid.uuid4()),
            type=NEW_SESSION_TYPES[position % 3],
            occur_time=now,
            profile_id=f"profile-{position // 3}",
            session_id=f"session-{position // 3}",
            source_id="bench",
        )
        event.properties.update({"visit_number": 1})
        out.append(pb.SubscribeResponse(event=event))
    return out


async def serve(replay_events: int) -> None:
    """Serve on a free port, print it, and run until cancelled."""
    hub = Hub()
    server = grpc.aio.server()
    pb.add_TrackerServiceServicer_to_server(Tracker(hub), server)
    pb.add_SystemEventServiceServicer_to_server(Events(hub, synthetic_log(replay_events)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on port {port}", file=sys.stderr, flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(0)


def main() -> None:
    """Entry point: `python -m bench.baseline [--replay-events N]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replay-events", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.replay_events))


if __name__ == "__main__":
    main()
