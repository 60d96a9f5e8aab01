"""Members on two replicas (PostgreSQL) share one group; a killed replica's work is taken back."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from journey.groups import STALE_AFTER
from journey_client import pb
from tests.faults.process import write_config
from tests.groups.checker import Checker, Worker
from tests.groups.members import Member
from tests.groups.test_crash import progress, seed
from tests.replicas.cluster import replicas, wiped_postgres

pytestmark = pytest.mark.slow

EVENTS = 4000


async def test_members_on_two_replicas_share_a_group_and_survive_one_being_killed(
    tmp_path: Path,
) -> None:
    database_url = await wiped_postgres()
    await seed(database_url, EVENTS)
    config = write_config(tmp_path, database_url)
    checker = Checker()
    channels: dict[str, grpc.aio.Channel] = {}
    # Worker i talks to replica targets[i]; a worker of the killed replica moves over.
    targets: list[str] = []

    def stub_for(i: int) -> pb.ConsumerGroupServiceAsyncStub:
        target = targets[i]
        if target not in channels:
            channels[target] = grpc.aio.insecure_channel(target)
        return pb.ConsumerGroupServiceStub(channels[target])

    tasks: list[asyncio.Task[None]] = []
    async with replicas(config, 2) as (servers, stubs):
        try:
            targets += [servers[i % 2].target for i in range(4)]
            groups = [pb.ConsumerGroupServiceStub(s.channel) for s in stubs]
            await groups[0].CreateConsumerGroup(
                pb.CreateConsumerGroupRequest(
                    name="g",
                    beginning=Empty(),
                    max_attempts=100,
                    ordering=pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION,
                )
            )
            workers = [
                Worker(
                    i,
                    lambda i=i: stub_for(i),  # type: ignore[misc]
                    "g",
                    checker,
                    nack_rate=0.02,
                    max_in_flight=20,
                    rng=random.Random(i),
                )
                for i in range(4)
            ]
            tasks = [asyncio.create_task(w.run()) for w in workers]
            state = await progress(groups[1], checker, EVENTS // 3, 30, EVENTS)
            # Both replicas' members hold work; the second replica sees all four.
            assert state.member_count == 4
            servers[0].kill()
            targets[:] = [servers[1].target] * 4
            # Its members' work comes back once their heartbeats are stale.
            state = await progress(
                groups[1], checker, EVENTS, 30 + STALE_AFTER.total_seconds(), EVENTS
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for channel in channels.values():
                await channel.close(None)
    assert checker.errors == []
    assert (state.pending_count, state.dead_letter_count, state.ack_floor) == (0, 0, EVENTS)
    for key, seen in checker.by_key.items():
        assert seen == sorted(seen), key


async def test_deleting_a_group_on_one_replica_ends_its_streams_on_the_other(
    tmp_path: Path,
) -> None:
    database_url = await wiped_postgres()
    config = write_config(tmp_path, database_url)
    async with replicas(config, 2) as (_, stubs):
        here, there = (pb.ConsumerGroupServiceStub(s.channel) for s in stubs)
        await here.CreateConsumerGroup(pb.CreateConsumerGroupRequest(name="g"))
        member = Member(there, "g").open()
        # Joined (and counted on every replica) before the delete.
        async with asyncio.timeout(10):
            while (
                await here.GetConsumerGroup(pb.GetConsumerGroupRequest(name="g"))
            ).member_count < 1:
                await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        await here.DeleteConsumerGroup(pb.DeleteConsumerGroupRequest(name="g"))
        assert await member.status(seconds=5) == grpc.StatusCode.NOT_FOUND
        # Told by NOTIFY (or, at worst, the next second's round), not left open.
        assert asyncio.get_running_loop().time() - started < 2.5
