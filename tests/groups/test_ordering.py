"""Per-session order with four members sharing 1,000 sessions, nacks and crashes included."""

from __future__ import annotations

import asyncio
import random

from google.protobuf.empty_pb2 import Empty

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.groups.checker import Checker, Worker
from tests.integration.harness import Harness, serving

SESSIONS = 1000


async def track_sessions(h: Harness, count: int, *, end: bool) -> None:
    """Each session: a Track (three events), then, with `end`, an EndSession (two more)."""
    limit = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with limit:
            await h.track("page-view", profile_id=f"p{i}", session_id=f"s{i}")
            if end:
                await h.sessions.EndSession(pb.EndSessionRequest(session_id=f"s{i}"))

    await asyncio.gather(*(one(i) for i in range(count)))


async def all_acked(
    groups: pb.ConsumerGroupServiceAsyncStub, checker: Checker, total: int, seconds: float
) -> None:
    """Until every event was acked (an ack cut off by a crash counts when the group says so)."""
    state = pb.ConsumerGroup()
    try:
        async with asyncio.timeout(seconds):
            while True:
                if len(checker.ack_sent) == total:
                    state = await groups.GetConsumerGroup(pb.GetConsumerGroupRequest(name="g"))
                    if state.pending_count == 0 and state.dead_letter_count == 0:
                        return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(
            f"{len(checker.ack_sent)} of {total} acked, {checker.deliveries} deliveries, "
            f"errors {checker.errors[:5]}, group {state}"
        ) from None


async def test_session_order_holds_with_four_members_nacks_and_crashes(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        groups = pb.ConsumerGroupServiceStub(h.channel)
        await groups.CreateConsumerGroup(
            pb.CreateConsumerGroupRequest(
                name="g",
                beginning=Empty(),
                max_attempts=100,
                ordering=pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION,
            )
        )
        checker = Checker()
        workers = [
            Worker(
                i,
                lambda: pb.ConsumerGroupServiceStub(h.channel),
                "g",
                checker,
                nack_rate=0.05,
                crash_rate=0.001,
                max_in_flight=50,
                rng=random.Random(i),
            )
            for i in range(4)
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            # Consumed while they are tracked: live events and backlog alike.
            await track_sessions(h, SESSIONS, end=True)
            total = len(await h.all_events())
            await all_acked(groups, checker, total, 40)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert checker.errors == []
        assert total == SESSIONS * 5
        # Every key's events went in position order (redeliveries repeat a position, never skip).
        for key, seen in checker.by_key.items():
            assert seen == sorted(seen), key
        state = await groups.GetConsumerGroup(pb.GetConsumerGroupRequest(name="g"))
        assert (state.pending_count, state.ack_floor) == (0, total)
        # The run did exercise redelivery: nacks and crashes happened.
        assert checker.deliveries > total
        assert sum(w.crashes for w in workers) > 0
