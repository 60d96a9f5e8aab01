"""ConsumerGroupService: protobuf to the consumer groups' core and back, and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.empty_pb2 import Empty

from journey.api import convert, encoding, page_token, validation
from journey.api.validation import MAX_PAGE_SIZE
from journey.domain.errors import FieldViolation, InvalidArgument, JourneyError
from journey.domain.groups import DEFAULT_MAX_IN_FLIGHT, MAX_MAX_IN_FLIGHT, Settled
from journey.groups import ConsumerGroups
from journey.streaming.dispatch import Member
from journey_client import pb

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_PAGE_SIZE = 100


class ConsumerGroupServicer(pb.ConsumerGroupServiceServicer):
    """journey.v1.ConsumerGroupService."""

    def __init__(self, groups: ConsumerGroups) -> None:
        self._groups = groups

    async def CreateConsumerGroup(
        self, request: pb.CreateConsumerGroupRequest, context: Context
    ) -> pb.ConsumerGroup:
        """Create a group, or return the same one."""
        state = await self._groups.create(
            request.name, convert.group_settings(request), convert.group_start(request)
        )
        return convert.consumer_group(state)

    async def GetConsumerGroup(
        self, request: pb.GetConsumerGroupRequest, context: Context
    ) -> pb.ConsumerGroup:
        """A group and its state."""
        return convert.consumer_group(await self._groups.get(request.name))

    async def ListConsumerGroups(
        self, request: pb.ListConsumerGroupsRequest, context: Context
    ) -> pb.ListConsumerGroupsResponse:
        """A page of groups in name order."""
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        states = await self._groups.page(page_token.decode_after(request), size + 1)
        page, more = states[:size], len(states) > size
        return pb.ListConsumerGroupsResponse(
            consumer_groups=[convert.consumer_group(s) for s in page],
            next_page_token=page_token.encode_after(request, page[-1].name) if more else "",
        )

    async def DeleteConsumerGroup(
        self, request: pb.DeleteConsumerGroupRequest, context: Context
    ) -> Empty:
        """Delete a group."""
        await self._groups.delete(request.name)
        return Empty()

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Context
    ) -> pb.ListDeadLettersResponse:
        """A page of a group's dead letters in position order."""
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = page_token.decode_after(request)
        if after and not after.isdigit():
            raise InvalidArgument(
                [FieldViolation("page_token", "is not a token this server issued")]
            )
        letters = await self._groups.dead_letters(request.name, int(after or 0), size + 1)
        page, more = letters[:size], len(letters) > size
        return pb.ListDeadLettersResponse(
            dead_letters=[convert.dead_letter(d) for d in page],
            next_page_token=page_token.encode_after(request, str(page[-1].position))
            if more
            else "",
        )

    async def RedriveDeadLetters(
        self, request: pb.RedriveDeadLettersRequest, context: Context
    ) -> pb.RedriveDeadLettersResponse:
        """Put a group's dead letters back."""
        return pb.RedriveDeadLettersResponse(count=await self._groups.redrive(request.name))

    # Yields the responses serialized, as encoding.add_consumer_group_service registers it to.
    async def Consume(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pb.ConsumeRequest], context: Context
    ) -> AsyncIterator[bytes]:
        """Join a group: deliveries while there is room, settlements once durable."""
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        if violations := validation.consume_order(first, first=True):
            raise InvalidArgument(violations)
        room = min(first.start.max_in_flight or DEFAULT_MAX_IN_FLIGHT, MAX_MAX_IN_FLIGHT)
        member = await self._groups.join(first.start.group, room)
        reader = asyncio.create_task(self._read(requests, member), name="journey-consume-read")
        try:
            while True:
                item = await member.outbox.get()
                if item is None:
                    return
                if isinstance(item, JourneyError):
                    raise item
                if isinstance(item, Settled):
                    yield encoding.settled(item)
                else:
                    for message in encoding.deliveries(item):
                        yield message
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            # Shielded: a cancelled stream still gives its work back before it is gone.
            await asyncio.shield(self._groups.leave(member))

    async def _read(self, requests: AsyncIterator[pb.ConsumeRequest], member: Member) -> None:
        """Queue the member's acks, nacks, rejects and extends; end the stream on a bad one."""
        try:
            async for request in requests:
                if violations := validation.consume_order(request, first=False):
                    member.end(InvalidArgument(violations))
                    return
                member.ask(convert.member_request(request))
                self._groups.wake(member)
        except JourneyError as error:  # a message the validation interceptor refused
            member.end(error)
        except grpc.aio.AioRpcError:
            return
        # The member half-closed: it sends nothing more, and may still receive.
