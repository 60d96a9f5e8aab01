"""One subscription: replay from storage, hand over to the live buffer without a gap, heartbeats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from journey.clock import Clock
from journey.domain.errors import OutOfRange
from journey.domain.model import EncodedEvent, SystemEventFilter
from journey.streaming.broker import Broker, LiveBuffer

# Events read per replay query. Each page goes out as whole batches, so it matches the largest
# batch a subscriber may ask for (1000): replay ran 25% faster than with pages of 500.
REPLAY_PAGE = 1000

BEGINNING = "beginning"
END = "end"


@dataclass(frozen=True)
class Delivery:
    """Consecutive matching system events for the subscriber, in position order, at least one.

    They are what was ready at once (a page of storage, or everything the live buffer held),
    so a subscriber that takes batches can be sent them together without waiting for more.
    """

    events: Sequence[EncodedEvent]


@dataclass(frozen=True)
class Checkpoint:
    """Everything up to `position` was delivered or filtered out."""

    position: int
    server_time: datetime


@dataclass(frozen=True)
class CaughtUp:
    """Replay is done; what follows is live."""

    position: int


@dataclass(frozen=True)
class FellBehind:
    """The live buffer overflowed; the stream goes back to storage."""

    position: int


StreamItem = Delivery | Checkpoint | CaughtUp | FellBehind


class EventLog(Protocol):
    """The stored log, read a page at a time (storage.queries.Queries in the server)."""

    async def encoded_system_events(
        self, event_filter: SystemEventFilter, after: int, limit: int, *, up_to: int | None = None
    ) -> list[EncodedEvent]:
        """Up to `limit` matching events with `after < position <= up_to`, in position order."""
        ...

    async def head(self) -> int:
        """The last position committed, by any process."""
        ...


class _Position:
    """How far a subscription got, and when it last sent a checkpoint."""

    def __init__(self, cursor: int, now: float) -> None:
        # Every event up to `cursor` was delivered or filtered out.
        self.cursor = cursor
        self.last_beat = now
        # The live buffer while one is registered.
        self.buffer: LiveBuffer | None = None

    def covered(self) -> int:
        """How far the stream has got, counting a live buffer with nothing left to send."""
        buffer = self.buffer
        live = buffer is not None and self.cursor >= buffer.start
        if live and buffer is not None and buffer.empty and not buffer.overflowed:
            # Caught up, and what the buffer saw and did not keep was filtered out.
            return max(self.cursor, buffer.seen)
        return self.cursor


@dataclass(frozen=True)
class Follow:
    """Serves subscriptions from the broker and storage."""

    broker: Broker
    log: EventLog
    clock: Clock
    heartbeat: timedelta
    buffer_capacity: int
    # The open streams' positions, for the lag metrics (read, never changed, from elsewhere).
    _open: set[_Position] = field(default_factory=set, compare=False)

    def positions(self) -> list[int]:
        """How far each open subscription has got; safe to call from another thread."""
        # list() of a set runs under the GIL in one go: a stream opening meanwhile cannot
        # change the set under it.
        return [at.covered() for at in list(self._open)]

    async def stream(
        self, event_filter: SystemEventFilter, start: str | int
    ) -> AsyncIterator[StreamItem]:
        """Yield matching events exactly once in position order, after `start`.

        `start` is BEGINNING, END, or a position to resume after (OutOfRange if it was never
        assigned). The stream ends when the broker closes; on cancellation the live buffer is
        released and the error propagates.
        """
        loop = asyncio.get_running_loop()
        head = self.broker.head
        if isinstance(start, int) and start > head:
            # Another process may have committed it, and this one not have read it yet.
            head = max(head, await self.log.head())
        if isinstance(start, int) and start > head:
            # Positions only grow, so a client that saw this one was talking to another log.
            raise OutOfRange(f"after_position {start} is beyond the last position, {head}")
        at = _Position(
            0 if start == BEGINNING else head if start == END else int(start), loop.time()
        )
        self._open.add(at)
        try:
            while not self.broker.closed:
                # Catch up from storage first, with no live buffer to overflow meanwhile.
                async for item in self._replay(event_filter, at, None):
                    yield item
                buffer = at.buffer = self.broker.register(event_filter, self.buffer_capacity)
                try:
                    # What committed between the last page and registering is in storage;
                    # everything after `buffer.start` lands in the buffer.
                    async for item in self._replay(event_filter, at, buffer.start):
                        yield item
                    if buffer.overflowed:
                        continue
                    yield CaughtUp(at.cursor)
                    async for item in self._live(buffer, at):
                        yield item
                finally:
                    at.buffer = None
                    self.broker.unregister(buffer)
        finally:
            self._open.discard(at)

    async def _replay(
        self, event_filter: SystemEventFilter, at: _Position, up_to: int | None
    ) -> AsyncIterator[StreamItem]:
        while True:
            limit = self.broker.head if up_to is None else up_to
            if at.cursor >= limit:
                return
            page = await self.log.encoded_system_events(
                event_filter, at.cursor, REPLAY_PAGE, up_to=limit
            )
            if page:
                yield Delivery(page)
            # A short page is the last before `limit`: everything up to it was matched.
            at.cursor = limit if len(page) < REPLAY_PAGE else page[-1].position
            if self._beat_due(at):
                yield self._beat(at)
            if len(page) < REPLAY_PAGE:
                return

    async def _live(self, buffer: LiveBuffer, at: _Position) -> AsyncIterator[StreamItem]:
        interval = self.heartbeat.total_seconds()
        loop = asyncio.get_running_loop()
        while True:
            if buffer.overflowed:
                yield FellBehind(at.cursor)
                return
            events, covered = buffer.take()
            # Only commits after `buffer.start` reach the buffer, and replay stopped there;
            # but a resume from another process's position can start beyond this broker's
            # head, and what the buffer holds up to it was delivered there.
            if events and events[0].position <= at.cursor:
                events = [e for e in events if e.position > at.cursor]
            if events:
                yield Delivery(events)
            at.cursor = max(at.cursor, covered)
            if self._beat_due(at):
                yield self._beat(at)
            if buffer.closed:
                return
            if not events:
                await buffer.wait(max(0.0, at.last_beat + interval - loop.time()))

    def _beat_due(self, at: _Position) -> bool:
        return asyncio.get_running_loop().time() - at.last_beat >= self.heartbeat.total_seconds()

    def _beat(self, at: _Position) -> Checkpoint:
        at.last_beat = asyncio.get_running_loop().time()
        return Checkpoint(at.cursor, self.clock.now())
