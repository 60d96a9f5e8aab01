"""A consumer-group member: deliveries to ack, nack, reject or extend, reconnecting with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Callable
from datetime import timedelta
from typing import Any, Protocol

import grpc

from journey_client import pb
from journey_client.errors import Unavailable, from_rpc_error
from journey_client.subscription import RETRYABLE, Backoff

log = logging.getLogger("journey_client")

# The server's default; at most 1000.
DEFAULT_MAX_IN_FLIGHT = 100


class ConsumeCall(Protocol):
    """What Consume needs of a bidirectional grpc call."""

    def __aiter__(self) -> Any: ...
    async def write(self, request: pb.ConsumeRequest) -> None: ...
    def cancel(self) -> bool: ...


OpenConsume = Callable[[], ConsumeCall]


def seconds(delay: float | timedelta) -> float:
    """A delay in seconds, from seconds or a timedelta."""
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


class _Link:
    """One Consume stream: its unsent settles and extends, and who waits for which Settled.

    Settles and extends wait here until the sender writes them: whatever piled up while it
    wrote goes in one message per kind, so acking many deliveries at once costs few messages.
    Each delivery settles at most once, so what is kept is bounded by `max_in_flight`.
    """

    def __init__(self, call: ConsumeCall) -> None:
        self.call = call
        self.void = False
        self.acks: list[str] = []
        self.nacks: dict[float | None, list[str]] = {}
        self.rejects: dict[str, list[str]] = {}
        self.extends: dict[str, None] = {}  # a dict keeps the order and drops repeats
        self.waiting: dict[str, asyncio.Future[bool]] = {}
        self.wake = asyncio.Event()

    def settle(self, kind: str, delivery_id: str, arg: Any) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.void:
            future.set_result(False)
            return future
        if kind == "ack":
            self.acks.append(delivery_id)
        elif kind == "nack":
            self.nacks.setdefault(arg, []).append(delivery_id)
        else:
            self.rejects.setdefault(arg, []).append(delivery_id)
        self.waiting[delivery_id] = future
        self.wake.set()
        return future

    def extend(self, delivery_id: str) -> bool:
        if self.void:
            return False
        self.extends[delivery_id] = None
        self.wake.set()
        return True

    def settled(self, settled: pb.Settled) -> None:
        # Ignored ones came too late (their ack timeout had passed): they did not count.
        for ids, durable in ((settled.delivery_ids, True), (settled.ignored_delivery_ids, False)):
            for delivery_id in ids:
                future = self.waiting.pop(delivery_id, None)
                if future is not None and not future.done():
                    future.set_result(durable)

    def end(self) -> None:
        """The stream is gone: what was not settled on it never will be."""
        self.void = True
        for future in self.waiting.values():
            if not future.done():
                future.set_result(False)
        self.waiting.clear()
        self.wake.set()

    def _requests(self) -> list[pb.ConsumeRequest]:
        out: list[pb.ConsumeRequest] = []
        if self.extends:
            # Before the settles: an extend of a delivery settled in the same round is moot.
            out.append(pb.ConsumeRequest(extend=pb.Extend(delivery_ids=list(self.extends))))
        if self.acks:
            out.append(pb.ConsumeRequest(ack=pb.Ack(delivery_ids=self.acks)))
        for delay, ids in self.nacks.items():
            nack = pb.Nack(delivery_ids=ids)
            if delay is not None:
                nack.retry_delay.FromTimedelta(timedelta(seconds=delay))
            out.append(pb.ConsumeRequest(nack=nack))
        for reason, ids in self.rejects.items():
            out.append(pb.ConsumeRequest(reject=pb.Reject(delivery_ids=ids, reason=reason)))
        self.acks, self.nacks, self.rejects, self.extends = [], {}, {}, {}
        return out

    async def send(self) -> None:
        """Write what piles up until the stream ends; a failed write ends only this loop."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            for request in self._requests():
                if self.void:
                    return
                try:
                    await self.call.write(request)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    return  # the reader sees the stream's end and reconnects


