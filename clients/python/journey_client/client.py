"""The asyncio client: one method per call, typed errors, and resuming subscriptions."""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from journey_client import pb
from journey_client.connection import DEFAULT_SERVER, Connection, Tls
from journey_client.errors import from_rpc_error
from journey_client.filters import DEFAULT_MAX_BATCH_SIZE, Start
from journey_client.subscription import Backoff, Subscription

Response = TypeVar("Response")


def tracked_event(
    type: str,
    properties: Mapping[str, Any] | None = None,
    *,
    id: str = "",
    occur_time: datetime | None = None,
) -> pb.TrackedEvent:
    """A TrackedEvent from plain values (properties: anything JSON can hold)."""
    event = pb.TrackedEvent(type=type, id=id)
    if properties:
        event.properties.update(properties)
    if occur_time is not None:
        event.occur_time.FromDatetime(occur_time)
    return event


class JourneyClient:
    """A connection to a Journey server; use `async with JourneyClient(...) as client`."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        api_key: str | None = None,
        tls: Tls | None = None,
        timeout: float | None = 30.0,
        backoff: Backoff | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.connection = Connection(server, api_key, tls, channel_options)
        self._channel = self.connection.channel()
        self._metadata = self.connection.metadata()
        self._timeout = timeout
        self._backoff = backoff
        self._tracker: pb.TrackerServiceAsyncStub = pb.TrackerServiceStub(self._channel)
        self._events: pb.SystemEventServiceAsyncStub = pb.SystemEventServiceStub(self._channel)
        self._sessions: pb.SessionServiceAsyncStub = pb.SessionServiceStub(self._channel)
        self._settings: pb.SettingsServiceAsyncStub = pb.SettingsServiceStub(self._channel)

    @classmethod
    def with_tls_files(
        cls,
        server: str = DEFAULT_SERVER,
        *,
        root_ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        **options: Any,
    ) -> JourneyClient:
        """A client over TLS with PEM files: the server's CA, and a client cert+key for mTLS."""
        return cls(server, tls=Tls.from_files(root_ca, cert, key), **options)

    async def __aenter__(self) -> JourneyClient:
        """Use the client as an async context manager."""
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Close the channel."""
        await self.close()

    async def close(self) -> None:
        """Close the channel; running calls are cancelled."""
        await self._channel.close(None)

    async def _call(
        self,
        method: Callable[..., Awaitable[Response]],
        request: Any,
        trace_context: Mapping[str, str] | None = None,
    ) -> Response:
        metadata = self._metadata
        if trace_context:
            # W3C trace context travels as the metadata keys of its HTTP header names.
            metadata = (*metadata, *trace_context.items())
        try:
            return await method(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error

    async def track(
        self,
        source_id: str,
        events: Iterable[pb.TrackedEvent | str],
        *,
        profile_id: str = "",
        session_id: str = "",
        context: Mapping[str, Any] | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> pb.TrackResponse:
        """Store tracked events (a string is an event type with no properties).

        `trace_context` (`traceparent` and maybe `tracestate`, W3C) is sent with the call: the
        system events it causes carry it, or the server's span for the call if it traces.
        """
        request = pb.TrackRequest(
            source_id=source_id,
            profile_id=profile_id,
            session_id=session_id,
            events=[tracked_event(e) if isinstance(e, str) else e for e in events],
        )
        if context:
            request.context.update(context)
        return await self._call(self._tracker.Track, request, trace_context)

    async def end_session(
        self, session_id: str, reason: str = "", *, trace_context: Mapping[str, str] | None = None
    ) -> pb.EndSessionResponse:
        """Close a session; the response carries the system events it caused.

        `trace_context`: as for `track`.
        """
        request = pb.EndSessionRequest(session_id=session_id, reason=reason)
        return await self._call(self._sessions.EndSession, request, trace_context)

    async def get_session(self, session_id: str) -> pb.Session:
        """A session as it stands now."""
        request = pb.GetSessionRequest(session_id=session_id)
        return (await self._call(self._sessions.GetSession, request)).session

    async def get_profile(self, profile_id: str) -> pb.Profile:
        """A profile as it stands now."""
        request = pb.GetProfileRequest(profile_id=profile_id)
        return (await self._call(self._sessions.GetProfile, request)).profile

    async def get_settings(self) -> pb.GetSettingsResponse:
        """The settings in force on the server."""
        return await self._call(self._settings.GetSettings, pb.GetSettingsRequest())

    async def list_system_events(
        self,
        filter: pb.SystemEventFilter | None = None,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
    ) -> AsyncIterator[pb.SystemEvent]:
        """Every stored event that matches, in position order, fetching page after page."""
        request = pb.ListSystemEventsRequest(filter=filter, page_size=page_size)
        if start_time is not None:
            request.start_time.FromDatetime(start_time)
        if end_time is not None:
            request.end_time.FromDatetime(end_time)
        while True:
            page = await self._call(self._events.ListSystemEvents, request)
            for event in page.system_events:
                yield event
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def subscribe(
        self,
        filter: pb.SystemEventFilter | None = None,
        start: Start = "end",
        *,
        max_attempts: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> Subscription:
        """Follow the log live from `start`, surviving reconnects and server restarts.

        `start` is "beginning", "end" or a position (exclusive), such as a `last_position`
        persisted before the consumer restarted. `max_attempts` bounds consecutive failed
        reconnects (None: retry for ever). `max_batch_size` is how many events the server may
        put in one message (0 or 1: one each); events are yielded one at a time either way.
        """

        def open_stream(request: pb.SubscribeRequest) -> AsyncIterable[pb.SubscribeResponse]:
            # No deadline: a subscription lives until cancelled.
            call: AsyncIterable[pb.SubscribeResponse] = self._events.Subscribe(
                request, metadata=self._metadata
            )
            return call

        return Subscription(
            open_stream,
            filter,
            start,
            backoff=self._backoff,
            max_attempts=max_attempts,
            max_batch_size=max_batch_size,
        )
