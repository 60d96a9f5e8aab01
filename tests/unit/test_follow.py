"""Subscriptions without a server: replay, handover to live, overflow, heartbeats, release."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journey.clock import ManualClock
from journey.domain.errors import OutOfRange
from journey.domain.model import EncodedEvent, SystemEvent, SystemEventFilter, SystemEventType
from journey.streaming.broker import Broker
from journey.streaming.follow import (
    BEGINNING,
    END,
    CaughtUp,
    Checkpoint,
    Delivery,
    FellBehind,
    Follow,
    StreamItem,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVERYTHING = SystemEventFilter()


class Log:
    """An in-memory log that commits like the writer: store first, then publish."""

    def __init__(self, broker: Broker) -> None:
        self.events: list[SystemEvent] = []
        self.broker = broker

    def commit(self, count: int, kind: SystemEventType = SystemEventType.VISIT_STARTED) -> None:
        batch = [
            SystemEvent(
                len(self.events) + i + 1,
                f"e{len(self.events) + i + 1}",
                kind,
                T0,
                "p",
                "s",
                "web",
                {},
            )
            for i in range(count)
        ]
        self.events.extend(batch)
        self.broker.publish(batch, [encoded(e) for e in batch])

    async def head(self) -> int:
        return len(self.events)

    async def encoded_system_events(
        self, event_filter: SystemEventFilter, after: int, limit: int, *, up_to: int | None = None
    ) -> list[EncodedEvent]:
        await asyncio.sleep(0)  # a real query yields to the loop, letting commits slip in
        top = up_to if up_to is not None else len(self.events)
        found = [encoded(e) for e in self.events[after:top] if event_filter.matches(e)]
        return found[:limit]


def encoded(event: SystemEvent) -> EncodedEvent:
    """Stands in for the API's encoding: bytes that name the event."""
    return EncodedEvent(event.position, event.id.encode())


def make(capacity: int = 100, heartbeat: float = 60.0) -> tuple[Broker, Log, Follow]:
    broker = Broker()
    log = Log(broker)
    follow = Follow(broker, log, ManualClock(T0), timedelta(seconds=heartbeat), capacity)
    return broker, log, follow


Flat = int | Checkpoint | CaughtUp | FellBehind


def flatten(item: StreamItem) -> list[Flat]:
    """A delivery as the positions it carries, any other item as itself."""
    if isinstance(item, Delivery):
        return [e.position for e in item.events]
    return [item]


async def take(stream: AsyncIterator[StreamItem], count: int) -> list[Flat]:
    """The next `count` events and markers, reading whole deliveries."""
    taken: list[Flat] = []
    async with asyncio.timeout(5):
        while len(taken) < count:
            taken.extend(flatten(await anext(stream)))
    assert len(taken) == count, taken
    return taken


def positions(items: list[Flat]) -> list[int]:
    return [i for i in items if isinstance(i, int)]


async def test_beginning_replays_then_catches_up_then_goes_live() -> None:
    _, log, follow = make()
    log.commit(3)
    stream = follow.stream(EVERYTHING, BEGINNING)
    first = await take(stream, 4)
    assert positions(first) == [1, 2, 3]
    assert first[3] == CaughtUp(3)
    log.commit(2)
    assert positions(await take(stream, 2)) == [4, 5]


async def test_what_is_ready_arrives_together_and_nothing_waits_for_more() -> None:
    _, log, follow = make()
    log.commit(3)
    stream = follow.stream(EVERYTHING, BEGINNING)
    async with asyncio.timeout(5):
        replayed = await anext(stream)
        assert isinstance(replayed, Delivery)
        assert [e.position for e in replayed.events] == [1, 2, 3]
        assert await anext(stream) == CaughtUp(3)
        # Two commits land while the subscriber is not reading: one delivery carries both.
        log.commit(2)
        log.commit(1)
        backlog = await anext(stream)
        assert isinstance(backlog, Delivery)
        assert [e.position for e in backlog.events] == [4, 5, 6]
        # A lone live event is handed over at once, not held back for company.
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        log.commit(1)
        alone = await pending
    assert isinstance(alone, Delivery)
    assert [e.position for e in alone.events] == [7]


async def test_end_starts_with_caught_up_and_skips_the_past() -> None:
    _, log, follow = make()
    log.commit(3)
    stream = follow.stream(EVERYTHING, END)
    assert await take(stream, 1) == [CaughtUp(3)]
    log.commit(1)
    assert positions(await take(stream, 1)) == [4]


async def test_after_position_is_exclusive() -> None:
    _, log, follow = make()
    log.commit(5)
    stream = follow.stream(EVERYTHING, 2)
    items = await take(stream, 4)
    assert positions(items) == [3, 4, 5]
    assert items[3] == CaughtUp(5)


async def test_overflow_sends_fell_behind_then_everything_from_storage_then_caught_up() -> None:
    broker, log, follow = make(capacity=3)
    stream = follow.stream(EVERYTHING, END)
    assert await take(stream, 1) == [CaughtUp(0)]
    log.commit(2)
    log.commit(2)  # the buffer holds 3: this overflows it while the subscriber is not reading
    items = await take(stream, 6)
    assert items[0] == FellBehind(0)
    assert positions(items[1:5]) == [1, 2, 3, 4]
    assert items[5] == CaughtUp(4)
    log.commit(1)
    assert positions(await take(stream, 1)) == [5]
    assert broker.subscriber_count == 1