class Delivery:
    """One event handed to this member: handle it, then `ack`, `nack` or `reject` it once.

    `ack`, `nack` and `reject` wait, by default, until the server answers with `settled`,
    i.e. until the outcome is durable, and return True. False means it did not count or is
    unconfirmed: it came after the group's ack timeout (the server ignored it and delivers the
    event again), or the stream broke first (the server may have stored it or not; if not,
    the event is delivered again, to some member). So handlers must be idempotent, as with
    any at-least-once delivery, and a long one should `extend()`.
    With `wait=False` they return once the outcome is queued; `await d.wait_settled()` later.
    """

    def __init__(self, link: _Link, delivery: pb.Delivery) -> None:
        self._link = link
        self.delivery_id: str = delivery.delivery_id
        self.attempt: int = delivery.attempt
        self.event: pb.SystemEvent = delivery.event
        self._outcome: asyncio.Future[bool] | None = None

    @property
    def void(self) -> bool:
        """The stream it came on is gone: settling it does nothing, it will come again."""
        return self._link.void

    async def ack(self, *, wait: bool = True) -> bool:
        """Done: never deliver this event again."""
        return await self._settle("ack", None, wait)

    async def nack(self, delay: float | timedelta | None = None, *, wait: bool = True) -> bool:
        """Failed: deliver it again after `delay` (None: the group's backoff)."""
        if delay is not None and seconds(delay) < 0:
            raise ValueError(f"a nack delay must be >= 0, not {delay!r}")
        return await self._settle("nack", None if delay is None else seconds(delay), wait)

    async def reject(self, reason: str = "", *, wait: bool = True) -> bool:
        """Cannot succeed: dead-letter it now, with this reason."""
        return await self._settle("reject", reason, wait)

    async def extend(self) -> bool:
        """Still working: restart its ack timeout. False when settled already or void."""
        if self._outcome is not None:
            return False
        return self._link.extend(self.delivery_id)

    async def wait_settled(self) -> bool:
        """After `ack`/`nack`/`reject`: True once durable, False if unconfirmed (see above)."""
        if self._outcome is None:
            raise RuntimeError("the delivery was not acked, nacked or rejected")
        # Shielded: a caller that stops waiting does not cancel the answer for others.
        return await asyncio.shield(self._outcome)

    async def _settle(self, kind: str, arg: Any, wait: bool) -> bool:
        if self._outcome is not None:
            raise RuntimeError(f"delivery {self.delivery_id} was already settled")
        self._outcome = self._link.settle(kind, self.delivery_id, arg)
        if not wait:
            return not self._link.void
        return await self.wait_settled()


class Consumer:
    """An async iterator of a consumer group's deliveries, for one member.

    It joins the group, yields deliveries as the server hands them out (at most
    `max_in_flight` unsettled at once), and reconnects with backoff when the stream breaks,
    on another server when several are given. After a reconnect the deliveries of the old
    stream are void: settling them does nothing, and the server delivers their events again.
    """

    def __init__(
        self,
        open_call: OpenConsume,
        group: str,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
    ) -> None:
        if not 1 <= max_in_flight <= 1000:
            raise ValueError(f"max_in_flight must be 1 to 1000, not {max_in_flight}")
        self._open = open_call
        self.group = group
        self.max_in_flight = max_in_flight
        self._backoff = backoff or Backoff()
        self._max_attempts = max_attempts
        # The server never has more than max_in_flight deliveries unsettled, so the queue
        # never holds more; one slot more for the end.
        self._queue: asyncio.Queue[Delivery | BaseException] = asyncio.Queue(max_in_flight + 1)
        self._runner: asyncio.Task[None] | None = None
        self._link: _Link | None = None
        self._closed = False
        self.reconnects = 0

    def __aiter__(self) -> Consumer:
        """The consumer is its own iterator."""
        return self

    async def __anext__(self) -> Delivery:
        """The next delivery; raises the error that ended the consumer, if any."""
        if self._closed:
            raise StopAsyncIteration
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"consume {self.group}")
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                self._closed = True
                # Back for any other task waiting here (several may share one consumer).
                self._queue.put_nowait(item)
                raise item
            if not item.void:
                return item

    async def aclose(self, grace: float = 5.0) -> None:
        """Leave the group: wait up to `grace` s for outcomes sent but not settled, then cancel.

        What is still held goes to the other members at once.
        """
        self._closed = True
        link = self._link
        if link is not None and link.waiting and grace > 0:
            await asyncio.wait(list(link.waiting.values()), timeout=grace)
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our caller is being cancelled, not just the runner

    def _drop_queued(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _run(self) -> None:
        try:
            await self._members()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the iterating caller
            self._drop_queued()
            self._queue.put_nowait(error)

    async def _members(self) -> None:
        failures = 0
        start = pb.ConsumeRequest(
            start=pb.ConsumeStart(group=self.group, max_in_flight=self.max_in_flight)
        )
        while True:
            call = self._open()
            link = self._link = _Link(call)
            sender: asyncio.Task[None] | None = None
            try:
                # When the call already ended (NOT_FOUND, say), reading says how.
                with contextlib.suppress(asyncio.InvalidStateError):
                    await call.write(start)
                sender = asyncio.create_task(link.send())
                responses: AsyncIterable[pb.ConsumeResponse] = call
                async for response in responses:
                    failures = 0  # the server answered: the next break starts a fresh backoff
                    if response.WhichOneof("response") == "deliveries":
                        for delivery in response.deliveries.deliveries:
                            await self._queue.put(Delivery(link, delivery))
                    else:
                        link.settled(response.settled)
                # A stream ends with OK only when the server shuts down: join again after it.
                reason = "the server ended the stream"
                last_error: Exception = Unavailable(grpc.StatusCode.UNAVAILABLE, reason)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE:
                    raise from_rpc_error(error) from error
                reason = f"{error.code().name}: {error.details()}"
                last_error = from_rpc_error(error)
            finally:
                link.end()
                self._drop_queued()
                call.cancel()
                if sender is not None:
                    sender.cancel()
                    await asyncio.wait([sender])
            failures += 1
            if self._max_attempts is not None and failures >= self._max_attempts:
                raise last_error
            self.reconnects += 1
            delay = self._backoff.delay(failures)
            log.log(
                logging.WARNING if failures == 1 else logging.DEBUG,
                "consumer group %s: stream interrupted (%s); joining again in %.2fs",
                self.group,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
