"""An in-process Journey on a free port, with a channel and a stub for every service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from journey.app import JourneyServer, create_server
from journey.clock import Clock
from journey.config import Settings
from journey.domain.model import SystemEvent, SystemEventFilter
from journey.storage import statements
from journey.storage.database import Database
from journey.storage.records import system_event_from_row
from journey_client import pb


@dataclass
class Harness:
    """A running server and typed stubs connected to it."""

    server: JourneyServer
    port: int
    channel: grpc.aio.Channel
    tracker: pb.TrackerServiceAsyncStub
    events: pb.SystemEventServiceAsyncStub
    sessions: pb.SessionServiceAsyncStub
    settings: pb.SettingsServiceAsyncStub

    async def track(
        self,
        *types: str,
        source_id: str = "web",
        profile_id: str = "",
        session_id: str = "",
        ids: Sequence[str] = (),
        **properties: Any,
    ) -> pb.TrackResponse:
        """Track one event per type (with client ids when given) and return the response."""
        events = []
        for i, kind in enumerate(types or ("page-view",)):
            event = pb.TrackedEvent(type=kind, id=ids[i] if i < len(ids) else "")
            if properties:
                event.properties.update(properties)
            events.append(event)
        request = pb.TrackRequest(
            source_id=source_id, profile_id=profile_id, session_id=session_id, events=events
        )
        response: pb.TrackResponse = await self.tracker.Track(request)
        return response

    async def all_events(self) -> list[pb.SystemEvent]:
        """Every stored system event, via ListSystemEvents."""
        return await all_events(self.events)


@asynccontextmanager
async def serving(
    settings: Settings, *, clock: Clock | None = None, tracer_provider: Any = None
) -> AsyncIterator[Harness]:
    """Start a server, yield a harness connected to it, and stop it afterwards."""
    server, port = await create_server(settings, clock=clock, tracer_provider=tracer_provider)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Harness(
                server=server,
                port=port,
                channel=channel,
                tracker=pb.TrackerServiceStub(channel),
                events=pb.SystemEventServiceStub(channel),
                sessions=pb.SessionServiceStub(channel),
                settings=pb.SettingsServiceStub(channel),
            )
    finally:
        await server.stop(1.0)


async def all_events(events: pb.SystemEventServiceAsyncStub) -> list[pb.SystemEvent]:
    """Every stored system event, page by page through ListSystemEvents."""
    out: list[pb.SystemEvent] = []
    token = ""
    while True:
        page = await events.ListSystemEvents(
            pb.ListSystemEventsRequest(page_size=1000, page_token=token)
        )
        out.extend(page.system_events)
        token = page.next_page_token
        if not token:
            return out


async def status_of(call: Awaitable[Any]) -> grpc.StatusCode:
    """The status code a call ends with (OK if it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def types_of(events: Sequence[pb.SystemEvent]) -> list[int]:
    """The types of these events, in order."""
    return [e.type for e in events]


async def stored_system_events(database: Database, limit: int) -> list[SystemEvent]:
    """The first `limit` events as their row columns hold them (readers get the encoded bytes)."""
    query = statements.system_events_page(SystemEventFilter(), 0, limit)
    async with database.sessions() as session:
        rows = (await session.execute(query)).all()
    return [system_event_from_row(row) for row in rows]
