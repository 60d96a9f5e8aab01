"""One group's dispatcher on this replica: its connected members, and rounds of work for them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from journey.clock import Clock
from journey.domain.errors import JourneyError, NotFound, Unavailable
from journey.domain.groups import Ack, Delivery, Extend, MemberRequest, Nack, Reject, Settled
from journey.storage.groups import MemberOps, Round

log = logging.getLogger(__name__)

# Without any wake-up, a round runs this often anyway: leases expire, nack delays pass, and a
# NOTIFY from another replica may have been missed.
POLL_SECONDS = 1.0
MIN_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 1.0

# What a member's stream is sent: deliveries, settlements, or the end (an error, or None).
Outgoing = list[Delivery] | Settled | JourneyError | None
# Runs one round in a writer transaction: (ops by member, rooms by member, now, whether to
# look for expired leases) -> Round.
RunRound = Callable[[Mapping[str, MemberOps], Mapping[str, int], datetime, bool], Awaitable[Round]]


class Member:
    """One open Consume stream: what it holds, what it asked for, what it is to be sent."""

    def __init__(self, member_id: str, group_id: str, max_in_flight: int) -> None:
        self.id = member_id
        self.group_id = group_id
        self.max_in_flight = max_in_flight
        # Deliveries sent and not yet settled, by id, with their positions (a round finds
        # their entries by position): each holds a slot of max_in_flight.
        self.outstanding: dict[str, int] = {}
        self._requests: list[MemberRequest] = []
        # Bounded by the protocol rather than by a size: at most one Deliveries message per
        # slot and one Settled per request that freed a slot, so 2 * max_in_flight + the end.
        self.outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.ended = False

    def ask(self, request: MemberRequest) -> None:
        """Queue a request for the next round; ids this member does not hold are dropped."""
        ids = tuple(i for i in request.delivery_ids if i in self.outstanding)
        if not ids:
            return
        match request:
            case Ack():
                self._requests.append(Ack(ids))
            case Nack(_, delay):
                self._requests.append(Nack(ids, delay))
            case Reject(_, reason):
                self._requests.append(Reject(ids, reason))
            case Extend():
                self._requests.append(Extend(ids))

    @property
    def has_requests(self) -> bool:
        """Whether requests wait for a round."""
        return bool(self._requests)

    def take(self) -> tuple[MemberOps, int]:
        """The queued requests as one round's ops, and the member's room once they settle."""
        requests, self._requests = self._requests, []
        acks: list[str] = []
        nacks: list[tuple[str, timedelta | None]] = []
        rejects: list[tuple[str, str]] = []
        extends: list[str] = []
        for request in requests:
            match request:
                case Ack(ids):
                    acks += ids
                case Nack(ids, delay):
                    nacks += [(i, delay) for i in ids]
                case Reject(ids, reason):
                    rejects += [(i, reason) for i in ids]
                case Extend(ids):
                    extends += ids
        settling = {*acks, *(i for i, _ in nacks), *(i for i, _ in rejects)}
        # A settled delivery's slot is reused only after its Settled is queued (same round).
        room = self.max_in_flight - len(self.outstanding.keys() - settling)
        # An id asked about twice may have been settled by a round in between: it has no
        # position any more, and the round names it as ignored.
        named = (*settling, *extends)
        positions = {i: self.outstanding[i] for i in named if i in self.outstanding}
        ops = MemberOps(tuple(acks), tuple(nacks), tuple(rejects), tuple(extends), positions)
        return ops, room

    def give_back(self, ops: MemberOps) -> None:
        """Requeue a round's ops that did not commit."""
        again: list[MemberRequest] = []
        if ops.acks:
            again.append(Ack(ops.acks))
        again += [Nack((i,), delay) for i, delay in ops.nacks]
        again += [Reject((i,), reason) for i, reason in ops.rejects]
        if ops.extends:
            again.append(Extend(ops.extends))
        self._requests = again + self._requests

    def end(self, error: JourneyError | None) -> None:
        """End the stream (with `error`, if any)."""
        if not self.ended:
            self.ended = True
            self.outbox.put_nowait(error)


