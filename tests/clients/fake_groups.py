"""An in-process stand-in for ConsumerGroupService: a tiny in-memory group, cut on demand."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2

from journey_client import pb

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class _Member:
    max_in_flight: int
    out: asyncio.Queue[pb.ConsumeResponse | grpc.StatusCode]
    held: dict[str, tuple[pb.SystemEvent, int]] = field(default_factory=dict)
    unsettled: int = 0


@dataclass
class FakeGroups(pb.ConsumerGroupServiceServicer):
    """One consumer group's worth of rules, enough to drive a client.

    - `pending` events go to members with room, `attempt` counting deliveries;
    - ack, nack and reject are answered with `settled` (held back while `hold_settled` is
      clear), nack puts the event back at the end, reject dead-letters it; those of `too_late`
      positions are answered as ignored, and the event is pending again;
    - a member's stream that ends gives what it held back at once;
    - `fail_next` makes the next Consume calls fail at once with those codes, and `cut()`
      ends every open stream with UNAVAILABLE.
    Every ConsumeRequest and admin request is recorded.
    """

    pending: deque[tuple[pb.SystemEvent, int]] = field(default_factory=deque)
    groups: dict[str, pb.ConsumerGroup] = field(default_factory=dict)
    dead_letters: list[pb.DeadLetter] = field(default_factory=list)
    fail_next: list[grpc.StatusCode] = field(default_factory=list)
    hold_settled: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[pb.ConsumeRequest] = field(default_factory=list)
    admin: list[Any] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    # Settles of these positions come "too late": answered in `ignored_delivery_ids`.
    too_late: set[int] = field(default_factory=set)
    consume_calls: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)
    _members: list[_Member] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.hold_settled.set()

    def add(self, *events: pb.SystemEvent) -> None:
        """Make events pending (attempt 0: not yet delivered)."""
        self.pending.extend((event, 0) for event in events)
        self._pump()

    def cut(self) -> None:
        """End every open Consume stream with UNAVAILABLE."""
        for member in self._members:
            member.out.put_nowait(grpc.StatusCode.UNAVAILABLE)

    def _pump(self) -> None:
        for member in self._members:
            batch: list[pb.Delivery] = []
            while self.pending and member.unsettled < member.max_in_flight:
                event, attempt = self.pending.popleft()
                delivery_id = f"d{next(self._ids)}"
                member.held[delivery_id] = (event, attempt + 1)
                member.unsettled += 1
                batch.append(pb.Delivery(delivery_id=delivery_id, attempt=attempt + 1, event=event))
            if batch:
                member.out.put_nowait(
                    pb.ConsumeResponse(deliveries=pb.Deliveries(deliveries=batch))
                )

    async def _handle(self, member: _Member, request: pb.ConsumeRequest) -> None:
        kind = request.WhichOneof("request")
        if kind == "extend" or kind is None:
            return
        ids = [i for i in getattr(request, kind).delivery_ids if i in member.held]
        late = [i for i in ids if member.held[i][0].position in self.too_late]
        ids = [i for i in ids if i not in late]
        for delivery_id in late:
            event, attempt = member.held.pop(delivery_id)
            self.pending.append((event, attempt))
        for delivery_id in ids:
            event, attempt = member.held.pop(delivery_id)
            if kind == "ack":
                self.acked.append(event.position)
            elif kind == "nack":
                self.pending.append((event, attempt))
            else:
                self.dead_letters.append(
                    pb.DeadLetter(event=event, attempts=attempt, reason=request.reject.reason)
                )
        await self.hold_settled.wait()
        member.unsettled -= len(ids) + len(late)
        if ids or late:
            settled = pb.Settled(delivery_ids=ids, ignored_delivery_ids=late)
            member.out.put_nowait(pb.ConsumeResponse(settled=settled))
        self._pump()

    async def Consume(
        self, request_iterator: AsyncIterator[pb.ConsumeRequest], context: Context
    ) -> AsyncIterator[pb.ConsumeResponse]:
        """Hand out pending events as the rules above say."""
        self.consume_calls += 1
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        if self.fail_next:
            await context.abort(self.fail_next.pop(0), "scripted failure")
        first = await anext(aiter(request_iterator))
        self.requests.append(first)
        if first.WhichOneof("request") != "start":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "start first")
        if self.groups and first.start.group not in self.groups:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no group {first.start.group}")
        member = _Member(first.start.max_in_flight or 100, asyncio.Queue())
        self._members.append(member)

        async def read() -> None:
            async for request in request_iterator:
                self.requests.append(request)
                await self._handle(member, request)

        reader = asyncio.create_task(read())
        try:
            self._pump()
            while True:
                item = await member.out.get()
                if isinstance(item, grpc.StatusCode):
                    await context.abort(item, "scripted cut")
                yield item
        finally:
            reader.cancel()
            self._members.remove(member)
            # What the member held goes back at once, ahead of the rest.
            self.pending.extendleft(reversed(list(member.held.values())))
            self._pump()

    async def CreateConsumerGroup(
        self, request: pb.CreateConsumerGroupRequest, context: Context
    ) -> pb.ConsumerGroup:
        """Record the request and answer a group with its settings."""
        self.admin.append(request)
        group = pb.ConsumerGroup(
            name=request.name,
            filter=request.filter,
            ack_timeout=request.ack_timeout,
            max_attempts=request.max_attempts or 5,
            ordering=request.ordering,
        )
        if not group.HasField("ack_timeout"):
            group.ack_timeout.FromSeconds(30)
        self.groups[request.name] = group
        return group

    async def GetConsumerGroup(
        self, request: pb.GetConsumerGroupRequest, context: Context
    ) -> pb.ConsumerGroup:
        """The group, or NOT_FOUND."""
        self.admin.append(request)
        if request.name not in self.groups:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no group {request.name}")
        return self.groups[request.name]

    async def ListConsumerGroups(
        self, request: pb.ListConsumerGroupsRequest, context: Context
    ) -> pb.ListConsumerGroupsResponse:
        """Pages of `page_size` (the token is the next index)."""
        self.admin.append(request)
        names = sorted(self.groups)
        first = int(request.page_token or 0)
        size = request.page_size or 100
        page = [self.groups[n] for n in names[first : first + size]]
        more = first + size < len(names)
        return pb.ListConsumerGroupsResponse(
            consumer_groups=page, next_page_token=str(first + size) if more else ""
        )

    async def DeleteConsumerGroup(
        self, request: pb.DeleteConsumerGroupRequest, context: Context
    ) -> empty_pb2.Empty:
        """Forget the group; its members' streams end with NOT_FOUND."""
        self.admin.append(request)
        if self.groups.pop(request.name, None) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no group {request.name}")
        for member in self._members:
            member.out.put_nowait(grpc.StatusCode.NOT_FOUND)
        return empty_pb2.Empty()

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Context
    ) -> pb.ListDeadLettersResponse:
        """Pages of `page_size` (the token is the next index)."""
        self.admin.append(request)
        first = int(request.page_token or 0)
        size = request.page_size or 100
        more = first + size < len(self.dead_letters)
        return pb.ListDeadLettersResponse(
            dead_letters=self.dead_letters[first : first + size],
            next_page_token=str(first + size) if more else "",
        )

    async def RedriveDeadLetters(
        self, request: pb.RedriveDeadLettersRequest, context: Context
    ) -> pb.RedriveDeadLettersResponse:
        """Put the dead letters back as pending, attempts reset."""
        self.admin.append(request)
        count = len(self.dead_letters)
        self.pending.extend((d.event, 0) for d in self.dead_letters)
        self.dead_letters.clear()
        self._pump()
        return pb.RedriveDeadLettersResponse(count=count)


async def serve_groups(
    fake: FakeGroups, listen: str = "127.0.0.1:0"
) -> tuple[grpc.aio.Server, str]:
    """Start a server with the fake on a free port; returns it and its address."""
    server = grpc.aio.server()
    pb.add_ConsumerGroupServiceServicer_to_server(fake, server)
    port = server.add_insecure_port(listen)
    await server.start()
    return server, f"127.0.0.1:{port}"
