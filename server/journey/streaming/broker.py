"""The broker: hands each committed system event to every live subscriber's bounded buffer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence

from journey.domain.model import EncodedEvent, SystemEvent, SystemEventFilter

log = logging.getLogger(__name__)


class LiveBuffer:
    """One subscriber's bounded buffer of matching live events, encoded.

    It never blocks the publisher: when full it drops everything and marks itself overflowed,
    and the subscriber goes back to storage for what it missed.
    """

    def __init__(self, event_filter: SystemEventFilter, capacity: int, start: int) -> None:
        self.filter = event_filter
        self.capacity = capacity
        # Everything at or below `start` was committed before the buffer existed.
        self.start = start
        # The last position offered, matching or not.
        self.seen = start
        self.overflowed = False
        self.closed = False
        self._events: deque[EncodedEvent] = deque()
        self._wake = asyncio.Event()
        # An empty filter matches everything: no need to ask it per event.
        self._everything = self.filter == SystemEventFilter()

    @property
    def empty(self) -> bool:
        """Whether nothing is buffered."""
        return not self._events

    def offer(self, events: Sequence[SystemEvent], encoded: Sequence[EncodedEvent]) -> None:
        """Take the matching events of a commit, or overflow."""
        if self.overflowed or self.closed:
            return
        if self._everything:
            matching = encoded
        else:
            matching = [c for e, c in zip(events, encoded, strict=True) if self.filter.matches(e)]
        if len(self._events) + len(matching) > self.capacity:
            self.overflow()
            return
        self._events.extend(matching)
        self.seen = events[-1].position
        if matching:
            self._wake.set()

    def overflow(self) -> None:
        """Drop the buffered events (freeing them) and tell the subscriber to read storage."""
        self.overflowed = True
        self._events.clear()
        self._wake.set()

    def close(self) -> None:
        """End the subscription: the server is shutting down."""
        self.closed = True
        self._wake.set()

    def take(self) -> tuple[list[EncodedEvent], int]:
        """Everything buffered, and the position up to which it covers the log."""
        events = list(self._events)
        self._events.clear()
        self._wake.clear()
        return events, self.seen

    async def wait(self, seconds: float) -> None:
        """Wait until something is buffered, the buffer overflows or closes, or `seconds` pass."""
        if self._events or self.overflowed or self.closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()


class Broker:
    """Publishes committed system events, in position order, to live buffers."""

    def __init__(self, head: int = 0) -> None:
        self.head = head
        self.closed = False
        self._buffers: set[LiveBuffer] = set()
        # Told of every publish (the consumer groups' dispatchers wake on new events).
        self._watchers: list[Callable[[Sequence[SystemEvent]], None]] = []

    @property
    def subscriber_count(self) -> int:
        """How many live buffers are registered."""
        return len(self._buffers)

    def register(self, event_filter: SystemEventFilter, capacity: int) -> LiveBuffer:
        """A new live buffer that receives everything published after the current head."""
        buffer = LiveBuffer(event_filter, capacity, self.head)
        if self.closed:
            buffer.close()
        else:
            self._buffers.add(buffer)
        return buffer

    def watch(self, watcher: Callable[[Sequence[SystemEvent]], None]) -> None:
        """Call `watcher` with the events of every publish from now on (it must not block)."""
        self._watchers.append(watcher)

    def unregister(self, buffer: LiveBuffer) -> None:
        """Forget a buffer; its events are released with it."""
        self._buffers.discard(buffer)

    def publish(self, events: Sequence[SystemEvent], encoded: Sequence[EncodedEvent]) -> None:
        """Hand a commit's system events to every buffer; called by the writer after each commit.

        `encoded` holds the same events, in the same order, as subscribers are sent them.
        """
        if not events:
            return
        if events[0].position != self.head + 1:
            # Never expected: positions are contiguous. If it happens, no subscriber may
            # trust its buffer, so all of them go back to storage.
            log.error("position gap: head %d, next %d", self.head, events[0].position)
            for buffer in self._buffers:
                buffer.overflow()
        self.head = events[-1].position
        for buffer in self._buffers:
            buffer.offer(events, encoded)
        for watcher in self._watchers:
            watcher(events)

    def close(self) -> None:
        """End every subscription and refuse new ones."""
        self.closed = True
        for buffer in self._buffers:
            buffer.close()
        self._buffers.clear()
