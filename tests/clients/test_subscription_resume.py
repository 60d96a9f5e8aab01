"""The resuming subscription against a fake server that cuts streams: never twice, never a gap."""

from __future__ import annotations

import grpc
import pytest

from journey_client import Backoff, JourneyClient, OutOfRange, Unavailable, pb
from tests.clients.fake_server import FakeEvents, Step, fake_server, make_log, positions

FAST = Backoff(initial=0.001, maximum=0.01)


async def collect(
    address: str, count: int, **subscribe: object
) -> tuple[list[pb.SystemEvent], int | None, int]:
    """The first `count` events of a subscription, its last_position, and its reconnects."""
    out: list[pb.SystemEvent] = []
    async with JourneyClient(address, backoff=FAST) as client:
        subscription = client.subscribe(**subscribe)  # type: ignore[arg-type]
        async for event in subscription:
            out.append(event)
            if len(out) == count:
                break
        await subscription.aclose()
        return out, subscription.last_position, subscription.reconnects


def after_positions(fake: FakeEvents) -> list[str | int]:
    """What each Subscribe call asked for: a start name or the after_position."""
    return [
        r.after_position
        if r.WhichOneof("start") == "after_position"
        else str(r.WhichOneof("start"))
        for r in fake.requests
    ]


@pytest.mark.parametrize(
    "ending", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.OK]
)
async def test_a_cut_stream_resumes_after_the_last_delivered_event(ending: grpc.StatusCode) -> None:
    fake = FakeEvents(make_log(10), [Step(3, ending), Step(0, ending), Step(4, ending)])
    async with fake_server(events=fake) as address:
        events, last, reconnects = await collect(address, 10, start="beginning")
    assert positions(events) == list(range(1, 11))
    assert last == 10
    assert reconnects == 3
    assert after_positions(fake) == ["beginning", 3, 3, 7]


async def test_batches_by_default_one_event_per_message_when_asked() -> None:
    # Cuts after 3 events fall inside a batch of 2: the client resumes after the third.
    fake = FakeEvents(make_log(6), [Step(3), Step(3)])
    async with fake_server(events=fake) as address:
        events, last, _ = await collect(address, 6, start="beginning")
        assert positions(events) == list(range(1, 7))
        assert last == 6
        assert [r.max_batch_size for r in fake.requests] == [1000, 1000]
        fake.requests.clear()
        fake.script = [Step(3)]
        events, _, _ = await collect(address, 6, start="beginning", max_batch_size=0)
        assert positions(events) == list(range(1, 7))
        assert [r.max_batch_size for r in fake.requests] == [0, 0]
    async with JourneyClient("127.0.0.1:1") as client:
        with pytest.raises(ValueError, match="max_batch_size must be >= 0"):
            client.subscribe(max_batch_size=-1)


async def test_an_overlapping_replay_is_not_yielded_twice() -> None:
    # A server that resumes too early (here: two events before the asked-for position).
    fake = FakeEvents(
        make_log(8), [Step(4), Step(3, rewind=2), Step(8, grpc.StatusCode.OK, rewind=2)]
    )
    async with fake_server(events=fake) as address:
        events, _, _ = await collect(address, 8, start="beginning")
    assert positions(events) == list(range(1, 9))


async def test_a_checkpoint_moves_the_resume_point_past_unmatched_events() -> None:
    fake = FakeEvents(make_log(10), [Step(2, checkpoint=6)])
    async with fake_server(events=fake) as address:
        events, last, _ = await collect(address, 6, start="beginning")
    assert positions(events) == [1, 2, 7, 8, 9, 10]
    assert last == 10
    assert after_positions(fake)[:2] == ["beginning", 6]


async def test_a_persisted_position_resumes_a_restarted_consumer() -> None:
    fake = FakeEvents(make_log(9), [])
    async with fake_server(events=fake) as address:
        first, saved, _ = await collect(address, 4, start="beginning")
        rest, last, _ = await collect(address, 5, start=saved)
    assert saved == 4
    assert positions(first + rest) == list(range(1, 10))
    assert last == 9
    assert after_positions(fake) == ["beginning", 4]


async def test_start_end_resumes_after_caught_up_position_not_end_again() -> None:
    fake = FakeEvents(make_log(5), [Step(0, checkpoint=5)])
    fake.log.extend(make_log(7)[5:])  # two events committed while the stream was down
    async with fake_server(events=fake) as address, JourneyClient(address, backoff=FAST) as client:
        subscription = client.subscribe(start="end")
        event = await anext(subscription)
        await subscription.aclose()
    # The first call asked for `end` (position 7 now), saw a checkpoint at 5, then resumed.
    assert after_positions(fake) == ["end", 5]
    assert event.position == 6


async def test_out_of_range_is_raised_not_retried() -> None:
    fake = FakeEvents(make_log(3), [])
    async with fake_server(events=fake) as address:
        with pytest.raises(OutOfRange) as raised:
            await collect(address, 1, start=99)
    assert raised.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert "99" in raised.value.message
    assert len(fake.requests) == 1


async def test_max_attempts_gives_up_with_unavailable() -> None:
    fake = FakeEvents(make_log(3), [Step(0)] * 10)
    async with fake_server(events=fake) as address:
        with pytest.raises(Unavailable):
            await collect(address, 1, start="beginning", max_attempts=3)
    assert len(fake.requests) == 3


async def test_an_unreachable_server_is_retried_until_max_attempts() -> None:
    async with fake_server(events=FakeEvents([], [])) as address:
        pass  # now nothing listens there
    with pytest.raises(Unavailable):
        await collect(address, 1, max_attempts=2)


@pytest.mark.parametrize("attempt", [1, 2, 3, 8, 30])
def test_backoff_is_jittered_below_an_exponential_ceiling(attempt: int) -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, multiplier=2.0)
    ceiling = min(2.0, 0.1 * 2 ** (attempt - 1))
    delays = [backoff.delay(attempt) for _ in range(200)]
    assert all(0 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1  # jitter: not one fixed delay
    assert max(delays) > ceiling / 2  # 200 uniform draws all below half: p = 2**-200