async def test_checkpoint_covers_events_the_filter_skipped() -> None:
    _, log, follow = make(heartbeat=0.01)
    stream = follow.stream(SystemEventFilter(types=frozenset({SystemEventType.VISIT_ENDED})), END)
    assert await take(stream, 1) == [CaughtUp(0)]
    log.commit(5)  # none of them match
    async with asyncio.timeout(5):
        while True:
            item = await anext(stream)
            assert isinstance(item, Checkpoint), item
            if item.position == 5:
                break
    log.commit(1, SystemEventType.VISIT_ENDED)
    async with asyncio.timeout(5):
        while not isinstance(item := await anext(stream), Delivery):
            pass
    assert [e.position for e in item.events] == [6]


async def test_closing_the_broker_ends_the_stream() -> None:
    broker, _, follow = make()
    stream = follow.stream(EVERYTHING, END)
    assert await take(stream, 1) == [CaughtUp(0)]
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    broker.close()
    async with asyncio.timeout(5):
        try:
            await pending
            raise AssertionError("the stream went on after close")
        except StopAsyncIteration:
            pass


async def test_cancelling_a_subscriber_releases_its_buffer() -> None:
    broker, _, follow = make()

    async def consume() -> None:
        async for _ in follow.stream(EVERYTHING, END):
            pass

    tasks = [asyncio.create_task(consume()) for _ in range(10)]
    async with asyncio.timeout(5):
        while broker.subscriber_count < 10:
            await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert broker.subscriber_count == 0


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=6),
    capacity=st.integers(min_value=1, max_value=6),
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=4)),
        max_size=25,
    ),
    only_ended=st.booleans(),
)
def test_every_event_exactly_once_in_order_whatever_the_interleaving(
    start: int, capacity: int, steps: list[tuple[int, int]], only_ended: bool
) -> None:
    """Commits of random sizes interleave with reads of random lengths: none lost or repeated."""

    async def scenario() -> None:
        _, log, follow = make(capacity=capacity)
        log.commit(6, SystemEventType.VISIT_ENDED)
        ended = SystemEventFilter(types=frozenset({SystemEventType.VISIT_ENDED}))
        event_filter = ended if only_ended else EVERYTHING
        stream = follow.stream(event_filter, start)
        delivered: list[int] = []
        # The reader takes one message per permit, so the test decides how far it lags.
        permits = asyncio.Semaphore(0)

        async def read() -> None:
            while True:
                await permits.acquire()
                item = await anext(stream)
                if isinstance(item, Delivery):
                    delivered.extend(e.position for e in item.events)

        reader = asyncio.create_task(read())
        for i, (commits, reads) in enumerate(steps):
            kind = SystemEventType.VISIT_ENDED if i % 2 else SystemEventType.VISIT_STARTED
            log.commit(commits, kind)
            for _ in range(reads):
                permits.release()
            for _ in range(10):
                await asyncio.sleep(0)
        expected = [
            e.position for e in log.events if e.position > start and event_filter.matches(e)
        ]
        for _ in range(10_000):
            permits.release()
        async with asyncio.timeout(5):
            while len(delivered) < len(expected):
                await asyncio.sleep(0)
        reader.cancel()
        await asyncio.wait([reader])
        assert delivered == expected

    asyncio.run(scenario())


async def test_resuming_after_a_position_never_assigned_is_out_of_range() -> None:
    _, log, follow = make()
    log.commit(3)
    stream = follow.stream(EVERYTHING, 3)
    assert await take(stream, 1) == [CaughtUp(3)]
    with pytest.raises(OutOfRange, match="after_position 4 is beyond the last position, 3"):
        await anext(follow.stream(EVERYTHING, 4))


async def test_a_position_another_process_committed_resumes_here_exactly_once() -> None:
    # This process's broker has published up to 5; another process committed up to 10, and a
    # client that saw 8 there resumes here before this process has read the rest.
    broker, log, follow = make()
    log.commit(5)
    log.events.extend(
        SystemEvent(p, f"e{p}", SystemEventType.VISIT_STARTED, T0, "p", "s", "web", {})
        for p in range(6, 11)
    )
    stream = follow.stream(EVERYTHING, 8)
    assert await take(stream, 1) == [CaughtUp(8)]
    # Now the feed publishes 6..10 into this broker, then a new commit: 9 on are new here.
    batch = log.events[5:10]
    broker.publish(batch, [encoded(e) for e in batch])
    log.commit(1)
    assert await take(stream, 3) == [9, 10, 11]
    # Beyond every process's head it is still out of range.
    with pytest.raises(OutOfRange):
        await anext(follow.stream(EVERYTHING, 12))


async def test_positions_tell_how_far_each_open_stream_has_got() -> None:
    _, log, follow = make()
    log.commit(5)
    everything = follow.stream(EVERYTHING, BEGINNING)
    assert follow.positions() == []  # a generator starts when first read
    assert await take(everything, 6) == [1, 2, 3, 4, 5, CaughtUp(5)]
    closed_only = SystemEventFilter(types=frozenset({SystemEventType.SESSION_CLOSED}))
    filtered = follow.stream(closed_only, END)
    assert await take(filtered, 1) == [CaughtUp(5)]
    log.commit(3)
    # The first has three events waiting to be sent; the second wants none of them.
    assert sorted(follow.positions()) == [5, 8]
    assert positions(await take(everything, 3)) == [6, 7, 8]
    assert follow.positions() == [8, 8]
    await everything.aclose()  # type: ignore[attr-defined]
    await filtered.aclose()  # type: ignore[attr-defined]
    assert follow.positions() == []
