"""Subscribe over gRPC: exactly once and in order under concurrent writes, overflow, release.

Every test runs one event per message (max_batch_size 0, as v1 clients ask) and in batches, of
7 (so that a backlog splits into many) and of 1000 (what the clients ask for by default).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import Harness, serving

Stream = grpc.aio.UnaryStreamCall[pb.SubscribeRequest, pb.SubscribeResponse]
EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


async def receive(stream: Stream) -> pb.SubscribeResponse | None:
    """The next message, or None at the end of the stream."""
    message = await stream.read()
    if message is EOF:
        return None
    assert isinstance(message, pb.SubscribeResponse)
    return message


async def next_message(stream: Stream) -> pb.SubscribeResponse:
    """The next message; the stream must not have ended."""
    message = await receive(stream)
    assert message is not None, "the stream ended early"
    return message


@pytest.fixture(params=[0, 7, 1000], ids=lambda size: f"batch{size}")
def batch(request: pytest.FixtureRequest) -> int:
    """The max_batch_size every subscription of the test asks for."""
    size: int = request.param
    return size


def carried(message: pb.SubscribeResponse) -> list[pb.SystemEvent]:
    """The events a message carries, alone or in a batch."""
    if message.HasField("event"):
        return [message.event]
    return list(message.batch.events)


def check_shape(messages: list[pb.SubscribeResponse], batch: int) -> None:
    """Events come one per message, or in batches of 1 to `batch`, as the subscriber asked."""
    for message in messages:
        if batch > 1:
            assert not message.HasField("event"), "a single event sent to a batch subscriber"
            if message.HasField("batch"):
                assert 1 <= len(message.batch.events) <= batch
        else:
            assert not message.HasField("batch"), "a batch sent to a subscriber that asked none"


async def read_until(stream: Stream, last_position: int) -> list[pb.SubscribeResponse]:
    """Every message up to and including the one carrying the event at `last_position`."""
    messages = []
    async with asyncio.timeout(20):
        while (message := await receive(stream)) is not None:
            messages.append(message)
            events = carried(message)
            if events and events[-1].position >= last_position:
                return messages
    raise AssertionError("the stream ended early")


def event_positions(messages: list[pb.SubscribeResponse]) -> list[int]:
    return [e.position for m in messages for e in carried(m)]


def kinds(messages: list[pb.SubscribeResponse]) -> list[str]:
    return [str(m.WhichOneof("content")) for m in messages]


async def writer(h: Harness, calls: int) -> None:
    """Track on new sessions, so each call commits three system events."""
    for i in range(calls):
        await h.track("page-view", session_id=f"w{id(asyncio.current_task())}-{i}")


async def test_every_subscriber_gets_every_event_once_in_order_while_others_write(
    make_settings: SettingsFactory, batch: int
) -> None:
    async with serving(make_settings()) as h:
        await writer(h, 5)  # 15 events before anyone subscribes
        from_beginning = h.events.Subscribe(
            pb.SubscribeRequest(max_batch_size=batch, beginning=Empty())
        )
        writers = [asyncio.create_task(writer(h, 25)) for _ in range(4)]
        async with asyncio.timeout(10):  # let some writes land, so the next ones start mid-stream
            while h.server.broker.head <= 15:
                await asyncio.sleep(0.001)
        from_end = h.events.Subscribe(pb.SubscribeRequest(max_batch_size=batch))
        first = await next_message(from_end)
        assert first.WhichOneof("content") == "caught_up"
        resume_after = first.caught_up.position
        from_position = h.events.Subscribe(
            pb.SubscribeRequest(max_batch_size=batch, after_position=7)
        )
        await asyncio.gather(*writers)

        stored = await h.all_events()
        last = stored[-1].position
        assert [e.position for e in stored] == list(range(1, last + 1))
        assert last == 15 + 4 * 25 * 3

        for stream, after in ((from_beginning, 0), (from_end, resume_after), (from_position, 7)):
            messages = await read_until(stream, last)
            check_shape(messages, batch)
            assert event_positions(messages) == list(range(after + 1, last + 1))
            if batch > 1 and stream is from_beginning:
                # 15 events were stored before it subscribed: the replay sends them together.
                assert max(len(carried(m)) for m in messages) > 1
            assert kinds(messages).count("caught_up") == (0 if stream is from_end else 1)
            assert "fell_behind" not in kinds(messages)
            stream.cancel()
        ids = {e.position: e.id for e in stored}
        assert all(e.id == ids[e.position] for m in messages for e in carried(m))


async def test_end_sends_caught_up_first_and_only_later_commits(
    make_settings: SettingsFactory, batch: int
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view")
        stream = h.events.Subscribe(pb.SubscribeRequest(max_batch_size=batch, end=Empty()))
        first = await next_message(stream)
        assert first.WhichOneof("content") == "caught_up"
        assert first.caught_up.position == 3
        await h.track("page-view")
        messages = await read_until(stream, 6)
        check_shape(messages, batch)
        assert event_positions(messages) == [4, 5, 6]
        stream.cancel()


async def test_filters_select_events_and_checkpoints_cover_the_rest(
    make_settings: SettingsFactory, batch: int
) -> None:
    async with serving(make_settings(heartbeat_interval=timedelta(seconds=0.2))) as h:
        mine = await h.track("page-view", session_id="mine")
        await h.track("page-view", session_id="other")
        request = pb.SubscribeRequest(
            max_batch_size=batch,
            filter=pb.SystemEventFilter(
                session_id="mine", types=[pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_STARTED]
            ),
            beginning=Empty(),
        )
        stream = h.events.Subscribe(request)
        messages = await read_until(stream, mine.system_events[-1].position)
        check_shape(messages, batch)
        assert [e.session_id for m in messages for e in carried(m)] == ["mine"]
        async with asyncio.timeout(10):
            while (message := await next_message(stream)).WhichOneof("content") != "checkpoint":
                assert message.WhichOneof("content") == "caught_up"
        # Everything up to the head was delivered or filtered out: safe to resume from there.
        assert message.checkpoint.position == 6
        assert message.checkpoint.server_time.seconds > 0
        stream.cancel()


async def test_checkpoints_arrive_every_heartbeat_on_an_idle_stream(
    make_settings: SettingsFactory, batch: int
) -> None:
    async with serving(make_settings(heartbeat_interval=timedelta(seconds=0.1))) as h:
        stream = h.events.Subscribe(pb.SubscribeRequest(max_batch_size=batch))
        seen: list[str | None] = []
        async with asyncio.timeout(10):
            while len(seen) < 4:
                seen.append((await next_message(stream)).WhichOneof("content"))
        assert seen == ["caught_up", "checkpoint", "checkpoint", "checkpoint"]
        stream.cancel()


async def test_a_slow_subscriber_falls_behind_catches_up_and_loses_nothing(
    make_settings: SettingsFactory, batch: int
) -> None:
    async with serving(make_settings(live_buffer_size=100)) as h:
        # Tiny flow-control windows make the server's writes block as soon as the slow
        # subscriber stops reading, instead of after megabytes of buffering.
        options = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{h.port}", options=options) as slow:
            slow_stream = pb.SystemEventServiceStub(slow).Subscribe(
                pb.SubscribeRequest(max_batch_size=batch)
            )
            fast_stream = h.events.Subscribe(pb.SubscribeRequest(max_batch_size=batch))
            assert (await next_message(slow_stream)).WhichOneof("content") == "caught_up"
            assert (await next_message(fast_stream)).WhichOneof("content") == "caught_up"

            async def fast_reader() -> list[pb.SubscribeResponse]:
                return await read_until(fast_stream, 600)

            fast = asyncio.create_task(fast_reader())
            for _ in range(20):
                await asyncio.gather(*(h.track("page-view") for _ in range(10)))
            fast_messages = await fast
            slow_messages = await read_until(slow_stream, 600)
            async with asyncio.timeout(10):
                while slow_messages[-1].WhichOneof("content") != "caught_up":
                    slow_messages.append(await next_message(slow_stream))

        check_shape(fast_messages, batch)
        check_shape(slow_messages, batch)
        assert event_positions(fast_messages) == list(range(1, 601))
        assert "fell_behind" not in kinds(fast_messages)
        assert event_positions(slow_messages) == list(range(1, 601))
        slow_kinds = kinds(slow_messages)
        assert "fell_behind" in slow_kinds
        fell = slow_kinds.index("fell_behind")
        assert slow_kinds.index("caught_up", fell) > fell
        fell_at = slow_messages[fell].fell_behind.position
        assert event_positions(slow_messages[:fell]) == list(range(1, fell_at + 1))
        if batch > 1:
            # What it missed came back from storage many events per message.
            assert max(len(carried(m)) for m in slow_messages[fell:]) > 1


async def test_cancelled_subscriptions_release_their_buffers(
    make_settings: SettingsFactory, batch: int
) -> None:
    async with serving(make_settings()) as h:
        streams = [h.events.Subscribe(pb.SubscribeRequest(max_batch_size=batch)) for _ in range(20)]
        for stream in streams:
            assert (await next_message(stream)).WhichOneof("content") == "caught_up"
        assert h.server.broker.subscriber_count == 20
        for stream in streams:
            stream.cancel()
        async with asyncio.timeout(10):
            while h.server.broker.subscriber_count:
                await asyncio.sleep(0.01)
        # The server goes on serving new subscribers afterwards.
        stream = h.events.Subscribe(pb.SubscribeRequest(max_batch_size=batch))
        assert (await next_message(stream)).WhichOneof("content") == "caught_up"
        stream.cancel()


async def test_stopping_the_server_ends_streams_cleanly(
    make_settings: SettingsFactory, batch: int
) -> None:
    async with serving(make_settings()) as h:
        stream = h.events.Subscribe(pb.SubscribeRequest(max_batch_size=batch))
        assert (await next_message(stream)).WhichOneof("content") == "caught_up"
        await h.server.stop(5.0)
        async with asyncio.timeout(10):
            while (message := await receive(stream)) is not None:
                assert message.WhichOneof("content") == "checkpoint"
        assert await stream.code() == grpc.StatusCode.OK


async def test_resuming_after_an_unassigned_position_is_out_of_range(
    make_settings: SettingsFactory, batch: int
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view")
        stream = h.events.Subscribe(pb.SubscribeRequest(max_batch_size=batch, after_position=4))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await next_message(stream)
        assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "after_position 4 is beyond the last position, 3" in str(raised.value.details())
