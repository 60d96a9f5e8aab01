"""Each consumer group's backlog in /metrics, read at scrape time."""

from __future__ import annotations

from google.protobuf.empty_pb2 import Empty

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.groups.members import Member
from tests.integration.harness import serving
from tests.observability.scrape import scrape


async def test_a_scrape_reports_each_groups_backlog(make_settings: SettingsFactory) -> None:
    async with serving(make_settings(metrics_listen="127.0.0.1:0")) as h:
        groups = pb.ConsumerGroupServiceStub(h.channel)
        await groups.CreateConsumerGroup(pb.CreateConsumerGroupRequest(name="g", beginning=Empty()))
        await h.track("page-view", profile_id="p", session_id="s")
        before = await scrape(h.server.metrics_port)
        assert before.value("journey_consumer_group_pending_events", group="g") == 3
        assert before.value("journey_consumer_group_in_flight_events", group="g") == 0
        assert before.value("journey_consumer_group_oldest_pending_age_seconds", group="g") > 0
        member = Member(groups, "g").open()
        got = await member.deliveries(3)
        member.reject(got[0].delivery_id, reason="no")
        await member.until_settled(got[0].delivery_id)
        after = await scrape(h.server.metrics_port)
        assert after.value("journey_consumer_group_in_flight_events", group="g") == 2
        assert after.value("journey_consumer_group_dead_letters", group="g") == 1
        assert after.value("journey_consumer_group_pending_events", group="g") == 2
