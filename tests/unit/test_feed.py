"""The feed without a database: own commits, other processes' commits, lost notifications."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from journey.domain.model import EncodedEvent, SystemEvent, SystemEventFilter, SystemEventType
from journey.storage.listen import Listening
from journey.streaming.broker import Broker
from journey.streaming.feed import Feed

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Long enough that no test here is saved by the safety poll.
NO_POLL = 3600.0


def event(position: int) -> SystemEvent:
    return SystemEvent(
        position, f"e{position}", SystemEventType.VISIT_STARTED, T0, "p", "s", "web", {}
    )


def pair(position: int) -> tuple[SystemEvent, EncodedEvent]:
    return event(position), EncodedEvent(position, f"e{position}".encode())


class Table:
    """The stored log as every process commits to it; counts the reads."""

    def __init__(self) -> None:
        self.last = 0
        self.reads = 0
        self.failing = 0

    def commit(self, count: int) -> tuple[list[SystemEvent], list[EncodedEvent]]:
        pairs = [pair(p) for p in range(self.last + 1, self.last + count + 1)]
        self.last += count
        return [e for e, _ in pairs], [c for _, c in pairs]

    async def committed_after(
        self, after: int, limit: int
    ) -> list[tuple[SystemEvent, EncodedEvent]]:
        self.reads += 1
        await asyncio.sleep(0)
        if self.failing:
            self.failing -= 1
            raise OSError("connection refused")
        return [pair(p) for p in range(after + 1, min(self.last, after + limit) + 1)]


class Connection:
    """A listening connection the test can drop."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self.closed = False
        self.on_lost = on_lost

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True

    def drop(self) -> None:
        self.closed = True
        self.on_lost()


class Listener:
    """Hands out connections and keeps each one's callbacks."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self.notify: Callable[[int], None] = lambda _: None
        self.refusals = 0

    async def __call__(
        self, on_position: Callable[[int], None], on_lost: Callable[[], None]
    ) -> Listening:
        if self.refusals:
            self.refusals -= 1
            raise OSError("connection refused")
        self.notify = on_position
        self.connections.append(Connection(on_lost))
        return self.connections[-1]


def positions_seen(broker: Broker) -> list[int]:
    seen: list[int] = []
    buffer = broker.register(SystemEventFilter(), 10_000)
    original = buffer.offer

    def offer(events: Sequence[SystemEvent], encoded: Sequence[EncodedEvent]) -> None:
        seen.extend(e.position for e in events)
        original(events, encoded)

    buffer.offer = offer  # type: ignore[method-assign]
    return seen


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


async def test_own_commits_that_follow_the_head_are_published_without_a_read() -> None:
    broker, table, listener = Broker(), Table(), Listener()
    feed = Feed(broker, table, listener, poll_seconds=NO_POLL)
    seen = positions_seen(broker)
    feed.start()
    try:
        await until(lambda: bool(listener.connections) and table.reads == 1)  # the first catch-up
        feed.committed(*table.commit(3))
        listener.notify(3)  # its own notification arrives after it was published
        await asyncio.sleep(0.01)
        assert seen == [1, 2, 3]
        assert table.reads == 1
    finally:
        await feed.stop()


async def test_other_processes_commits_are_read_when_notified_and_own_fill_in_order() -> None:
    broker, table, listener = Broker(), Table(), Listener()
    feed = Feed(broker, table, listener, poll_seconds=NO_POLL)
    seen = positions_seen(broker)
    feed.start()
    try:
        await until(lambda: bool(listener.connections) and table.reads == 1)
        table.commit(2)  # another process's commit, not yet notified
        own = table.commit(2)  # then this one's: it must wait for 1..2
        feed.committed(*own)
        await until(lambda: broker.head == 4)
        assert seen == [1, 2, 3, 4]
        table.commit(3)
        listener.notify(7)
        await until(lambda: broker.head == 7)
        assert seen == list(range(1, 8))
    finally:
        await feed.stop()


async def test_what_was_committed_while_not_listening_is_read_after_listening_again() -> None:
    broker, table, listener = Broker(), Table(), Listener()
    feed = Feed(broker, table, listener, poll_seconds=NO_POLL)
    seen = positions_seen(broker)
    listener.refusals = 2  # the database is down at first
    feed.start()
    try:
        await until(lambda: len(listener.connections) == 1)
        listener.connections[0].drop()
        table.commit(5)  # notified to nobody
        await until(lambda: len(listener.connections) == 2)
        await until(lambda: broker.head == 5)
        assert seen == [1, 2, 3, 4, 5]
    finally:
        await feed.stop()


async def test_a_failed_read_is_tried_again() -> None:
    broker, table, listener = Broker(), Table(), Listener()
    feed = Feed(broker, table, listener, poll_seconds=NO_POLL)
    seen = positions_seen(broker)
    feed.start()
    try:
        await until(lambda: table.reads == 1)
        table.commit(2)
        table.failing = 3
        listener.notify(2)
        await until(lambda: broker.head == 2)
        assert seen == [1, 2]
    finally:
        await feed.stop()


async def test_a_missed_notification_is_found_by_the_poll() -> None:
    broker, table, listener = Broker(), Table(), Listener()
    feed = Feed(broker, table, listener, poll_seconds=0.01)
    seen = positions_seen(broker)
    feed.start()
    try:
        table.commit(4)  # notified to nobody, and the connection stays up
        await until(lambda: broker.head == 4)
        assert seen == [1, 2, 3, 4]
    finally:
        await feed.stop()


async def test_without_a_listener_commits_go_straight_to_the_broker() -> None:
    broker, table = Broker(), Table()
    feed = Feed(broker, table, None)
    seen = positions_seen(broker)
    feed.start()
    feed.committed(*table.commit(2))
    assert seen == [1, 2]
    assert table.reads == 0
    await feed.stop()
