"""Consumer groups under load (issue 13): Journey's Consume and NATS JetStream's pull consumers.

Both sides start from a stored backlog (seeded before the clock starts), and 4 members share a
durable group, acknowledging every event. Journey's figure runs until every event's ack is
settled (durable); NATS's until the consumer reports every message acknowledged. Each side
checks what it got: every event acknowledged, and with Journey's key ordering, never two
events of one key in flight and never one out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import nats.errors
from google.protobuf.duration_pb2 import Duration
from google.protobuf.empty_pb2 import Empty
from nats.js.api import AckPolicy, ConsumerConfig

from bench.nats_workloads import (
    connect,
    fresh_stream,
    nats_failure,
    seed_stream,
    system_event,
)
from bench.workloads import DRAIN_SECONDS, Result, WorkloadError, channels, close_all, p99
from journey_client._gen.journey.v1 import consumer_group_pb2 as groups
from journey_client._gen.journey.v1 import consumer_group_service_pb2 as service
from journey_client._gen.journey.v1 import consumer_group_service_pb2_grpc as service_grpc

ORDERINGS = {
    "none": groups.CONSUMER_GROUP_ORDERING_NONE,
    "session": groups.CONSUMER_GROUP_ORDERING_SESSION,
}
ACK_TIMEOUT_SECONDS = 30
# As many unsettled deliveries per member as the contract's default.
MAX_IN_FLIGHT = 100
FETCH_BATCH = 100


async def _create_group(channel: grpc.aio.Channel, ordering: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    await service_grpc.ConsumerGroupServiceStub(channel).CreateConsumerGroup(
        service.CreateConsumerGroupRequest(
            name=name,
            beginning=Empty(),
            ack_timeout=Duration(seconds=ACK_TIMEOUT_SECONDS),
            ordering=ORDERINGS[ordering],
        )
    )
    return name


class Member:
    """One Consume stream: what it sends goes through a bounded outbox."""

    def __init__(self, channel: grpc.aio.Channel, group: str, max_in_flight: int) -> None:
        self.outbox: asyncio.Queue[service.ConsumeRequest | None] = asyncio.Queue(maxsize=1000)
        self.call = service_grpc.ConsumerGroupServiceStub(channel).Consume(self._requests())
        self._start = service.ConsumeRequest(
            start=service.ConsumeStart(group=group, max_in_flight=max_in_flight)
        )

    async def _requests(self) -> AsyncIterator[service.ConsumeRequest]:
        yield self._start
        while (request := await self.outbox.get()) is not None:
            yield request

    async def send(self, request: service.ConsumeRequest) -> None:
        await self.outbox.put(request)


def _key(event: Any, ordering: str) -> str:
    return str(event.session_id or event.profile_id) if ordering == "session" else ""


async def group_consume(
    target: str,
    expected: int,
    members: int,
    ordering: str,
    *,
    work_seconds: float = 0.0,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> Result:
    """`members` members of one group (from the beginning) ack every event of a stored backlog.

    With `work_seconds`, each delivery is acked that long after it arrived, as a worker that
    does something per event would (up to `max_in_flight` at once per member).
    """
    chans = channels(target, members)
    settled: set[int] = set()
    in_flight: dict[str, tuple[int, str]] = {}  # delivery id -> (position, key)
    keys_in_flight: set[str] = set()
    last_of_key: dict[str, int] = {}
    redeliveries = 0
    done = asyncio.Event()

    async def work_then_ack(m: Member, delivery_id: str) -> None:
        await asyncio.sleep(work_seconds)
        keys_in_flight.discard(in_flight[delivery_id][1])
        await m.send(service.ConsumeRequest(ack=service.Ack(delivery_ids=[delivery_id])))

    async def member(channel: grpc.aio.Channel, group: str) -> None:
        nonlocal redeliveries
        m = Member(channel, group, max_in_flight)
        working: set[asyncio.Task[None]] = set()
        try:
            async for response in m.call:
                if response.WhichOneof("response") == "deliveries":
                    ids = []
                    for d in response.deliveries.deliveries:
                        position, key = d.event.position, _key(d.event, ordering)
                        redeliveries += d.attempt > 1
                        if key:
                            if key in keys_in_flight:
                                raise WorkloadError(f"two events of {key} in flight at once")
                            if last_of_key.get(key, 0) >= position:
                                raise WorkloadError(f"{key}: {position} after {last_of_key[key]}")
                            keys_in_flight.add(key)
                            last_of_key[key] = position
                        in_flight[d.delivery_id] = (position, key)
                        ids.append(d.delivery_id)
                    if work_seconds:
                        for delivery_id in ids:
                            task = asyncio.create_task(work_then_ack(m, delivery_id))
                            working.add(task)
                            task.add_done_callback(working.discard)
                        continue
                    # The server hands out a key's next event only once it has this ack, and
                    # that may reach another member before this one reads its `settled`.
                    for delivery_id in ids:
                        keys_in_flight.discard(in_flight[delivery_id][1])
                    await m.send(service.ConsumeRequest(ack=service.Ack(delivery_ids=ids)))
                else:
                    for delivery_id in response.settled.delivery_ids:
                        position, _ = in_flight.pop(delivery_id)
                        settled.add(position)
                    if len(settled) >= expected:
                        done.set()
        finally:
            for task in working:
                task.cancel()
            m.call.cancel()

    try:
        group = await _create_group(chans[0], ordering)
        start = time.perf_counter()
        tasks = [asyncio.create_task(member(c, group)) for c in chans]
        waiter = asyncio.create_task(done.wait())
        finished, _ = await asyncio.wait(
            [waiter, *tasks], timeout=DRAIN_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        elapsed = time.perf_counter() - start
        for task in [waiter, *tasks]:
            task.cancel()
        for task in finished:
            if task is not waiter and task.exception() is not None:
                raise WorkloadError(f"member failed: {task.exception()}")
        await asyncio.gather(*tasks, return_exceptions=True)
    except grpc.aio.AioRpcError as error:
        raise WorkloadError(f"Consume failed: {error.code().name} {error.details()}") from error
    finally:
        await close_all(chans)
    if settled != set(range(1, expected + 1)):
        raise WorkloadError(f"{len(settled)} of {expected} events acknowledged in time")
    return {"events_per_s": expected / elapsed, "events": expected, "redeliveries": redeliveries}


async def group_scaling(
    target: str, expected: int, member_counts: list[int], work_ms: float, max_in_flight: int
) -> Result:
    """Events/s with 1, 2, 4... members that each spend `work_ms` per event (SESSION order).

    Each count is a new group from the beginning of the same backlog; the figure is the last.
    """
    rates: dict[str, float] = {}
    for members in member_counts:
        result = await group_consume(
            target,
            expected,
            members,
            "session",
            work_seconds=work_ms / 1000,
            max_in_flight=max_in_flight,
        )
        rates[f"members_{members}"] = result["events_per_s"]
    first, last = rates[f"members_{member_counts[0]}"], rates[f"members_{member_counts[-1]}"]
    return {"events_per_s": last, **rates, "speedup": last / first, "events": expected}


async def group_redelivery(target: str, rounds: int) -> Result:
    """Time from a Nack with zero delay to the event's redelivery, `rounds` times."""
    chans = channels(target, 1)
    waits: list[float] = []
    try:
        group = await _create_group(chans[0], "none")
        m = Member(chans[0], group, 1)
        responses = aiter(m.call)
        try:
            for _ in range(rounds):
                first = await _next_delivery(responses)
                nacked = time.perf_counter()
                await m.send(
                    service.ConsumeRequest(
                        nack=service.Nack(delivery_ids=[first.delivery_id], retry_delay=Duration())
                    )
                )
                again = await _next_delivery(responses)
                waits.append((time.perf_counter() - nacked) * 1000)
                if (again.event.position, again.attempt) != (first.event.position, 2):
                    raise WorkloadError(
                        f"after a nack of {first.event.position} came {again.event.position} "
                        f"attempt {again.attempt}"
                    )
                await m.send(
                    service.ConsumeRequest(ack=service.Ack(delivery_ids=[again.delivery_id]))
                )
        finally:
            m.call.cancel()
    except grpc.aio.AioRpcError as error:
        raise WorkloadError(f"Consume failed: {error.code().name} {error.details()}") from error
    finally:
        await close_all(chans)
    waits.sort()
    return {"p99_ms": p99(waits), "p50_ms": statistics.median(waits), "rounds": rounds}


