"""NATS JetStream doing the work of scenarios 2 to 5 and 8, as a user of nats-py would write it.

Each workload makes a stream of its own (file storage, uniquely named) and deletes it at the
end; publishes are acknowledged (`js.publish` awaited) and subscribers are ephemeral ordered
consumers (`js.subscribe(..., ordered_consumer=True)`). Like the gRPC workloads, each checks
what it received: every message exactly once, in stream-sequence order, else WorkloadError.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

import nats
import nats.errors
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, StorageType, StreamConfig

from bench import page_views
from bench.workloads import (
    DRAIN_SECONDS,
    Result,
    WorkloadError,
    drive_fan_out,
    on_schedule,
    p99,
    receive_from_parent,
    run_group,
)
from journey_client import pb

PROBE_SECONDS = 3.0
# A safety net only: a stream left behind by a killed run expires instead of filling the disk.
STREAM_MAX_AGE = 3600.0
POLL_SECONDS = 0.005


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def probe(server: str, seconds: float = PROBE_SECONDS) -> str | None:
    """None if JetStream answers at `server` within `seconds`; else why not."""
    seen: list[Exception] = []

    async def note(error: Exception) -> None:
        seen.append(error)

    try:
        async with asyncio.timeout(seconds):
            # One retry at most: nats-py's initial connect loops for ever with 0 attempts.
            nc = await nats.connect(
                server,
                connect_timeout=seconds / 2,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=note,
            )
            try:
                await nc.jetstream().account_info()
            finally:
                await nc.close()
    except Exception as error:
        # The connect errors reach error_cb; what is raised is often only "no servers".
        return _describe(seen[-1] if seen else error)
    return None


async def connect(server: str) -> Client:
    """A connection as a workload uses it; one per process or role, as nats-py intends."""
    return await nats.connect(
        server, connect_timeout=5.0, max_reconnect_attempts=1, reconnect_time_wait=0.2
    )


@asynccontextmanager
async def fresh_stream(js: JetStreamContext) -> AsyncIterator[tuple[str, str]]:
    """A new file-stored stream with one subject, deleted afterwards: (stream, subject)."""
    name = f"JOURNEY_BENCH_{uuid.uuid4().hex[:12]}"
    subject = f"{name}.events"
    await js.add_stream(
        StreamConfig(
            name=name, subjects=[subject], storage=StorageType.FILE, max_age=STREAM_MAX_AGE
        )
    )
    try:
        yield name, subject
    finally:
        # The run's own error matters more; max_age removes a stream left behind.
        with contextlib.suppress(nats.errors.Error, OSError):
            await js.delete_stream(name)


def page_view() -> bytes:
    """A tracked page view as the Python client would send it: ~110 bytes of protobuf."""
    now = Timestamp()
    now.GetCurrentTime()
    event = pb.TrackedEvent(type="page-view", id=str(uuid.uuid4()), occur_time=now)
    event.properties.update({"url": "https://shop.example/products/42"})
    return event.SerializeToString()


def system_event() -> bytes:
    """A new-session system event as Journey delivers it: ~140 bytes of protobuf."""
    now = Timestamp()
    now.GetCurrentTime()
    return pb.SystemEvent(
        position=123_456,
        id=str(uuid.uuid4()),
        type=pb.SystemEventType.SYSTEM_EVENT_TYPE_SESSION_OPENED,
        occur_time=now,
        profile_id=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        source_id="bench",
    ).SerializeToString()


def nats_failure(error: BaseException) -> WorkloadError:
    return WorkloadError(f"NATS: {_describe(error)}")


@dataclass
class Follower:
    """One ordered consumer's check: every stream sequence once, in order, from `first`."""

    first: int = 1
    counts: SynchronizedArray[int] | None = None
    slot: int = 0
    last: int = 0
    count: int = 0
    last_time: float = 0.0
    error: str | None = None
    # Scenario 4 only: when each sequence arrived, and how long after its send time.
    times: dict[int, float] | None = None
    since_send: list[float] = field(default_factory=list)

    def take(self, sequence: int, now: float) -> None:
        """Record one message; WorkloadError if it repeats, goes back or skips one."""
        expected = self.last + 1 if self.count else self.first
        if sequence != expected:
            what = "again" if sequence <= self.last and self.count else "after"
            raise WorkloadError(
                f"stream sequence {sequence} {what} {self.last or 'the start'}"
                f" (expected {expected})"
            )
        self.last = sequence
        self.count += 1
        self.last_time = now
        if self.counts is not None:
            self.counts[self.slot] = self.count

    async def on_message(self, msg: Msg) -> None:
        """The subscription's callback; a failed check is kept, since nats-py swallows it."""
        if self.error is not None:
            return
        now = time.perf_counter()
        try:
            self.take(msg.metadata.sequence.stream, now)
        except WorkloadError as error:
            self.error = str(error)
            return
        if self.times is not None:
            self.times[self.last] = now
            self.since_send.append(now - struct.unpack_from("<d", msg.data)[0])


