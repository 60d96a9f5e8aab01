"""An in-process stand-in for Journey that cuts streams and fails calls on a script."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from journey_client import pb

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class Step:
    """What one Subscribe call does: send `count` messages from the start, then end so."""

    count: int
    ending: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE  # OK: end the stream cleanly
    rewind: int = 0  # misbehave: start this many events before the asked-for position
    checkpoint: int | None = None  # send a checkpoint at this position before ending


@dataclass
class FakeEvents(pb.SystemEventServiceServicer):
    """Serves `log` (events at positions 1..n) following `script`, one Step per call.

    Like Journey it sends batches to a subscriber that asks for them, here of at most 2 events
    whatever the size asked, so that a scripted cut can fall between the events of a batch.
    """

    log: list[pb.SystemEvent]
    script: list[Step]
    requests: list[pb.SubscribeRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeResponse]:
        """Send the next step's messages, then end the stream as it says."""
        self.requests.append(request)
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        step = self.script.pop(0) if self.script else Step(len(self.log), grpc.StatusCode.OK)
        start = request.WhichOneof("start")
        after = {"beginning": 0, "after_position": request.after_position}.get(
            start or "end", len(self.log)
        )
        if after > len(self.log):
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"position {after} not assigned")
        first = max(0, after - step.rewind)
        events = self.log[first : first + step.count]
        if request.max_batch_size > 1:
            for i in range(0, len(events), 2):
                yield pb.SubscribeResponse(batch=pb.SystemEventBatch(events=events[i : i + 2]))
        else:
            for event in events:
                yield pb.SubscribeResponse(event=event)
        if step.checkpoint is not None:
            yield pb.SubscribeResponse(checkpoint=pb.Checkpoint(position=step.checkpoint))
        if step.ending != grpc.StatusCode.OK:
            await context.abort(step.ending, "scripted end")

    async def ListSystemEvents(
        self, request: pb.ListSystemEventsRequest, context: Context
    ) -> pb.ListSystemEventsResponse:
        """Not part of the fake."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")


def make_log(count: int) -> list[pb.SystemEvent]:
    """`count` events at positions 1..count."""
    return [
        pb.SystemEvent(
            position=i, id=f"e{i}", type=pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED
        )
        for i in range(1, count + 1)
    ]


@dataclass
class FakeSessions(pb.SessionServiceServicer):
    """GetSession fails with the code, message and trailers it is given; records the metadata."""

    failure: tuple[grpc.StatusCode, str, Any] | None = None
    metadata: list[dict[str, str]] = field(default_factory=list)

    async def GetSession(
        self, request: pb.GetSessionRequest, context: Context
    ) -> pb.GetSessionResponse:
        """Fail as told, or answer a session with the id asked for."""
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        if self.failure is not None:
            await context.abort(*self.failure)
        return pb.GetSessionResponse(session=pb.Session(id=request.session_id))

    async def EndSession(
        self, request: pb.EndSessionRequest, context: Context
    ) -> pb.EndSessionResponse:
        """Not part of the fake."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Context
    ) -> pb.GetProfileResponse:
        """Not part of the fake."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")


@dataclass
class FakeTracker(pb.TrackerServiceServicer):
    """Track fails with `failure` (UNAVAILABLE: a replica going away) or echoes the event ids."""

    failure: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE
    requests: list[pb.TrackRequest] = field(default_factory=list)

    async def Track(self, request: pb.TrackRequest, context: Context) -> pb.TrackResponse:
        """Record the request, then fail or answer with its event ids."""
        self.requests.append(request)
        if self.failure is not None:
            await context.abort(self.failure, "fake replica")
        return pb.TrackResponse(
            profile_id=request.profile_id,
            session_id=request.session_id,
            event_ids=[e.id for e in request.events],
        )


@asynccontextmanager
async def fake_server(
    events: FakeEvents | None = None,
    sessions: FakeSessions | None = None,
    credentials: grpc.ServerCredentials | None = None,
    tracker: FakeTracker | None = None,
    listen: str = "127.0.0.1:0",
) -> AsyncIterator[str]:
    """Serve the fakes on `listen` (a free loopback port by default); yields the address."""
    server = grpc.aio.server()
    if tracker is not None:
        pb.add_TrackerServiceServicer_to_server(tracker, server)
    if events is not None:
        pb.add_SystemEventServiceServicer_to_server(events, server)
    if sessions is not None:
        pb.add_SessionServiceServicer_to_server(sessions, server)
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    await server.start()
    try:
        yield f"{listen.rpartition(':')[0]}:{port}"
    finally:
        await server.stop(None)


def positions(events: Sequence[pb.SystemEvent]) -> list[int]:
    """The positions of these events, in order."""
    return [e.position for e in events]
