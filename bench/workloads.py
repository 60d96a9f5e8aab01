"""The client side of each scenario: asyncio, the generated stubs, one result dict per run.

Every workload checks what it received: a lost, repeated or out-of-order event raises
WorkloadError, and so does any failed call; speed is only measured, never judged.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import math
import multiprocessing
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

import grpc
from google.protobuf.empty_pb2 import Empty

from bench import page_views
from journey_client import pb

Result = dict[str, Any]
# Separate TCP connections: grpc would otherwise share one connection between channels.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
STREAMS_PER_CHANNEL = 100
SUBSCRIBERS_PER_CHANNEL = 10
DRAIN_SECONDS = 120.0
# Producers held back this long while no subscriber advanced: the events are not coming.
STALL_SECONDS = 30.0
# For a spawned process to import grpc and open its subscriptions.
STARTUP_SECONDS = 90.0
# What the Python client asks for by default: the figures are those a client would see.
MAX_BATCH_SIZE = 1000
# JOURNEY_BENCH_TRACEPARENT: scenarios 1 and 2 send it with every Track, as a traced caller
# would (W3C trace context), to measure what carrying it costs.
TRACE_METADATA = tuple(
    ("traceparent", value) for value in (os.environ.get("JOURNEY_BENCH_TRACEPARENT", ""),) if value
)


class WorkloadError(Exception):
    """A call failed, or the events received were not exactly the events expected."""


def channels(target: str, count: int) -> list[grpc.aio.Channel]:
    """`count` channels, each its own connection."""
    return [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(count)]


async def close_all(chans: list[grpc.aio.Channel]) -> None:
    """Close channels, cancelling their calls."""
    await asyncio.gather(*(c.close(None) for c in chans))


def track_request(
    caller: int,
    call: int,
    session_id: str,
    events: int,
    *,
    ids: bool = True,
    with_properties: bool = False,
) -> pb.TrackRequest:
    """A Track with `events` page views, with client ids (as a retrying client sends).

    `with_properties`: each page view carries a URL, a referrer and a load time
    (bench/page_views.py); else a type and an id only, as in the scenarios before it.
    """
    tracked = []
    for i in range(events):
        event_id = f"{caller}-{call}-{i}" if ids else ""
        if with_properties:
            tracked.append(page_views.tracked_event(call * events + i, event_id))
        else:
            tracked.append(pb.TrackedEvent(type=page_views.EVENT_TYPE, id=event_id))
    return pb.TrackRequest(
        source_id="bench",
        profile_id="" if session_id else f"bench-{caller}-{call}",
        session_id=session_id,
        events=tracked,
    )


async def track_throughput(
    target: str,
    callers: int,
    events: int,
    seconds: float,
    with_properties: bool = False,
    pid: int | None = None,
) -> Result:
    """Scenarios 1, 2 and 8: `callers` concurrent callers, each in its own session, for `seconds`.

    `with_properties`: realistic page views (scenario 8) rather than events with no properties.
    With the server's `pid`, also the server's CPU time per call: on a busy machine it varies
    far less than calls/s, which moves with whatever else runs.
    """
    from bench.servers import cpu_seconds  # /proc only; the load generator runs on the same host

    chans = channels(target, 4)
    done = 0
    warmup = min(1.0, seconds / 4)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    cpu_from: list[float] = []

    async def cpu_at_start() -> None:
        await asyncio.sleep(warmup)
        if pid is not None:
            cpu_from.append(cpu_seconds(pid))

    async def caller(i: int) -> None:
        nonlocal done
        stub = pb.TrackerServiceStub(chans[i % len(chans)])
        session_id = ""
        for call in itertools.count():
            if time.perf_counter() >= stop_at:
                return
            request = track_request(i, call, session_id, events, with_properties=with_properties)
            response = await stub.Track(request, metadata=TRACE_METADATA)
            session_id = response.session_id
            if time.perf_counter() >= measure_from:
                done += 1

    try:
        await asyncio.gather(cpu_at_start(), *(caller(i) for i in range(callers)))
    except grpc.aio.AioRpcError as error:
        raise WorkloadError(f"Track failed: {error.code().name} {error.details()}") from error
    finally:
        await close_all(chans)
    elapsed = time.perf_counter() - measure_from
    result: Result = {"calls_per_s": done / elapsed, "events_per_s": done * events / elapsed}
    if pid is not None and cpu_from and done:
        result["server_cpu_ms_per_call"] = (cpu_seconds(pid) - cpu_from[0]) * 1000 / done
    return result


def events_of(message: pb.SubscribeResponse) -> Iterable[pb.SystemEvent]:
    """The events a Subscribe message carries, whether one by one or as a batch; else none."""
    kind = message.WhichOneof("content")
    if kind == "batch":
        return message.batch.events
    if kind == "event":
        return (message.event,)
    return ()


def check_events(
    events: Iterable[pb.SystemEvent],
    received: dict[str, float],
    last_position: int,
    gapless: bool,
    now: float,
) -> int:
    """Record `events` as received at `now`; the new last position.

    Raises WorkloadError for an event seen before or out of order, and, when `gapless`, for
    a position that skips one. Kept to a few dict and int operations per event: the
    subscribers' own CPU bounds the fan-out figure.
    """
    for event in events:
        position = event.position
        if position <= last_position or event.id in received:
            raise WorkloadError(f"event at position {position} delivered twice")
        if gapless and last_position and position != last_position + 1:
            raise WorkloadError(f"event at position {position} after {last_position}")
        received[event.id] = now
        last_position = position
    return last_position


@dataclass
class Subscriber:
    """One live subscription that records what it received, and when."""

    stub: pb.SystemEventServiceAsyncStub
    request: pb.SubscribeRequest
    # Where another process reads how many events this subscriber has: counts[slot].
    counts: SynchronizedArray[int] | None = None
    slot: int = 0
    received: dict[str, float] = field(default_factory=dict)
    last_position: int = 0
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reading in the background."""
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        # Unfiltered, positions run without gaps on both servers: a jump is a loss,
        # reported now rather than by a drain that never ends.
        gapless = not self.request.HasField("filter")
        async for message in self.stub.Subscribe(self.request):
            kind = message.WhichOneof("content")
            if kind == "event" or kind == "batch":
                events = message.batch.events if kind == "batch" else (message.event,)
                # One clock read per message: a batch's events all arrived together.
                self.last_position = check_events(
                    events, self.received, self.last_position, gapless, time.perf_counter()
                )
                if self.counts is not None:
                    self.counts[self.slot] = len(self.received)
                self.changed.set()
            elif kind == "caught_up":
                self.caught_up.set()

    async def stop(self) -> None:
        """Cancel the stream; a failure it met is raised here."""
        assert self.task is not None
        if self.task.done():
            self.task.result()
            return
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise


