"""The servicers: each RPC translates protobuf to the domain and back, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from journey.api import convert, encoding, page_token
from journey.api.validation import MAX_PAGE_SIZE
from journey.config import Settings
from journey.domain.rules import TrackCommand
from journey.journal import Journal
from journey.observability import trace_context
from journey.streaming.follow import (
    BEGINNING,
    END,
    CaughtUp,
    Checkpoint,
    Delivery,
    FellBehind,
    Follow,
)
from journey_client import pb

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_PAGE_SIZE = 100
# SubscribeRequest.max_batch_size above this means this.
MAX_BATCH_SIZE = 1000
_NOTHING: tuple[pb.SubscribeResponse, ...] = ()


class TrackerServicer(pb.TrackerServiceServicer):
    """journey.v1.TrackerService."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def Track(self, request: pb.TrackRequest, context: Context) -> pb.TrackResponse:
        """Store tracked events; answer with the system events they caused."""
        result = await self._journal.track(
            TrackCommand(
                source_id=request.source_id,
                profile_id=request.profile_id,
                session_id=request.session_id,
                events=[convert.new_tracked_event(e) for e in request.events],
                trace_context=trace_context.for_events(context.invocation_metadata()),
            )
        )
        return pb.TrackResponse(
            profile_id=result.profile_id,
            session_id=result.session_id,
            event_ids=result.event_ids,
            system_events=[convert.system_event(e) for e in result.system_events],
        )


class SystemEventServicer(pb.SystemEventServiceServicer):
    """journey.v1.SystemEventService."""

    def __init__(self, journal: Journal, follow: Follow) -> None:
        self._journal = journal
        self._follow = follow

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeResponse]:
        """Stream system events: replay, then live.

        Each event was serialized once, when committed, and the bytes are written here:
        encoding.add_system_event_service registers this method to send them as they are.
        Writing rather than yielding also spares every message a trip through each
        interceptor's wrapping generator; those see the stream begin and end, as before.
        """
        start: str | int = END
        match request.WhichOneof("start"):
            case "beginning":
                start = BEGINNING
            case "after_position":
                start = request.after_position
        batch_size = min(request.max_batch_size, MAX_BATCH_SIZE)
        stream = self._follow.stream(convert.event_filter(request.filter), start)
        async for item in stream:
            if isinstance(item, Delivery):
                for data in encoding.messages(item.events, batch_size):
                    await context.write(data)
            else:
                await context.write(_subscribe_response(item).SerializeToString())
        # grpc (and the interceptors) tell a streaming method by its being an async generator;
        # this one yields nothing, having written everything itself.
        for message in _NOTHING:
            yield message

    # Returns the response serialized, as encoding.add_system_event_service registers it to.
    async def ListSystemEvents(  # type: ignore[override]
        self, request: pb.ListSystemEventsRequest, context: Context
    ) -> bytes:
        """One page of the log, each event as it was encoded when committed."""
        after = page_token.decode(request)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        events = await self._journal.system_events(
            convert.event_filter(request.filter),
            after,
            size + 1,
            convert.moment(request.start_time) if request.HasField("start_time") else None,
            convert.moment(request.end_time) if request.HasField("end_time") else None,
        )
        page, more = events[:size], len(events) > size
        return encoding.list_response(
            page, page_token.encode(request, page[-1].position) if more else ""
        )


def _subscribe_response(item: Checkpoint | CaughtUp | FellBehind) -> pb.SubscribeResponse:
    match item:
        case Checkpoint(position, server_time):
            return pb.SubscribeResponse(
                checkpoint=pb.Checkpoint(
                    position=position, server_time=convert.timestamp(server_time)
                )
            )
        case CaughtUp(position):
            return pb.SubscribeResponse(caught_up=pb.CaughtUp(position=position))
        case FellBehind(position):
            return pb.SubscribeResponse(fell_behind=pb.FellBehind(position=position))


class SessionServicer(pb.SessionServiceServicer):
    """journey.v1.SessionService."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def GetSession(
        self, request: pb.GetSessionRequest, context: Context
    ) -> pb.GetSessionResponse:
        """A session."""
        session = await self._journal.session(request.session_id)
        return pb.GetSessionResponse(session=convert.session(session))

    async def EndSession(
        self, request: pb.EndSessionRequest, context: Context
    ) -> pb.EndSessionResponse:
        """Close a session."""
        session, events = await self._journal.end_session(
            request.session_id,
            request.reason,
            trace_context.for_events(context.invocation_metadata()),
        )
        return pb.EndSessionResponse(
            session=convert.session(session),
            system_events=[convert.system_event(e) for e in events],
        )

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Context
    ) -> pb.GetProfileResponse:
        """A profile."""
        profile = await self._journal.profile(request.profile_id)
        return pb.GetProfileResponse(profile=convert.profile(profile))


class SettingsServicer(pb.SettingsServiceServicer):
    """journey.v1.SettingsService."""

    def __init__(self, settings: Settings) -> None:
        self._response = pb.GetSettingsResponse(
            enabled_types=sorted(int(t) for t in settings.enabled_types),  # type: ignore[misc]
            visit_timeout=convert.duration(settings.visit_timeout),
            session_timeout=convert.duration(settings.session_timeout),
            heartbeat_interval=convert.duration(settings.heartbeat_interval),
            source_ids=[s.id for s in settings.sources],
        )

    async def GetSettings(
        self, request: pb.GetSettingsRequest, context: Context
    ) -> pb.GetSettingsResponse:
        """The settings in force."""
        return self._response
