"""A small synchronous facade over JourneyClient, for scripts: same methods, no `await`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from journey_client import pb
from journey_client.client import JourneyClient
from journey_client.connection import DEFAULT_SERVER
from journey_client.filters import DEFAULT_MAX_BATCH_SIZE, Start
from journey_client.subscription import Subscription

T = TypeVar("T")


async def _next(iterator: AsyncIterator[T]) -> T:
    return await anext(iterator)


class _Loop:
    """One private event loop that runs every call of one facade (grpc channels are per loop)."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self.run(_next(iterator))
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self._runner.close()


class SyncSubscription:
    """A blocking iterator over a resuming Subscription; `last_position` as there."""

    def __init__(self, loop: _Loop, subscription: Subscription) -> None:
        self._loop = loop
        self._subscription = subscription

    @property
    def last_position(self) -> int | None:
        """The position to persist and resume after (see Subscription)."""
        return self._subscription.last_position

    def __iter__(self) -> Iterator[pb.SystemEvent]:
        """The events, each exactly once, in order."""
        return self._loop.iterate(self._subscription)

    def close(self) -> None:
        """Cancel the stream."""
        self._loop.run(self._subscription.aclose())


class JourneySyncClient:
    """JourneyClient for code without an event loop; use `with JourneySyncClient(...) as c`."""

    def __init__(self, server: str | Sequence[str] = DEFAULT_SERVER, **options: Any) -> None:
        self._loop = _Loop()

        async def connect() -> JourneyClient:
            # grpc's asyncio channel must be made inside the loop that will use it.
            return JourneyClient(server, **options)

        self._client = self._loop.run(connect())

    def __enter__(self) -> JourneySyncClient:
        """Use the client as a context manager."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Close the client."""
        self.close()

    def close(self) -> None:
        """Close the channel and the private loop."""
        self._loop.run(self._client.close())
        self._loop.close()

    def track(
        self,
        source_id: str,
        events: Iterable[pb.TrackedEvent | str],
        *,
        profile_id: str = "",
        session_id: str = "",
        context: Mapping[str, Any] | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> pb.TrackResponse:
        """See JourneyClient.track."""
        return self._loop.run(
            self._client.track(
                source_id,
                events,
                profile_id=profile_id,
                session_id=session_id,
                context=context,
                trace_context=trace_context,
            )
        )

    def end_session(
        self, session_id: str, reason: str = "", *, trace_context: Mapping[str, str] | None = None
    ) -> pb.EndSessionResponse:
        """See JourneyClient.end_session."""
        return self._loop.run(
            self._client.end_session(session_id, reason, trace_context=trace_context)
        )

    def get_session(self, session_id: str) -> pb.Session:
        """See JourneyClient.get_session."""
        return self._loop.run(self._client.get_session(session_id))

    def get_profile(self, profile_id: str) -> pb.Profile:
        """See JourneyClient.get_profile."""
        return self._loop.run(self._client.get_profile(profile_id))

    def get_settings(self) -> pb.GetSettingsResponse:
        """See JourneyClient.get_settings."""
        return self._loop.run(self._client.get_settings())

    def list_system_events(
        self,
        filter: pb.SystemEventFilter | None = None,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
    ) -> Iterator[pb.SystemEvent]:
        """See JourneyClient.list_system_events."""
        return self._loop.iterate(
            self._client.list_system_events(
                filter, start_time=start_time, end_time=end_time, page_size=page_size
            )
        )

    def subscribe(
        self,
        filter: pb.SystemEventFilter | None = None,
        start: Start = "end",
        *,
        max_attempts: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> SyncSubscription:
        """See JourneyClient.subscribe."""
        subscription = self._client.subscribe(
            filter, start, max_attempts=max_attempts, max_batch_size=max_batch_size
        )
        return SyncSubscription(self._loop, subscription)