async def _next_delivery(responses: AsyncIterator[service.ConsumeResponse]) -> Any:
    """The next delivery, past any `settled` (one delivery at a time: max_in_flight 1)."""
    async with asyncio.timeout(DRAIN_SECONDS):
        async for response in responses:
            if response.WhichOneof("response") == "deliveries":
                (delivery,) = response.deliveries.deliveries
                return delivery
    raise WorkloadError("the Consume stream ended")


async def _durable_consumer(js: Any, stream: str, max_ack_pending: int) -> str:
    """A new durable pull consumer with explicit acks, as Journey's group: its name."""
    durable = f"bench_{uuid.uuid4().hex[:12]}"
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_TIMEOUT_SECONDS,
        max_ack_pending=max_ack_pending,
    )
    await js.add_consumer(stream, config)
    return durable


async def nats_group_consume(target: str, expected: int, members: int) -> Result:
    """A durable pull consumer, explicit acks, `members` pull subscribers; every message acked."""
    try:
        nc = await connect(target)
        try:
            js = nc.jetstream()
            async with fresh_stream(js) as (stream, subject):
                await seed_stream(js, subject, system_event(), expected)
                durable = await _durable_consumer(js, stream, members * MAX_IN_FLIGHT)
                seen: set[int] = set()
                all_seen = asyncio.Event()
                start = time.perf_counter()

                async def member() -> None:
                    sub = await js.pull_subscribe_bind(durable, stream)
                    while True:
                        try:
                            messages = await sub.fetch(FETCH_BATCH, timeout=0.5)
                        except TimeoutError:  # nats-py's, or asyncio's: nothing to fetch
                            continue
                        for message in messages:
                            seen.add(message.metadata.sequence.stream)
                            await message.ack()
                        if len(seen) >= expected:
                            all_seen.set()

                tasks = [asyncio.create_task(member()) for _ in range(members)]
                try:
                    async with asyncio.timeout(DRAIN_SECONDS):
                        waiter = asyncio.create_task(all_seen.wait())
                        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                        for task in tasks:
                            if task.done() and task.exception() is not None:
                                raise WorkloadError(f"member failed: {task.exception()}")
                        # ack() is not confirmed: done when the server has them all.
                        while True:
                            info = await js.consumer_info(stream, durable)
                            if info.ack_floor.stream_seq >= expected and not info.num_ack_pending:
                                break
                            await asyncio.sleep(0.005)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                elapsed = time.perf_counter() - start
        finally:
            await nc.close()
    except (nats.errors.Error, OSError) as error:
        raise nats_failure(error) from error
    if seen != set(range(1, expected + 1)):
        raise WorkloadError(f"NATS delivered {len(seen)} of {expected} messages")
    return {"events_per_s": expected / elapsed, "events": expected}


async def nats_group_redelivery(target: str, rounds: int) -> Result:
    """Time from a nak (no delay) to the message's redelivery to a pull subscriber."""
    waits: list[float] = []
    try:
        nc = await connect(target)
        try:
            js = nc.jetstream()
            async with fresh_stream(js) as (stream, subject):
                await seed_stream(js, subject, system_event(), rounds)
                durable = await _durable_consumer(js, stream, 1)
                sub = await js.pull_subscribe_bind(durable, stream)
                for _ in range(rounds):
                    (first,) = await sub.fetch(1, timeout=5)
                    nacked = time.perf_counter()
                    await first.nak()
                    (again,) = await sub.fetch(1, timeout=5)
                    waits.append((time.perf_counter() - nacked) * 1000)
                    seq = first.metadata.sequence.stream
                    if again.metadata.sequence.stream != seq or again.metadata.num_delivered != 2:
                        raise WorkloadError(f"after a nak of {seq} came another message")
                    await again.ack_sync()
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.close()
    except (nats.errors.Error, OSError) as error:
        raise nats_failure(error) from error
    waits.sort()
    return {"p99_ms": p99(waits), "p50_ms": statistics.median(waits), "rounds": rounds}
