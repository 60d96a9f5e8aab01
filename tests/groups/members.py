"""A test member of a consumer group: a Consume stream driven by hand, recording what it got."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from google.protobuf.duration_pb2 import Duration

from journey_client import pb

Metadata = Sequence[tuple[str, str]]


@dataclass
class Member:
    """One Consume stream: send requests, read deliveries and settlements."""

    stub: pb.ConsumerGroupServiceAsyncStub
    group: str
    max_in_flight: int = 0
    metadata: Metadata | None = None
    first: pb.ConsumeRequest | None = None
    # Every delivery received, in order, and every id settled or ignored.
    received: list[pb.Delivery] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    # Deliveries received and not yet settled, by id.
    holding: dict[str, pb.Delivery] = field(default_factory=dict)
    _requests: asyncio.Queue[pb.ConsumeRequest | None] = field(default_factory=asyncio.Queue)
    call: grpc.aio.StreamStreamCall[pb.ConsumeRequest, pb.ConsumeResponse] | None = None
    # Responses as they arrive (a read with a timeout would cancel the call itself), then
    # the end: EOF, or the error the stream ended with.
    _responses: asyncio.Queue[pb.ConsumeResponse | BaseException | None] = field(
        default_factory=asyncio.Queue
    )
    _reader: asyncio.Task[None] | None = None

    def open(self) -> Member:
        """Start the stream (the first message is `start` unless `first` says otherwise)."""
        first = self.first or pb.ConsumeRequest(
            start=pb.ConsumeStart(group=self.group, max_in_flight=self.max_in_flight)
        )

        async def requests() -> AsyncIterator[pb.ConsumeRequest]:
            yield first
            while (request := await self._requests.get()) is not None:
                yield request

        self.call = self.stub.Consume(requests(), metadata=self.metadata)
        self._reader = asyncio.create_task(self._read_all(self.call))
        return self

    async def _read_all(
        self, call: grpc.aio.StreamStreamCall[pb.ConsumeRequest, pb.ConsumeResponse]
    ) -> None:
        try:
            while (response := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
                assert isinstance(response, pb.ConsumeResponse)
                self._responses.put_nowait(response)
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
            self._responses.put_nowait(error)
            return
        self._responses.put_nowait(None)

    def send(self, request: pb.ConsumeRequest) -> None:
        """Queue a request."""
        self._requests.put_nowait(request)

    def ack(self, *ids: str) -> None:
        """Ack these deliveries."""
        self.send(pb.ConsumeRequest(ack=pb.Ack(delivery_ids=ids)))

    def nack(self, *ids: str, delay: timedelta | None = None) -> None:
        """Nack these deliveries (the group's backoff without a delay)."""
        nack = pb.Nack(delivery_ids=ids)
        if delay is not None:
            nack.retry_delay.CopyFrom(_duration(delay))
        self.send(pb.ConsumeRequest(nack=nack))

    def reject(self, *ids: str, reason: str) -> None:
        """Reject these deliveries."""
        self.send(pb.ConsumeRequest(reject=pb.Reject(delivery_ids=ids, reason=reason)))

    def extend(self, *ids: str) -> None:
        """Extend these deliveries."""
        self.send(pb.ConsumeRequest(extend=pb.Extend(delivery_ids=ids)))

    async def read(self, seconds: float = 10) -> pb.ConsumeResponse:
        """The next response, recorded; TimeoutError after `seconds`."""
        async with asyncio.timeout(seconds):
            response = await self._responses.get()
        if isinstance(response, BaseException):
            self._responses.put_nowait(response)
            raise response
        assert response is not None, "the stream ended"
        if response.HasField("deliveries"):
            for delivery in response.deliveries.deliveries:
                self.received.append(delivery)
                self.holding[delivery.delivery_id] = delivery
        else:
            for i in (*response.settled.delivery_ids, *response.settled.ignored_delivery_ids):
                self.holding.pop(i, None)
            self.settled += response.settled.delivery_ids
            self.ignored += response.settled.ignored_delivery_ids
        return response

    async def deliveries(self, count: int, seconds: float = 10) -> list[pb.Delivery]:
        """Read until `count` more deliveries arrived; those deliveries."""
        start = len(self.received)
        async with asyncio.timeout(seconds):
            while len(self.received) < start + count:
                await self.read()
        return self.received[start:]

    async def until_settled(self, *ids: str, seconds: float = 10) -> None:
        """Read until each of `ids` is settled or ignored."""
        async with asyncio.timeout(seconds):
            while not set(ids) <= {*self.settled, *self.ignored}:
                await self.read()

    async def status(self, seconds: float = 10) -> grpc.StatusCode:
        """Read until the stream ends; its status."""
        assert self.call is not None
        async with asyncio.timeout(seconds):
            while True:
                response = await self._responses.get()
                if response is None:
                    return await self.call.code()
                if isinstance(response, grpc.aio.AioRpcError):
                    return response.code()
                if isinstance(response, BaseException):
                    raise response

    def close(self) -> None:
        """Cancel the stream (as a member that goes away)."""
        if self.call is not None:
            self.call.cancel()


def _duration(delta: timedelta) -> Duration:
    message = Duration()
    message.FromTimedelta(delta)
    return message


def positions(deliveries: Sequence[pb.Delivery]) -> list[int]:
    """The events' positions."""
    return [d.event.position for d in deliveries]
