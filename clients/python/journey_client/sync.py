"""A small synchronous facade over JourneyClient, for scripts: same methods, no `await`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from journey_client import pb
from journey_client.client import JourneyClient
from journey_client.connection import DEFAULT_SERVER
from journey_client.consumer import DEFAULT_MAX_IN_FLIGHT, Consumer, Delivery
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


class SyncDelivery:
    """A Delivery whose `ack`, `nack`, `reject` and `extend` block; see Delivery."""

    def __init__(self, loop: _Loop, delivery: Delivery) -> None:
        self._loop = loop
        self._delivery = delivery
        self.delivery_id = delivery.delivery_id
        self.attempt = delivery.attempt
        self.event = delivery.event

    @property
    def void(self) -> bool:
        """See Delivery.void."""
        return self._delivery.void

    def ack(self, *, wait: bool = True) -> bool:
        """See Delivery.ack."""
        return self._loop.run(self._delivery.ack(wait=wait))

    def nack(self, delay: float | timedelta | None = None, *, wait: bool = True) -> bool:
        """See Delivery.nack."""
        return self._loop.run(self._delivery.nack(delay, wait=wait))

    def reject(self, reason: str = "", *, wait: bool = True) -> bool:
        """See Delivery.reject."""
        return self._loop.run(self._delivery.reject(reason, wait=wait))

    def extend(self) -> bool:
        """See Delivery.extend."""
        return self._loop.run(self._delivery.extend())

    def wait_settled(self) -> bool:
        """See Delivery.wait_settled."""
        return self._loop.run(self._delivery.wait_settled())


class SyncConsumer:
    """A blocking iterator over a Consumer's deliveries.

    The stream is read only while a call of this facade runs (iterating, acking): a handler
    that blocks for long should `extend()` its delivery, as an asyncio one would.
    """

    def __init__(self, loop: _Loop, consumer: Consumer) -> None:
        self._loop = loop
        self._consumer = consumer

    @property
    def reconnects(self) -> int:
        """How often the stream was joined again."""
        return self._consumer.reconnects

    def __iter__(self) -> Iterator[SyncDelivery]:
        """The deliveries, as the server hands them out."""
        for delivery in self._loop.iterate(self._consumer):
            yield SyncDelivery(self._loop, delivery)

    def close(self, grace: float = 5.0) -> None:
        """Leave the group (see Consumer.aclose)."""
        self._loop.run(self._consumer.aclose(grace))


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

    def consume(
        self,
        group: str,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_attempts: int | None = None,
    ) -> SyncConsumer:
        """See JourneyClient.consume."""
        consumer = self._client.consume(
            group, max_in_flight=max_in_flight, max_attempts=max_attempts
        )
        return SyncConsumer(self._loop, consumer)

    def create_consumer_group(
        self,
        name: str,
        filter: pb.SystemEventFilter | None = None,
        start: Start = "end",
        *,
        ack_timeout: float | timedelta | None = None,
        max_attempts: int = 0,
        ordering: str | int = "none",
    ) -> pb.ConsumerGroup:
        """See JourneyClient.create_consumer_group."""
        return self._loop.run(
            self._client.create_consumer_group(
                name,
                filter,
                start,
                ack_timeout=ack_timeout,
                max_attempts=max_attempts,
                ordering=ordering,
            )
        )

    def get_consumer_group(self, name: str) -> pb.ConsumerGroup:
        """See JourneyClient.get_consumer_group."""
        return self._loop.run(self._client.get_consumer_group(name))

    def list_consumer_groups(self, *, page_size: int = 0) -> Iterator[pb.ConsumerGroup]:
        """See JourneyClient.list_consumer_groups."""
        return self._loop.iterate(self._client.list_consumer_groups(page_size=page_size))

    def delete_consumer_group(self, name: str) -> None:
        """See JourneyClient.delete_consumer_group."""
        self._loop.run(self._client.delete_consumer_group(name))

    def list_dead_letters(self, name: str, *, page_size: int = 0) -> Iterator[pb.DeadLetter]:
        """See JourneyClient.list_dead_letters."""
        return self._loop.iterate(self._client.list_dead_letters(name, page_size=page_size))

    def redrive_dead_letters(self, name: str) -> int:
        """See JourneyClient.redrive_dead_letters."""
        return self._loop.run(self._client.redrive_dead_letters(name))
