"""The consumer-group member against a fake ConsumerGroupService: settles, reconnects, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import grpc
import pytest

from journey_client import (
    Backoff,
    Delivery,
    InvalidArgument,
    JourneyClient,
    JourneySyncClient,
    NotFound,
    Unavailable,
    event_filter,
    pb,
)
from tests.clients.fake_groups import FakeGroups, serve_groups
from tests.clients.fake_server import make_log

FAST = Backoff(initial=0.001, maximum=0.01)


@asynccontextmanager
async def running(fake: FakeGroups, *more: FakeGroups) -> AsyncIterator[str]:
    """Serve the fakes; yields their addresses, comma-separated."""
    servers = [await serve_groups(f) for f in (fake, *more)]
    try:
        yield ",".join(address for _, address in servers)
    finally:
        for server, _ in servers:
            await server.stop(None)


def kinds(fake: FakeGroups) -> list[str | None]:
    return [r.WhichOneof("request") for r in fake.requests]


async def take(consumer: AsyncIterator[Delivery], count: int) -> list[Delivery]:
    out = []
    async with asyncio.timeout(10):
        async for delivery in consumer:
            out.append(delivery)
            if len(out) == count:
                break
    return out


async def test_deliveries_carry_event_and_attempt_and_ack_waits_for_settled() -> None:
    fake = FakeGroups()
    fake.add(*make_log(3))
    async with running(fake) as address, JourneyClient(address, api_key="k") as client:
        consumer = client.consume("followups", max_in_flight=7)
        first, second, third = await take(consumer, 3)
        assert [d.event.position for d in (first, second, third)] == [1, 2, 3]
        assert [d.attempt for d in (first, second, third)] == [1, 1, 1]
        assert len({first.delivery_id, second.delivery_id, third.delivery_id}) == 3
        start = fake.requests[0].start
        assert (start.group, start.max_in_flight) == ("followups", 7)
        assert fake.metadata[0]["authorization"] == "Bearer k"

        # Until the server says `settled`, the ack is not durable and ack() does not return.
        fake.hold_settled.clear()
        acking = asyncio.create_task(first.ack())
        await asyncio.sleep(0.2)
        assert not acking.done()
        assert fake.acked == [1]  # sent, and seen by the server
        fake.hold_settled.set()
        assert await asyncio.wait_for(acking, 5) is True

        # wait=False returns once queued; wait_settled() tells when it is durable.
        assert await second.ack(wait=False) is True
        assert await asyncio.wait_for(second.wait_settled(), 5) is True
        with pytest.raises(RuntimeError, match="already settled"):
            await second.nack()
        assert await second.extend() is False
        await third.ack()
        await consumer.aclose()
    assert fake.acked == [1, 2, 3]


async def test_nack_reject_and_extend_send_what_the_contract_says() -> None:
    fake = FakeGroups()
    fake.add(*make_log(4))
    async with running(fake) as address, JourneyClient(address) as client:
        consumer = client.consume("g")
        one, two, three, four = await take(consumer, 4)
        assert await one.extend() is True
        await asyncio.sleep(0.05)
        assert await one.nack(delay=0.25) is True
        assert await two.nack(timedelta(milliseconds=1500)) is True
        assert await three.nack() is True
        assert await four.reject("bad payload") is True
        with pytest.raises(ValueError, match=">= 0"):
            await one.nack(-1)
        sent = {kind: [r for r in fake.requests if r.WhichOneof("request") == kind] for kind in
                ("extend", "nack", "reject")}  # fmt: skip
        assert [list(r.extend.delivery_ids) for r in sent["extend"]] == [[one.delivery_id]]
        delays = {r.nack.delivery_ids[0]: r.nack for r in sent["nack"]}
        assert delays[one.delivery_id].retry_delay.ToMilliseconds() == 250
        assert delays[two.delivery_id].retry_delay.ToMilliseconds() == 1500
        assert not delays[three.delivery_id].HasField("retry_delay")  # the group's backoff
        assert [(list(r.reject.delivery_ids), r.reject.reason) for r in sent["reject"]] == [
            ([four.delivery_id], "bad payload")
        ]
        assert [d.event.position for d in fake.dead_letters] == [4]
        # The nacked events come again, attempt 2.
        again = await take(consumer, 3)
        assert sorted((d.event.position, d.attempt) for d in again) == [(1, 2), (2, 2), (3, 2)]
        await consumer.aclose()


async def test_an_ack_the_server_ignores_as_too_late_answers_false() -> None:
    fake = FakeGroups(too_late={1})
    fake.add(*make_log(2))
    async with running(fake) as address, JourneyClient(address) as client:
        consumer = client.consume("g")
        late, fine = await take(consumer, 2)
        assert await late.ack() is False  # it did not count: the event comes again
        assert await fine.ack() is True
        (again,) = await take(consumer, 1)
        assert (again.event.position, again.attempt) == (1, 2)
        await consumer.aclose()
    assert fake.acked == [2]


async def test_acks_made_together_go_in_one_message() -> None:
    fake = FakeGroups()
    fake.add(*make_log(50))
    async with running(fake) as address, JourneyClient(address) as client:
        consumer = client.consume("g", max_in_flight=50)
        deliveries = await take(consumer, 50)
        results = await asyncio.gather(*(d.ack() for d in deliveries))
        assert results == [True] * 50
        await consumer.aclose()
    acks = [r for r in fake.requests if r.WhichOneof("request") == "ack"]
    assert sorted(fake.acked) == list(range(1, 51))
    assert len(acks) <= 2, [len(r.ack.delivery_ids) for r in acks]


async def test_a_cut_stream_voids_what_it_delivered_and_the_events_come_again() -> None:
    fake = FakeGroups()
    fake.add(*make_log(3))
    async with running(fake) as address, JourneyClient(address, backoff=FAST) as client:
        consumer = client.consume("g")
        old = await take(consumer, 3)
        fake.cut()
        again = await take(consumer, 3)
        assert [(d.event.position, d.attempt) for d in again] == [(1, 2), (2, 2), (3, 2)]
        assert all(d.void for d in old)
        assert not any(d.void for d in again)
        before = len(fake.requests)
        assert await old[0].ack() is False  # not sent: the server would ignore it anyway
        assert len(fake.requests) == before
        assert all([await d.ack() for d in again])
        assert consumer.reconnects == 1
        assert kinds(fake).count("start") == 2
        await consumer.aclose()
    assert fake.acked == [1, 2, 3]


async def test_an_ack_waiting_when_the_stream_breaks_answers_false() -> None:
    fake = FakeGroups()
    fake.add(*make_log(1))
    async with running(fake) as address, JourneyClient(address, backoff=FAST) as client:
        consumer = client.consume("g")
        (delivery,) = await take(consumer, 1)
        fake.hold_settled.clear()
        acking = asyncio.create_task(delivery.ack())
        await asyncio.sleep(0.1)
        fake.cut()
        assert await asyncio.wait_for(acking, 5) is False
        fake.hold_settled.set()
        await consumer.aclose(grace=0)


async def test_it_joins_again_with_backoff_and_on_another_server() -> None:
    down = FakeGroups(fail_next=[grpc.StatusCode.UNAVAILABLE] * 100)
    up = FakeGroups(fail_next=[grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE])
    up.add(*make_log(2))
    async with running(down, up) as addresses, JourneyClient(addresses, backoff=FAST) as client:
        consumer = client.consume("g")
        deliveries = await take(consumer, 2)
        assert [d.event.position for d in deliveries] == [1, 2]
        assert consumer.reconnects >= 2
        await deliveries[0].ack()
        await consumer.aclose()
    assert up.acked == [1]


async def test_errors_end_the_consumer_with_typed_exceptions() -> None:
    fake = FakeGroups()
    await fake.CreateConsumerGroup(pb.CreateConsumerGroupRequest(name="known"), None)  # type: ignore[arg-type]
    async with running(fake) as address, JourneyClient(address, backoff=FAST) as client:
        with pytest.raises(NotFound, match="no group nope"):
            await take(client.consume("nope"), 1)
        fake.fail_next = [grpc.StatusCode.INVALID_ARGUMENT]
        with pytest.raises(InvalidArgument):
            await take(client.consume("known"), 1)
        fake.fail_next = [grpc.StatusCode.UNAVAILABLE] * 3
        with pytest.raises(Unavailable):
            await take(client.consume("known", max_attempts=3), 1)
        # Deleting the group ends a member's stream with NOT_FOUND.
        fake.add(*make_log(1))
        consumer = client.consume("known")
        await take(consumer, 1)
        await client.delete_consumer_group("known")
        with pytest.raises(NotFound):
            await take(consumer, 1)
        with pytest.raises(ValueError, match="1 to 1000"):
            client.consume("known", max_in_flight=0)
        # Two tasks sharing one consumer both see the error that ended it.
        fake.fail_next = [grpc.StatusCode.NOT_FOUND]
        shared = client.consume("known")
        results = await asyncio.gather(take(shared, 1), take(shared, 1), return_exceptions=True)
        assert [type(r) for r in results] == [NotFound, NotFound]


async def test_admin_methods_send_the_settings_and_follow_every_page() -> None:
    fake = FakeGroups()
    async with running(fake) as address, JourneyClient(address) as client:
        created = await client.create_consumer_group(
            "followups",
            event_filter(["visit-ended"], source_id="web"),
            "beginning",
            ack_timeout=timedelta(seconds=45),
            max_attempts=7,
            ordering="session",
        )
        assert created.name == "followups"
        request = fake.admin[-1]
        assert request.WhichOneof("start") == "beginning"
        assert list(request.filter.types) == [pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED]
        assert request.filter.source_id == "web"
        assert request.ack_timeout.ToSeconds() == 45
        assert request.max_attempts == 7
        assert request.ordering == pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION
        await client.create_consumer_group("after", start=42, ordering="profile")
        assert fake.admin[-1].after_position == 42
        await client.create_consumer_group("plain")
        plain = fake.admin[-1]
        assert plain.WhichOneof("start") == "end"
        assert not plain.HasField("ack_timeout")
        with pytest.raises(ValueError, match="ordering"):
            await client.create_consumer_group("x", ordering="random")

        names = [g.name async for g in client.list_consumer_groups(page_size=2)]
        assert names == ["after", "followups", "plain"]
        assert (await client.get_consumer_group("plain")).name == "plain"
        with pytest.raises(NotFound):
            await client.get_consumer_group("nobody")
        fake.dead_letters = [
            pb.DeadLetter(event=e, attempts=5, reason="max attempts") for e in make_log(5)
        ]
        letters = [d async for d in client.list_dead_letters("followups", page_size=2)]
        assert [d.event.position for d in letters] == [1, 2, 3, 4, 5]
        assert await client.redrive_dead_letters("followups") == 5
        await client.delete_consumer_group("plain")
        with pytest.raises(NotFound):
            await client.delete_consumer_group("plain")
    list_pages = [r for r in fake.admin if isinstance(r, pb.ListConsumerGroupsRequest)]
    assert [r.page_token for r in list_pages] == ["", "2"]


def test_the_sync_facade_consumes_and_settles() -> None:
    fake = FakeGroups()
    fake.add(*make_log(3))

    async def serve() -> None:
        server, address = await serve_groups(fake)
        ready.put_nowait(address)
        await stop.wait()
        await server.stop(None)

    # The fake runs on its own loop in a thread; the facade has its own loop.
    import queue
    import threading

    ready: queue.Queue[str] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    try:
        address = ready.get(timeout=10)
        with JourneySyncClient(address) as client:
            group = client.create_consumer_group("g", ordering="session")
            assert group.ordering == pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION
            consumer = client.consume("g", max_in_flight=3)
            seen = []
            for delivery in consumer:
                seen.append((delivery.event.position, delivery.attempt))
                if (delivery.event.position, delivery.attempt) == (2, 1):
                    assert delivery.nack(delay=0) is True
                else:
                    assert delivery.ack() is True
                if len(seen) == 4:
                    break
            consumer.close()
            assert seen == [(1, 1), (2, 1), (3, 1), (2, 2)]
            assert [g.name for g in client.list_consumer_groups()] == ["g"]
            assert client.redrive_dead_letters("g") == 0
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
    assert fake.acked == [1, 3, 2]