async def subscribe_all(
    chans: list[grpc.aio.Channel],
    count: int,
    request: pb.SubscribeRequest,
    counts: SynchronizedArray[int] | None = None,
) -> list[Subscriber]:
    """Open `count` subscriptions over the channels and wait until every one is caught up."""
    subscribers = [
        Subscriber(pb.SystemEventServiceStub(chans[i % len(chans)]), request, counts, i)
        for i in range(count)
    ]
    for s in subscribers:
        s.start()
    await _until(subscribers, lambda s: s.caught_up.wait(), 60.0, "catch up")
    return subscribers


async def _until(
    subscribers: list[Subscriber],
    condition: Callable[[Subscriber], Awaitable[Any]],
    seconds: float,
    what: str,
) -> None:
    """Wait until `condition` holds for every subscriber; fail if a stream ends or time runs out."""
    waiter = asyncio.ensure_future(asyncio.gather(*(condition(s) for s in subscribers)))
    streams = [s.task for s in subscribers if s.task is not None]
    try:
        async with asyncio.timeout(seconds):
            await asyncio.wait([waiter, *streams], return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        raise WorkloadError(f"subscribers did not {what} within {seconds:.0f} s") from None
    finally:
        waiter.cancel()
    if waiter.done() and not waiter.cancelled():
        return
    for stream in streams:
        if stream.done():
            stream.result()  # raises what ended the stream, if anything did
    raise WorkloadError("a subscription ended early")


async def _received_all(subscriber: Subscriber, ids: set[str]) -> None:
    while not ids.issubset(subscriber.received.keys()):
        subscriber.changed.clear()
        await subscriber.changed.wait()


def shortfall(received: Iterable[Iterable[str]], ids: set[str]) -> str:
    """What the subscribers miss of `ids`, and what they got that was never produced."""
    got = [set(r) for r in received]
    lost = [len(ids - r) for r in got]
    extra = sum(len(r - ids) for r in got)
    worst = max(lost, default=0)
    text = (
        f"{sum(1 for n in lost if n)} of {len(got)} subscribers lost events "
        f"(the worst got {len(ids) - worst} of {len(ids)})"
    )
    return text + (f", {extra} unexpected events received" if extra else "")


async def _finish(
    subscribers: list[Subscriber], ids: set[str], drain_seconds: float = DRAIN_SECONDS
) -> None:
    """Wait until every subscriber has `ids`, check it got exactly those, and stop them all."""
    try:
        await _until(subscribers, lambda s: _received_all(s, ids), drain_seconds, "drain")
    except WorkloadError as error:
        missing = shortfall((s.received for s in subscribers), ids)
        raise WorkloadError(f"{error}: {missing}") from None
    if any(s.received.keys() != ids for s in subscribers):
        raise WorkloadError(shortfall((s.received for s in subscribers), ids))
    for s in subscribers:
        await s.stop()


async def receive_from_parent(conn: Connection) -> Any:
    """The next message on `conn`, without blocking the event loop; EOFError if none can come."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    fd = conn.fileno()  # kept: the connection may be closed by the time this is cancelled
    loop.add_reader(fd, readable.set)
    try:
        await readable.wait()
    finally:
        loop.remove_reader(fd)
    return conn.recv()


async def _subscriber_group(
    target: str,
    max_batch_size: int,
    drain_seconds: float,
    counts: SynchronizedArray[int],
    conn: Connection,
    seconds: float,
) -> float:
    """Scenario 3's subscribers in one process: ready, then the ids, then the last receipt."""
    chans = channels(target, math.ceil(len(counts) / SUBSCRIBERS_PER_CHANNEL))
    request = pb.SubscribeRequest(end=Empty(), max_batch_size=max_batch_size)
    try:
        subs = await subscribe_all(chans, len(counts), request, counts)
        conn.send(None)
        # The parent sends the produced ids when its producers stop; a stream failing before
        # that is reported at once, or the producers would wait for it forever.
        ids = asyncio.ensure_future(receive_from_parent(conn))
        await _until(subs, lambda _: asyncio.wait([ids]), seconds + DRAIN_SECONDS, "hear the ids")
        await _finish(subs, set(ids.result()), drain_seconds)
    except grpc.aio.AioRpcError as error:
        raise WorkloadError(f"call failed: {error.code().name} {error.details()}") from error
    finally:
        await close_all(chans)
    return max(max(s.received.values(), default=0.0) for s in subs)


def subscriber_process(
    target: str,
    max_batch_size: int,
    drain_seconds: float,
    counts: SynchronizedArray[int],
    conn: Connection,
    seconds: float,
) -> None:
    """Entry point of a subscriber process: its messages are None, then a time, or an error."""
    group = _subscriber_group(target, max_batch_size, drain_seconds, counts, conn, seconds)
    run_group(group, conn)


def run_group(group: Coroutine[Any, Any, float], conn: Connection) -> None:
    """Run a subscriber process's coroutine and send its last receipt, or its error."""
    try:
        conn.send(asyncio.run(group))
    except WorkloadError as error:
        conn.send(str(error))
    except EOFError:
        pass  # the parent has gone, and nobody is left to tell


@dataclass
class _Group:
    """A subscriber process, seen from the producers' side."""

    process: BaseProcess
    counts: SynchronizedArray[int]
    conn: Connection

    async def reply(self) -> float | None:
        """The process's next message; its error, or its early end, raises WorkloadError."""
        try:
            message: float | str | None = await receive_from_parent(self.conn)
        except EOFError:
            self.process.join(1.0)
            raise WorkloadError(
                f"a subscriber process ended with exit code {self.process.exitcode}"
            ) from None
        if isinstance(message, str):
            raise WorkloadError(message)
        return message

    def stop(self) -> None:
        """End the process, whatever it is doing: after its last message it has nothing to do."""
        self.conn.close()
        self.process.terminate()
        self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# A subscriber process's entry point: called as entry(*args, counts, conn, seconds).
GroupEntry = Callable[..., None]


def _start_group(entry: GroupEntry, args: tuple[Any, ...], count: int, seconds: float) -> _Group:
    """A process of `count` subscribers."""
    # Spawned, never forked: grpc's threads and state do not survive a fork.
    context = multiprocessing.get_context("spawn")
    # One writer per slot, so no lock: a reader may see a count one event old, no worse.
    counts = context.Array(ctypes.c_int64, count, lock=False)
    ours, theirs = context.Pipe()
    process = context.Process(target=entry, args=(*args, counts, theirs, seconds), daemon=True)
    process.start()
    theirs.close()  # so that the process's death reads as end-of-file here
    return _Group(process, counts, ours)


async def drive_fan_out(
    entry: GroupEntry,
    args: tuple[Any, ...],
    call: Callable[[int, int], Awaitable[list[Any]]],
    subscribers: int,
    seconds: float,
    window: int,
    processes: int,
    producers: int,
    stall_seconds: float = STALL_SECONDS,
) -> Result:
    """Scenario 3's shape for any server: subscriber processes, `producers` windowed producers.

    `entry(*args, counts, conn, seconds)` runs one process's subscribers; `call(producer, n)`
    makes one producer's n-th call and returns the ids of the events it caused, which every
    subscriber must then receive exactly once.
    """
    groups: list[_Group] = []
    ready: list[asyncio.Future[float | None]] = []
    replies: list[asyncio.Future[float | None]] = []
    try:
        processes = min(processes, subscribers)
        for i in range(processes):
            share = subscribers // processes + (i < subscribers % processes)
            groups.append(_start_group(entry, args, share, seconds))
        ready = [asyncio.ensure_future(g.reply()) for g in groups]
        async with asyncio.timeout(STARTUP_SECONDS):
            await asyncio.gather(*ready)
        # Each process's next message: its last receipt, or an error that ends the run early.
        replies = [asyncio.ensure_future(g.reply()) for g in groups]
        produced: set[Any] = set()
        start = time.perf_counter()
        stop_at = start + seconds

        def slowest() -> int:
            return min(min(g.counts[:]) for g in groups)

        async def held_back() -> None:
            """Until the slowest subscriber is within `window`; raises if it stops advancing."""
            seen = slowest()
            since = time.perf_counter()
            while len(produced) - seen > window:
                # Polled: a wake-up per received event would cost more than the poll.
                await asyncio.sleep(0.001)
                now, count = time.perf_counter(), slowest()
                if count != seen:
                    seen, since = count, now
                elif now - since > stall_seconds:
                    raise WorkloadError(
                        f"subscribers stopped receiving: the slowest has {seen} of the "
                        f"{len(produced)} events produced, none more for {stall_seconds:.0f} s"
                    )

        async def producer(i: int) -> None:
            for n in itertools.count():
                if time.perf_counter() >= stop_at:
                    return
                await held_back()
                produced.update(await call(i, n))

        production = asyncio.ensure_future(asyncio.gather(*(producer(i) for i in range(producers))))
        waiting: list[asyncio.Future[Any]] = [production, *replies]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not production.done():
            production.cancel()
            for reply in replies:
                if reply.done():
                    reply.result()  # raises the process's error
        production.result()
        for g in groups:
            g.conn.send(list(produced))
        async with asyncio.timeout(DRAIN_SECONDS + STARTUP_SECONDS):
            ends = await asyncio.gather(*replies)
    except TimeoutError:
        raise WorkloadError("a subscriber process did not answer in time") from None
    finally:
        for reader in ready + replies:
            reader.cancel()
        await asyncio.gather(*ready, *replies, return_exceptions=True)
        for g in groups:
            g.stop()
    end = max(start, *(e for e in ends if e is not None))
    delivered = len(produced) * subscribers
    return {"delivered_per_s": delivered / (end - start), "delivered": delivered}


async def fan_out(
    target: str,
    subscribers: int,
    seconds: float,
    window: int,
    processes: int,
    producers: int,
    max_batch_size: int = MAX_BATCH_SIZE,
    subscriber_target: str | None = None,
    drain_seconds: float = DRAIN_SECONDS,
) -> Result:
    """Scenario 3: new-session Tracks from `producers` callers fanned out to `subscribers` streams.

    The subscribers are spread over `processes` processes, so that the figure is not one
    process's client CPU. The producers hold back while the slowest subscriber is more than
    `window` events behind, so the figure is the rate the server sustains, not how fast
    buffers fill. Every process checks that each of its subscribers got exactly the produced
    events, in order, and reports its last receipt; perf_counter is CLOCK_MONOTONIC on Linux,
    the same clock in every process. `subscriber_target` (scenario 9): the subscribers connect
    to another replica than the producers, and wait `drain_seconds` at most for the last events
    before reporting what is lost.
    """
    producer_chan = channels(target, 1)
    stub = pb.TrackerServiceStub(producer_chan[0])

    async def call(i: int, n: int) -> list[str]:
        response = await stub.Track(track_request(1000 + i, n, "", 1))
        return [e.id for e in response.system_events]

    try:
        return await drive_fan_out(
            subscriber_process,
            (subscriber_target or target, max_batch_size, drain_seconds),
            call,
            subscribers,
            seconds,
            window,
            processes,
            producers,
        )
    except grpc.aio.AioRpcError as error:
        raise WorkloadError(f"call failed: {error.code().name} {error.details()}") from error
    finally:
        await close_all(producer_chan)


async def live_latency(
    target: str,
    subscribers: int,
    events_per_s: float,
    seconds: float,
    max_batch_size: int = MAX_BATCH_SIZE,
    subscriber_target: str | None = None,
    drain_seconds: float = DRAIN_SECONDS,
) -> Result:
    """Scenario 4: from each Track reply to each subscriber's receipt, at a steady rate.

    Each Track opens a new session (three system events), so `events_per_s / 3` calls a second,
    sent on a fixed schedule whether or not earlier calls have returned. `p99_from_send_ms`
    runs from the call instead of its reply, as NATS's publish-to-receipt figure does.
    `subscriber_target` (scenario 10): the subscribers connect to another replica than the
    producer, and wait `drain_seconds` at most for the last events before reporting what is lost.
    """
    chans = channels(subscriber_target or target, 2)
    producer_chan = channels(target, 1)
    replied: dict[str, float] = {}
    sent: dict[str, float] = {}
    try:
        request = pb.SubscribeRequest(end=Empty(), max_batch_size=max_batch_size)
        subs = await subscribe_all(chans, subscribers, request)
        stub = pb.TrackerServiceStub(producer_chan[0])
        calls = int(events_per_s / 3 * seconds)
        interval = 3 / events_per_s

        async def one(call: int) -> None:
            sent_at = time.perf_counter()
            response = await stub.Track(track_request(2000, call, "", 1))
            now = time.perf_counter()
            for e in response.system_events:
                replied[e.id] = now
                sent[e.id] = sent_at

        sent_for = await on_schedule(calls, interval, one)
        ids = set(replied)
        await _finish(subs, ids, drain_seconds)
    except grpc.aio.AioRpcError as error:
        raise WorkloadError(f"call failed: {error.code().name} {error.details()}") from error
    finally:
        await close_all(chans + producer_chan)
    if not ids:
        # The calls' client ids were stored before (a server that is not fresh): no new events.
        raise WorkloadError("the Tracks caused no system events; the benchmark needs a fresh log")
    # An event can reach a subscriber before its Track reply reaches the caller: that counts 0.
    latencies = sorted(max(0.0, s.received[i] - replied[i]) * 1000 for s in subs for i in ids)
    from_send = sorted((s.received[i] - sent[i]) * 1000 for s in subs for i in ids)
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": p99(latencies),
        "max_ms": latencies[-1],
        "p99_from_send_ms": p99(from_send),
        "events_per_s": len(ids) / sent_for,
        "samples": len(latencies),
    }