async def wait_for(
    followers: list[Follower], done: Callable[[Follower], bool], seconds: float, what: str
) -> None:
    """Until `done` holds for every follower; a failed check or the time running out raises.

    Polled: a wake-up per message would cost the subscribers' CPU, which is what is measured.
    """
    deadline = time.perf_counter() + seconds
    while True:
        for f in followers:
            if f.error is not None:
                raise WorkloadError(f.error)
        if all(done(f) for f in followers):
            return
        if time.perf_counter() > deadline:
            got = min(f.count for f in followers)
            raise WorkloadError(f"NATS subscribers did not {what} within {seconds:.0f} s ({got})")
        await asyncio.sleep(POLL_SECONDS)


async def follow(
    js: JetStreamContext,
    stream: str,
    subject: str,
    follower: Follower,
    policy: DeliverPolicy,
) -> None:
    """An ephemeral ordered push consumer feeding `follower`."""
    await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=policy,
        cb=follower.on_message,
    )


async def publish_for(
    js: JetStreamContext,
    subject: str,
    payload: Callable[[int, int], bytes],
    publishers: int,
    seconds: float,
) -> Result:
    """Scenarios 2 and 8: `publishers` concurrent acked publishes, for `seconds`.

    `payload(publisher, n)` is the publisher's n-th message.
    """
    acked = 0
    measured = 0
    warmup = min(1.0, seconds / 4)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def publisher(i: int) -> None:
        nonlocal acked, measured
        n = 0
        while time.perf_counter() < stop_at:
            ack = await js.publish(subject, payload(i, n))
            n += 1
            if ack.duplicate:
                raise WorkloadError(f"NATS took message {ack.seq} as a duplicate")
            acked += 1
            if time.perf_counter() >= measure_from:
                measured += 1

    await asyncio.gather(*(publisher(i) for i in range(publishers)))
    elapsed = time.perf_counter() - measure_from
    return {"events_per_s": measured / elapsed, "acked": acked}


def page_view_json(publisher: int, n: int) -> bytes:
    """Scenario 8's message: a page view with properties, as JSON, with an id of its own."""
    return page_views.json_bytes(n, f"{publisher}-{n}")


async def nats_ingest(
    target: str, publishers: int, seconds: float, with_properties: bool = False
) -> Result:
    """Acked page-view publishes from `publishers` concurrent publishers.

    Scenario 2: the same ~110-byte protobuf page view every time, built once. Scenario 8
    (`with_properties`): each message is built when it is sent, as JSON of the same page view
    with properties that Journey's side sends (bench/page_views.py).
    """
    fixed = page_view()
    payload = page_view_json if with_properties else lambda _i, _n: fixed
    try:
        nc = await connect(target)
        try:
            js = nc.jetstream()
            async with fresh_stream(js) as (stream, subject):
                result = await publish_for(js, subject, payload, publishers, seconds)
                state = (await js.stream_info(stream)).state
                # Every acknowledged publish stored exactly once, nothing else.
                if state.messages != result["acked"] or state.last_seq != result["acked"]:
                    raise WorkloadError(
                        f"NATS acked {result['acked']} publishes but stored {state.messages}"
                        f" (last sequence {state.last_seq})"
                    )
        finally:
            await nc.close()
    except (nats.errors.Error, OSError) as error:
        raise nats_failure(error) from error
    return {**result, "payload_bytes": len(payload(0, 0))}


async def _nats_group(
    target: str,
    stream: str,
    subject: str,
    counts: SynchronizedArray[int],
    conn: Connection,
    seconds: float,
) -> float:
    """Scenario 3's shape: one process's ordered consumers, ready, the sequences, last receipt."""
    try:
        nc = await connect(target)
        try:
            js = nc.jetstream()
            followers = [Follower(counts=counts, slot=i) for i in range(len(counts))]
            for f in followers:
                # From what arrives next: the stream is still empty, as Journey's `end`.
                await follow(js, stream, subject, f, DeliverPolicy.NEW)
            # The subscriptions have reached the server before the producers start.
            await nc.flush()
            conn.send(None)
            ids = asyncio.ensure_future(receive_from_parent(conn))
            try:
                await wait_for(
                    followers, lambda _: ids.done(), seconds + DRAIN_SECONDS, "hear the ids"
                )
            finally:
                if not ids.done():
                    ids.cancel()
            sequences: list[int] = ids.result()
            total = len(sequences)
            if sorted(sequences) != list(range(1, total + 1)):
                raise WorkloadError("NATS acked sequences that are not 1..N")
            await wait_for(followers, lambda f: f.count >= total, DRAIN_SECONDS, "drain")
            if any(f.count != total for f in followers):
                raise WorkloadError(f"a NATS subscriber got more than the {total} messages sent")
        finally:
            await nc.close()
    except (nats.errors.Error, OSError) as error:
        raise nats_failure(error) from error
    return max(f.last_time for f in followers)


def nats_subscriber_process(
    target: str,
    stream: str,
    subject: str,
    counts: SynchronizedArray[int],
    conn: Connection,
    seconds: float,
) -> None:
    """Entry point of a NATS subscriber process, as workloads.subscriber_process."""
    run_group(_nats_group(target, stream, subject, counts, conn, seconds), conn)