@dataclass
class _Wait:
    """When the next round is due at the latest."""

    seconds: float


class Dispatcher:
    """Runs rounds for one group's members on this replica until none is left.

    A round is one writer transaction (storage.groups.dispatch): the members' acks, nacks,
    rejects and extends, expired leases, new events copied from the log, and work handed to
    the members with room. Only once it has committed are the settlements and deliveries
    queued to the streams, settlements first, so a slot is named in `settled` before reuse.
    """

    def __init__(self, group_id: str, run_round: RunRound, clock: Clock) -> None:
        self.group_id = group_id
        self.members: dict[str, Member] = {}
        self._run_round = run_round
        self._clock = clock
        self._wake = asyncio.Event()
        # When a lease may run out next (another replica's included: at the latest after a
        # poll), so that rounds look for expired leases only then.
        self._expire_at: datetime | None = None
        self.finished = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the rounds (the owner cancels and awaits `task` on shutdown)."""
        self.task = asyncio.create_task(self._run(), name=f"journey-group-{self.group_id}")

    def wake(self) -> None:
        """Run a round soon: new events, requests, released work, or another replica's news."""
        self._wake.set()

    def end_all(self, error: JourneyError | None) -> None:
        """End every member's stream."""
        for member in list(self.members.values()):
            member.end(error)
        self.members.clear()
        self.wake()

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self.members:
                # Synchronously with the check: a join from now on starts a new dispatcher.
                self.finished = True
                return
            self._wake.clear()
            members = list(self.members.values())
            taken = {m.id: m.take() for m in members}
            ops = {member_id: o for member_id, (o, _) in taken.items() if o != MemberOps()}
            rooms = {member_id: room for member_id, (_, room) in taken.items()}
            now = self._clock.now()
            expire = self._expire_at is None or now >= self._expire_at
            if expire:
                self._expire_at = now + timedelta(seconds=POLL_SECONDS)
            try:
                done = await self._run_round(ops, rooms, now, expire)
            except Exception as error:
                for member in members:
                    if member.id in ops:
                        member.give_back(ops[member.id])
                failures += 1
                if failures == 1:
                    log.warning("consumer group round failed, retrying: %r", error)
                if isinstance(error, JourneyError) and not isinstance(error, Unavailable):
                    self.end_all(error)
                    continue
                await asyncio.sleep(
                    min(MIN_BACKOFF_SECONDS * 2 ** min(failures - 1, 10), MAX_BACKOFF_SECONDS)
                )
                continue
            failures = 0
            if not done.exists:
                self.end_all(NotFound("the consumer group was deleted"))
                continue
            wait = self._deliver(done, members)
            if done.more or any(m.has_requests for m in self.members.values()):
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait.seconds):
                    await self._wake.wait()

    def _deliver(self, done: Round, members: list[Member]) -> _Wait:
        by_id = {m.id: m for m in members}
        for member_id, (settled, ignored) in done.settled.items():
            member = by_id.get(member_id)
            if member is None or member.ended:
                continue
            for delivery_id in (*settled, *ignored):
                member.outstanding.pop(delivery_id, None)
            if settled or ignored:
                member.outbox.put_nowait(Settled(tuple(settled), tuple(ignored)))
        batches: dict[str, list[Delivery]] = {}
        for member_id, delivery in done.deliveries:
            batches.setdefault(member_id, []).append(delivery)
        for member_id, batch in batches.items():
            member = by_id.get(member_id)
            if member is None or member.ended:
                # Gone meanwhile: its release (queued after this round) gives these back.
                continue
            member.outstanding.update((d.delivery_id, d.position) for d in batch)
            member.outbox.put_nowait(batch)
        seconds = POLL_SECONDS
        if done.next_due is not None:
            if self._expire_at is None or done.next_due < self._expire_at:
                self._expire_at = done.next_due
            until = (done.next_due - self._clock.now()).total_seconds()
            seconds = min(seconds, max(until, 0.0))
        return _Wait(seconds)
