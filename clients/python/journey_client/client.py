"""The asyncio client: one method per call, typed errors, resuming subscriptions, consumers."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from journey_client import pb
from journey_client.connection import DEFAULT_SERVER, Connection, Tls
from journey_client.consumer import DEFAULT_MAX_IN_FLIGHT, ConsumeCall, Consumer
from journey_client.errors import from_rpc_error
from journey_client.filters import DEFAULT_MAX_BATCH_SIZE, Start
from journey_client.groups import create_request
from journey_client.subscription import Backoff, Subscription

Response = TypeVar("Response")
# With several addresses, a call that grpc's own retries (a round) still end UNAVAILABLE is
# tried again after a pause that starts here and doubles, in up to this many rounds, while at
# least MIN_RETRY_WINDOW seconds of its timeout are left: a few seconds in all, what a replica
# that is shutting down takes to close its port.
RETRY_PAUSE = 0.1
RETRY_ROUNDS = 4
MIN_RETRY_WINDOW = 0.25


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


def with_id(event: pb.TrackedEvent | str) -> pb.TrackedEvent:
    """The event with an id: its own, or a new UUID, so that a retried Track is stored once."""
    if isinstance(event, str):
        return tracked_event(event, id=str(uuid.uuid4()))
    if event.id:
        return event
    copy = pb.TrackedEvent()
    copy.CopyFrom(event)  # the caller's message stays as it was
    copy.id = str(uuid.uuid4())
    return copy


@dataclass(frozen=True)
class _Stubs:
    """The typed stubs over one channel."""

    tracker: pb.TrackerServiceAsyncStub
    events: pb.SystemEventServiceAsyncStub
    sessions: pb.SessionServiceAsyncStub
    settings: pb.SettingsServiceAsyncStub
    groups: pb.ConsumerGroupServiceAsyncStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> _Stubs:
        return cls(
            pb.TrackerServiceStub(channel),
            pb.SystemEventServiceStub(channel),
            pb.SessionServiceStub(channel),
            pb.SettingsServiceStub(channel),
            pb.ConsumerGroupServiceStub(channel),
        )


class JourneyClient:
    """A connection to Journey servers; use `async with JourneyClient(...) as client`.

    `server` is one address ("host:port", whose DNS records are all used), several ("a:1,b:2"
    or a list), or a grpc target such as "dns:///journey.internal:50051". Calls are spread
    round-robin over them; Track and the reads are retried on UNAVAILABLE on another one, and a
    subscription resumes on another one.
    """

    def __init__(
        self,
        server: str | Sequence[str] = DEFAULT_SERVER,
        *,
        api_key: str | None = None,
        tls: Tls | None = None,
        timeout: float | None = 30.0,
        backoff: Backoff | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.connection = Connection.to(server, api_key, tls, channel_options)
        # Usually one channel, whose round_robin policy spreads calls over every address; one
        # per address only when grpc has no target for them all (see connection.targets).
        self._channels = self.connection.channels()
        self._stubs = [_Stubs.on(channel) for channel in self._channels]
        self._turn = itertools.count()
        self._metadata = self.connection.metadata()
        self._timeout = timeout
        self._backoff = backoff

    @classmethod
    def with_tls_files(
        cls,
        server: str | Sequence[str] = DEFAULT_SERVER,
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
        """Close the channels; running calls are cancelled."""
        for channel in self._channels:
            await channel.close(None)

    def _pick(self) -> _Stubs:
        return self._stubs[next(self._turn) % len(self._stubs)]

    async def _call(
        self,
        method: Callable[[_Stubs], Callable[..., Awaitable[Response]]],
        request: Any,
        *,
        retried: bool = True,
        trace_context: Mapping[str, str] | None = None,
    ) -> Response:
        # Within a channel grpc's retry policy moves a retried call to another address, but
        # round_robin's turn is shared by every call in flight, so under concurrency all of one
        # call's attempts can land on the same replica (seen in a rolling restart: a replica
        # that is shutting down answers UNAVAILABLE until its port closes). So with several
        # addresses a call that still ends UNAVAILABLE is tried again, with backoff, for a few
        # rounds within its deadline; with a channel per address each try also goes to the
        # next channel.
        metadata = self._metadata
        if trace_context:
            # W3C trace context travels as the metadata keys of its HTTP header names.
            metadata = (*metadata, *trace_context.items())
        several = len(self.connection.servers) > 1
        deadline = (
            None if self._timeout is None else asyncio.get_running_loop().time() + self._timeout
        )
        pause = RETRY_PAUSE
        unavailable: grpc.aio.AioRpcError | None = None
        for attempt in range(1, RETRY_ROUNDS + 1):
            timeout = (
                None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
            )
            try:
                return await method(self._pick())(request, metadata=metadata, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and unavailable is not None:
                    # The deadline ran out in a retry: what stopped the call is that no
                    # replica was available.
                    raise from_rpc_error(unavailable) from error
                again = retried and several and error.code() == grpc.StatusCode.UNAVAILABLE
                room = deadline is None or (
                    asyncio.get_running_loop().time() + pause + MIN_RETRY_WINDOW < deadline
                )
                if not (again and room) or attempt == RETRY_ROUNDS:
                    raise from_rpc_error(error) from error
                unavailable = error
            await asyncio.sleep(pause)
            pause *= 2
        raise AssertionError("unreachable")  # pragma: no cover

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

        An event without an id gets a new UUID here, so that a retry on another server after
        UNAVAILABLE cannot store it twice; the response's `event_ids` tell which.
        `trace_context` (`traceparent` and maybe `tracestate`, W3C) is sent with the call: the
        system events it causes carry it, or the server's span for the call if it traces.
        """
        request = pb.TrackRequest(
            source_id=source_id,
            profile_id=profile_id,
            session_id=session_id,
            events=[with_id(e) for e in events],
        )
        if context:
            request.context.update(context)
        return await self._call(lambda s: s.tracker.Track, request, trace_context=trace_context)

    async def end_session(
        self, session_id: str, reason: str = "", *, trace_context: Mapping[str, str] | None = None
    ) -> pb.EndSessionResponse:
        """Close a session; the response carries the system events it caused.

        `trace_context`: as for `track`.
        """
        request = pb.EndSessionRequest(session_id=session_id, reason=reason)
        return await self._call(
            lambda s: s.sessions.EndSession, request, retried=False, trace_context=trace_context
        )

    async def get_session(self, session_id: str) -> pb.Session:
        """A session as it stands now."""
        request = pb.GetSessionRequest(session_id=session_id)
        return (await self._call(lambda s: s.sessions.GetSession, request)).session

    async def get_profile(self, profile_id: str) -> pb.Profile:
        """A profile as it stands now."""
        request = pb.GetProfileRequest(profile_id=profile_id)
        return (await self._call(lambda s: s.sessions.GetProfile, request)).profile

    async def get_settings(self) -> pb.GetSettingsResponse:
        """The settings in force on the server."""
        return await self._call(lambda s: s.settings.GetSettings, pb.GetSettingsRequest())

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
            page = await self._call(lambda s: s.events.ListSystemEvents, request)
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
        """Follow the log live from `start`, surviving reconnects, restarts and failovers.

        `start` is "beginning", "end" or a position (exclusive), such as a `last_position`
        persisted before the consumer restarted. `max_attempts` bounds consecutive failed
        reconnects (None: retry for ever). `max_batch_size` is how many events the server may
        put in one message (0 or 1: one each); events are yielded one at a time either way.
        """

        def open_stream(request: pb.SubscribeRequest) -> AsyncIterable[pb.SubscribeResponse]:
            # No deadline: a subscription lives until cancelled. Each (re)connect is a new
            # pick, so a stream cut on one server resumes on another.
            call: AsyncIterable[pb.SubscribeResponse] = self._pick().events.Subscribe(
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

    def consume(
        self,
        group: str,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_attempts: int | None = None,
    ) -> Consumer:
        """Join a consumer group as a member: an async iterator of its deliveries.

        Handle each delivery's `event`, then `await d.ack()` (or `nack`, `reject`); those
        wait until the server says the outcome is durable (see Delivery). At most
        `max_in_flight` deliveries are unsettled at once. The stream reconnects with backoff,
        on another server when several are given; `max_attempts` bounds consecutive failed
        reconnects (None: for ever). `await consumer.aclose()` leaves the group.
        """

        def open_call() -> ConsumeCall:
            # No deadline: a member stays until it leaves. Each (re)join is a new pick.
            call: ConsumeCall = self._pick().groups.Consume(None, metadata=self._metadata)
            return call

        return Consumer(
            open_call,
            group,
            max_in_flight=max_in_flight,
            backoff=self._backoff,
            max_attempts=max_attempts,
        )

    async def create_consumer_group(
        self,
        name: str,
        filter: pb.SystemEventFilter | None = None,
        start: Start = "end",
        *,
        ack_timeout: float | timedelta | None = None,
        max_attempts: int = 0,
        ordering: str | int = "none",
    ) -> pb.ConsumerGroup:
        """Create a group (or get it, when one exists with the same settings).

        `start`: "beginning", "end" or a position (exclusive), used only when it is created.
        `ack_timeout` in seconds (None: the server's 30 s); `max_attempts` 0: the server's 5;
        `ordering`: "none", "session" or "profile".
        """
        request = create_request(
            name,
            filter,
            start,
            ack_timeout=ack_timeout,
            max_attempts=max_attempts,
            ordering_=ordering,
        )
        return await self._call(lambda s: s.groups.CreateConsumerGroup, request)

    async def get_consumer_group(self, name: str) -> pb.ConsumerGroup:
        """A group, with its state (ack floor, pending, in flight, dead letters, members)."""
        request = pb.GetConsumerGroupRequest(name=name)
        return await self._call(lambda s: s.groups.GetConsumerGroup, request)

    async def list_consumer_groups(self, *, page_size: int = 0) -> AsyncIterator[pb.ConsumerGroup]:
        """Every group, in name order, fetching page after page."""
        request = pb.ListConsumerGroupsRequest(page_size=page_size)
        while True:
            page = await self._call(lambda s: s.groups.ListConsumerGroups, request)
            for group in page.consumer_groups:
                yield group
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def delete_consumer_group(self, name: str) -> None:
        """Delete a group; its members' streams end with NOT_FOUND."""
        request = pb.DeleteConsumerGroupRequest(name=name)
        # Not retried: a retry of a delete that went through would answer NOT_FOUND.
        await self._call(lambda s: s.groups.DeleteConsumerGroup, request, retried=False)

    async def list_dead_letters(
        self, name: str, *, page_size: int = 0
    ) -> AsyncIterator[pb.DeadLetter]:
        """Every dead letter of a group, in position order, fetching page after page."""
        request = pb.ListDeadLettersRequest(name=name, page_size=page_size)
        while True:
            page = await self._call(lambda s: s.groups.ListDeadLetters, request)
            for dead_letter in page.dead_letters:
                yield dead_letter
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def redrive_dead_letters(self, name: str) -> int:
        """Put all of a group's dead letters back to be delivered again; returns how many."""
        request = pb.RedriveDeadLettersRequest(name=name)
        # Not retried: a second redrive would count (and move) what came in since.
        response = await self._call(lambda s: s.groups.RedriveDeadLetters, request, retried=False)
        return response.count