async def nats_fan_out(
    target: str, subscribers: int, seconds: float, window: int, processes: int, producers: int
) -> Result:
    """Comparison 2: scenario 3 with ordered consumers and, for each Track, 3 acked publishes.

    Journey's Track that opens a session commits 3 system events, answered together; here a
    producer's call is 3 concurrent publishes, and it goes on when all 3 are acknowledged.
    """
    payload = system_event()
    try:
        nc = await connect(target)
        try:
            js = nc.jetstream()
            async with fresh_stream(js) as (stream, subject):

                async def call(_producer: int, _n: int) -> list[int]:
                    acks = await asyncio.gather(*(js.publish(subject, payload) for _ in range(3)))
                    return [a.seq for a in acks]

                return await drive_fan_out(
                    nats_subscriber_process,
                    (target, stream, subject),
                    call,
                    subscribers,
                    seconds,
                    window,
                    processes,
                    producers,
                )
        finally:
            await nc.close()
    except (nats.errors.Error, OSError) as error:
        raise nats_failure(error) from error


async def seed_stream(js: JetStreamContext, subject: str, payload: bytes, count: int) -> None:
    """Store `count` messages quickly: pipelined publishes, every ack checked, off the clock."""
    chunk = 1000
    for begin in range(0, count, chunk):
        futures: list[asyncio.Future[Any]] = [
            await js.publish_async(subject, payload)
            for _ in range(begin, min(count, begin + chunk))
        ]
        for ack in await asyncio.gather(*futures):
            if ack.duplicate:
                raise WorkloadError(f"NATS took message {ack.seq} as a duplicate while seeding")


async def nats_replay(target: str, expected: int) -> Result:
    """Comparison 3: one ordered consumer from the first of `expected` stored messages."""
    try:
        nc = await connect(target)
        try:
            js = nc.jetstream()
            async with fresh_stream(js) as (stream, subject):
                await seed_stream(js, subject, system_event(), expected)
                state = (await js.stream_info(stream)).state
                if state.messages != expected:
                    raise WorkloadError(f"NATS stored {state.messages} of {expected} messages")
                follower = Follower()
                start = time.perf_counter()
                await follow(js, stream, subject, follower, DeliverPolicy.ALL)
                await wait_for([follower], lambda f: f.count >= expected, DRAIN_SECONDS, "replay")
                elapsed = follower.last_time - start
        finally:
            await nc.close()
    except (nats.errors.Error, OSError) as error:
        raise nats_failure(error) from error
    if follower.count != expected:
        raise WorkloadError(f"NATS replayed {follower.count} messages, expected {expected}")
    return {"events_per_s": expected / elapsed, "events": expected}


async def nats_latency(
    target: str, subscribers: int, events_per_s: float, seconds: float
) -> Result:
    """Comparison 4: scenario 4's schedule as acked publishes to `subscribers` ordered consumers.

    As in scenario 4, a call of 3 (here 3 concurrent publishes) goes out every 3/rate seconds
    whether or not earlier ones were acknowledged, and latency runs from the acknowledgement,
    which is when Journey's caller has its Track reply, to each receipt (a message received
    before its acknowledgement counts 0). The payload also carries its send time:
    `p99_from_send_ms` is measured from the publish call instead.
    """
    body = system_event()
    acked: dict[int, float] = {}
    conns: list[Client] = []
    try:
        conns = [await connect(target) for _ in range(3)]
        js = conns[0].jetstream()
        async with fresh_stream(js) as (stream, subject):
            followers = [Follower(times={}) for _ in range(subscribers)]
            sub_js = [c.jetstream() for c in conns[1:]]
            for i, f in enumerate(followers):
                await follow(sub_js[i % len(sub_js)], stream, subject, f, DeliverPolicy.NEW)
            for c in conns[1:]:
                await c.flush()
            calls = int(events_per_s / 3 * seconds)
            interval = 3 / events_per_s

            async def one(_call: int) -> None:
                sent = struct.pack("<d", time.perf_counter()) + body
                acks = await asyncio.gather(*(js.publish(subject, sent) for _ in range(3)))
                now = time.perf_counter()
                for a in acks:
                    acked[a.seq] = now

            sent_for = await on_schedule(calls, interval, one)
            total = len(acked)
            if sorted(acked) != list(range(1, total + 1)):
                raise WorkloadError("NATS acked sequences that are not 1..N")
            await wait_for(followers, lambda f: f.count >= total, DRAIN_SECONDS, "drain")
    except (nats.errors.Error, OSError) as error:
        raise nats_failure(error) from error
    finally:
        for c in conns:
            await c.close()
    if not acked:
        raise WorkloadError("no NATS publish was acknowledged")
    latencies = sorted(
        max(0.0, at - acked[seq]) * 1000 for f in followers for seq, at in (f.times or {}).items()
    )
    from_send = sorted(x * 1000 for f in followers for x in f.since_send)
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": p99(latencies),
        "max_ms": latencies[-1],
        "p99_from_send_ms": p99(from_send),
        "events_per_s": total / sent_for,
        "samples": len(latencies),
    }
