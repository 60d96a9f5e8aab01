"""Smoke."""

from __future__ import annotations

from google.protobuf.empty_pb2 import Empty

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.groups.members import Member, positions
from tests.integration.harness import serving


async def test_smoke(make_settings: SettingsFactory) -> None:
    async with serving(make_settings()) as h:
        groups = pb.ConsumerGroupServiceStub(h.channel)
        group = await groups.CreateConsumerGroup(
            pb.CreateConsumerGroupRequest(name="g", beginning=Empty())
        )
        print(group)
        await h.track("page-view", profile_id="p1", session_id="s1")
        member = Member(groups, "g").open()
        got = await member.deliveries(3)
        print(positions(got), [d.attempt for d in got])
        member.ack(*(d.delivery_id for d in got))
        await member.until_settled(*(d.delivery_id for d in got))
        print(await groups.GetConsumerGroup(pb.GetConsumerGroupRequest(name="g")))
        member.close()
