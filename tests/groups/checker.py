"""Records every delivery of a consumer group test run and checks the delivery rules as it goes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import grpc

from journey_client import pb
from tests.groups.members import Member


def session_key(event: pb.SystemEvent) -> str:
    """The SESSION ordering key: the session, or the profile for an event without one."""
    return event.session_id or f"profile:{event.profile_id}"


@dataclass
class Checker:
    """What every member was sent and did; `errors` lists each broken rule."""

    key: Callable[[pb.SystemEvent], str] | None = session_key
    # Positions whose ack the server confirmed in `settled`.
    acked: set[int] = field(default_factory=set)
    # Positions a member sent an ack for (confirmed or not: a crash can cut the answer off).
    ack_sent: set[int] = field(default_factory=set)
    # Key -> (member, position) being worked on: delivered, no ack or nack sent yet.
    working: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Every position each key was delivered, in order.
    by_key: dict[str, list[int]] = field(default_factory=dict)
    deliveries: int = 0
    errors: list[str] = field(default_factory=list)

    def delivered(self, member: int, delivery: pb.Delivery) -> None:
        """A member received this delivery."""
        self.deliveries += 1
        position = delivery.event.position
        if position in self.acked:
            self.errors.append(f"position {position} delivered again after its ack was settled")
        if self.key is None:
            return
        key = self.key(delivery.event)
        holder = self.working.get(key)
        if holder is not None:
            self.errors.append(
                f"{key}: {position} to member {member} while member {holder[0]} works on "
                f"{holder[1]}"
            )
        earlier = [p for p in self.by_key.get(key, []) if p < position and p not in self.ack_sent]
        if earlier:
            self.errors.append(f"{key}: {position} delivered before {earlier} was acked")
        self.working[key] = (member, position)
        self.by_key.setdefault(key, []).append(position)

    def done_with(self, member: int, delivery: pb.Delivery, *, acked: bool) -> None:
        """The member sent an ack (or a nack) for this delivery."""
        if acked:
            self.ack_sent.add(delivery.event.position)
        if self.key is not None:
            key = self.key(delivery.event)
            if self.working.get(key, (None, None))[0] == member:
                del self.working[key]

    def gone(self, member: int) -> None:
        """The member's stream ended: it works on nothing any more."""
        for key, (holder, _) in list(self.working.items()):
            if holder == member:
                del self.working[key]


@dataclass
class Worker:
    """A member that acks most deliveries, nacks some, and now and then crashes and rejoins."""

    number: int
    make: Callable[[], pb.ConsumerGroupServiceAsyncStub]
    group: str
    checker: Checker
    nack_rate: float = 0.0
    crash_rate: float = 0.0
    max_in_flight: int = 100
    rng: random.Random = field(default_factory=random.Random)
    crashes: int = 0

    async def run(self) -> None:
        """Consume until cancelled, rejoining whenever the stream ends."""
        while True:
            member = Member(self.make(), self.group, self.max_in_flight).open()
            # Each stream counts as its own member for the checker.
            self.number += 1000
            try:
                await self._consume(member)
            except (grpc.aio.AioRpcError, AssertionError):
                pass
            finally:
                member.close()
                self.checker.gone(self.number)
            await asyncio.sleep(0.05)

    async def _consume(self, member: Member) -> None:
        by_id: dict[str, pb.Delivery] = {}
        # Only a settled *ack* confirms: a nack of an event whose earlier ack was lost does not.
        acked_ids: set[str] = set()
        while True:
            response = await member.read(seconds=60)
            if response.HasField("settled"):
                for i in response.settled.delivery_ids:
                    delivery = by_id.pop(i, None)
                    if delivery is not None and i in acked_ids:
                        self.checker.acked.add(delivery.event.position)
                for i in response.settled.ignored_delivery_ids:
                    by_id.pop(i, None)
                continue
            acks: list[pb.Delivery] = []
            nacks: list[pb.Delivery] = []
            for delivery in response.deliveries.deliveries:
                self.checker.delivered(self.number, delivery)
                by_id[delivery.delivery_id] = delivery
                if self.rng.random() < self.crash_rate:
                    self.crashes += 1
                    return  # the caller cancels the stream: a crash mid-work, nothing sent
                (nacks if self.rng.random() < self.nack_rate else acks).append(delivery)
            for delivery in nacks:
                self.checker.done_with(self.number, delivery, acked=False)
            for delivery in acks:
                self.checker.done_with(self.number, delivery, acked=True)
            if nacks:
                member.nack(*(d.delivery_id for d in nacks), delay=timedelta(0))
            if acks:
                acked_ids.update(d.delivery_id for d in acks)
                member.ack(*(d.delivery_id for d in acks))