async def on_schedule(
    calls: int, interval: float, call: Callable[[int], Coroutine[Any, Any, None]]
) -> float:
    """Start call(0), call(1), ... every `interval` s, whether or not earlier ones returned.

    Returns the seconds from the first start until every call has returned.
    """
    start = time.perf_counter()
    tasks = []
    for n in range(calls):
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call(n)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


def p99(ordered: list[float]) -> float:
    """The 99th percentile of an ascending list: the value 1% of the samples lie above."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def replay(target: str, expected: int, max_batch_size: int = MAX_BATCH_SIZE) -> Result:
    """Scenario 5: one subscriber from `beginning` over `expected` stored events."""
    chans = channels(target, 1)
    stub = pb.SystemEventServiceStub(chans[0])
    count = 0
    last = 0
    start = time.perf_counter()
    try:
        request = pb.SubscribeRequest(beginning=Empty(), max_batch_size=max_batch_size)
        async for message in stub.Subscribe(request):
            if message.WhichOneof("content") == "caught_up":
                break
            for event in events_of(message):
                if event.position != last + 1:
                    raise WorkloadError(f"position {event.position} after {last}")
                last = event.position
                count += 1
    except grpc.aio.AioRpcError as error:
        raise WorkloadError(f"Subscribe failed: {error.code().name} {error.details()}") from error
    finally:
        elapsed = time.perf_counter() - start
        await close_all(chans)
    if count != expected:
        raise WorkloadError(f"replayed {count} events, expected {expected}")
    return {"events_per_s": count / elapsed, "events": count}


async def idle_memory(
    target: str, subscribers: int, pid: int, max_batch_size: int = MAX_BATCH_SIZE
) -> Result:
    """Scenario 6: the server's RSS while `subscribers` idle streams are open."""
    from bench.servers import rss_mb  # /proc only; the load generator runs on the same host

    before = rss_mb(pid)
    chans = channels(target, max(1, subscribers // STREAMS_PER_CHANNEL))
    try:
        request = pb.SubscribeRequest(end=Empty(), max_batch_size=max_batch_size)
        subs = await subscribe_all(chans, subscribers, request)
        await asyncio.sleep(1.0)
        during = rss_mb(pid)
        for s in subs:
            await s.stop()
    except grpc.aio.AioRpcError as error:
        raise WorkloadError(f"Subscribe failed: {error.code().name} {error.details()}") from error
    finally:
        await close_all(chans)
    return {"rss_mb": during, "rss_before_mb": before, "subscribers": subscribers}


async def sweep(
    target: str, sessions: int, expire_at: float, max_batch_size: int = MAX_BATCH_SIZE
) -> Result:
    """Scenario 7: seconds from the moment `sessions` visits expire to the last visit-ended.

    `expire_at` is wall-clock time (time.time()); the stream starts at `beginning`, so it
    misses nothing even if the sweep began before it connected.
    """
    chans = channels(target, 1)
    request = pb.SubscribeRequest(
        beginning=Empty(),
        filter=pb.SystemEventFilter(types=[pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED]),
        max_batch_size=max_batch_size,
    )
    sessions_seen: set[str] = set()
    stub = pb.SystemEventServiceStub(chans[0])
    try:
        async with asyncio.timeout(DRAIN_SECONDS + max(0.0, expire_at - time.time())):
            async for message in stub.Subscribe(request):
                for event in events_of(message):
                    if event.session_id in sessions_seen:
                        raise WorkloadError(f"two visit-ended for {event.session_id}")
                    sessions_seen.add(event.session_id)
                if len(sessions_seen) >= sessions:
                    break
    except TimeoutError:
        raise WorkloadError(f"{len(sessions_seen)} of {sessions} visit-ended arrived") from None
    except grpc.aio.AioRpcError as error:
        raise WorkloadError(f"Subscribe failed: {error.code().name} {error.details()}") from error
    finally:
        last = time.time()
        await close_all(chans)
    return {"seconds": last - expire_at, "visits": len(sessions_seen)}
