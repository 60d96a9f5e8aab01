"""A subscription that survives the connection: reconnect with backoff, resume, never repeat."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from journey_client import pb
from journey_client.errors import Unavailable, from_rpc_error
from journey_client.filters import DEFAULT_MAX_BATCH_SIZE, Start, subscribe_request

log = logging.getLogger("journey_client")

# What ends a stream without the subscription being wrong: the server went away (UNAVAILABLE),
# or it cut the stream while shutting down (CANCELLED, see PITFALLS). Reading is idempotent, so
# resuming is always safe; any other status is the caller's to handle.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})

OpenStream = Callable[[pb.SubscribeRequest], AsyncIterable[pb.SubscribeResponse]]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter between reconnect attempts."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """How long to wait before reconnect attempt `attempt` (1, 2, ...)."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        # Full jitter: many consumers cut off by one restart do not all return at once.
        return random.uniform(0, ceiling)


class Subscription:
    """An async iterator of the SystemEvents matching a filter, each exactly once, in order.

    The server sends up to `max_batch_size` events per message (0 or 1: one each); they are
    handed over one at a time all the same, and `last_position` moves event by event. It
    reconnects when the stream breaks (UNAVAILABLE, a cut or cleanly ended stream, a server
    restart) and resumes after `last_position`. Persist `last_position` after handling an
    event, and pass it back as `start` after the consumer's own restart.
    """

    def __init__(
        self,
        open_stream: OpenStream,
        filter: pb.SystemEventFilter | None = None,
        start: Start = "end",
        *,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> None:
        # A bad start or batch size fails here, not at the first read.
        subscribe_request(filter, start, max_batch_size)
        self._open = open_stream
        self._filter = filter
        self._start = start
        self._max_batch_size = max_batch_size
        self._backoff = backoff or Backoff()
        self._max_attempts = max_attempts
        self._events: AsyncIterator[pb.SystemEvent] | None = None
        # Every event up to here was yielded or did not match: resuming after it is safe.
        self.last_position: int | None = start if isinstance(start, int) else None
        self.reconnects = 0
        self.caught_up = False

    def __aiter__(self) -> Subscription:
        """The subscription is its own iterator."""
        return self

    async def __anext__(self) -> pb.SystemEvent:
        """The next matching event, reconnecting as often as needed."""
        if self._events is None:
            self._events = self._run()
        return await anext(self._events)

    async def aclose(self) -> None:
        """Cancel the stream."""
        if self._events is not None:
            await self._events.aclose()  # type: ignore[attr-defined]

    def _request(self) -> pb.SubscribeRequest:
        start = self._start if self.last_position is None else self.last_position
        return subscribe_request(self._filter, start, self._max_batch_size)

    def _advance(self, position: int) -> None:
        if self.last_position is None or position > self.last_position:
            self.last_position = position

    async def _run(self) -> AsyncIterator[pb.SystemEvent]:
        failures = 0
        while True:
            stream = self._open(self._request())
            try:
                async for response in stream:
                    failures = 0  # the server answered: the next break starts a fresh backoff
                    kind = response.WhichOneof("content")
                    if kind == "batch" or kind == "event":
                        events = response.batch.events if kind == "batch" else (response.event,)
                        for event in events:
                            # The server never repeats within a stream; across streams we ask
                            # for what follows last_position. This guard makes "never twice"
                            # local.
                            if (
                                self.last_position is not None
                                and event.position <= self.last_position
                            ):
                                continue
                            self.last_position = event.position
                            yield event
                    elif kind == "checkpoint":
                        self._advance(response.checkpoint.position)
                    elif kind == "caught_up":
                        self.caught_up = True
                        self._advance(response.caught_up.position)
                    elif kind == "fell_behind":
                        self.caught_up = False
                        self._advance(response.fell_behind.position)
                # A stream ends with OK only when the server shuts down: come back after it.
                reason = "the server ended the stream"
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE:
                    raise from_rpc_error(error) from error
                reason = f"{error.code().name}: {error.details()}"
                last_error = from_rpc_error(error)
            else:
                last_error = Unavailable(grpc.StatusCode.UNAVAILABLE, reason)
            finally:
                cancel = getattr(stream, "cancel", None)
                if cancel is not None:
                    cancel()
            failures += 1
            if self._max_attempts is not None and failures >= self._max_attempts:
                raise last_error
            self.caught_up = False
            self.reconnects += 1
            delay = self._backoff.delay(failures)
            # One notice per outage; the attempts that follow only at DEBUG.
            log.log(
                logging.WARNING if failures == 1 else logging.DEBUG,
                "subscription interrupted (%s); resuming after position %s in %.2fs",
                reason,
                self.last_position,
                delay,
            )
            await asyncio.sleep(delay)
