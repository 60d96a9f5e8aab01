"""Creating, reading, listing and deleting consumer groups; refused requests."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.empty_pb2 import Empty
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.groups.members import Member
from tests.integration.harness import serving, status_of


def _seconds(value: float) -> Duration:
    message = Duration()
    message.FromTimedelta(timedelta(seconds=value))
    return message


def bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a BadRequest detail names."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        assert detail.Unpack(request)
        found += [v.field for v in request.field_violations]
    return found


async def test_create_is_idempotent_lists_in_pages_and_delete_frees_the_name(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        groups = pb.ConsumerGroupServiceStub(h.channel)
        await h.track("page-view", profile_id="p1", session_id="s1")
        request = pb.CreateConsumerGroupRequest(
            name="followups",
            filter=pb.SystemEventFilter(types=[pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_STARTED]),
            ack_timeout=_seconds(5),
            max_attempts=3,
            ordering=pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION,
            beginning=Empty(),
        )
        created = await groups.CreateConsumerGroup(request)
        assert (created.name, created.max_attempts, created.ack_timeout.seconds) == (
            "followups",
            3,
            5,
        )
        # The stored visit-started counts as pending before any member has asked for it.
        assert (created.pending_count, created.oldest_pending_time.seconds > 0) == (1, True)
        # Same settings (another start point does not count): the same group.
        again = pb.CreateConsumerGroupRequest()
        again.CopyFrom(request)
        again.end.SetInParent()
        assert (await groups.CreateConsumerGroup(again)).create_time == created.create_time
        # Other settings: refused.
        other = pb.CreateConsumerGroupRequest()
        other.CopyFrom(request)
        other.max_attempts = 4
        assert await status_of(groups.CreateConsumerGroup(other)) == (
            grpc.StatusCode.ALREADY_EXISTS
        )
        # Defaults: 30 s, 5 attempts, NONE; starting at the end, nothing is pending.
        plain = await groups.CreateConsumerGroup(pb.CreateConsumerGroupRequest(name="audit"))
        assert (plain.ack_timeout.seconds, plain.max_attempts, plain.pending_count) == (30, 5, 0)
        assert plain.ack_floor == created.pending_count + 2  # the three events tracked so far

        first = await groups.ListConsumerGroups(pb.ListConsumerGroupsRequest(page_size=1))
        assert [g.name for g in first.consumer_groups] == ["audit"]
        assert first.next_page_token
        second = await groups.ListConsumerGroups(
            pb.ListConsumerGroupsRequest(page_size=1, page_token=first.next_page_token)
        )
        assert [g.name for g in second.consumer_groups] == ["followups"]
        assert second.next_page_token == ""

        await groups.DeleteConsumerGroup(pb.DeleteConsumerGroupRequest(name="followups"))
        for call in (
            groups.GetConsumerGroup(pb.GetConsumerGroupRequest(name="followups")),
            groups.DeleteConsumerGroup(pb.DeleteConsumerGroupRequest(name="followups")),
            groups.ListDeadLetters(pb.ListDeadLettersRequest(name="followups")),
            groups.RedriveDeadLetters(pb.RedriveDeadLettersRequest(name="followups")),
        ):
            assert await status_of(call) == grpc.StatusCode.NOT_FOUND
        # The name is free again, with other settings.
        assert (await groups.CreateConsumerGroup(other)).max_attempts == 4


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.CreateConsumerGroupRequest(name=""), "name"),
        (pb.CreateConsumerGroupRequest(name="-starts-badly"), "name"),
        (pb.CreateConsumerGroupRequest(name="Upper"), "name"),
        (pb.CreateConsumerGroupRequest(name="x" * 65), "name"),
        (pb.CreateConsumerGroupRequest(name="g", ack_timeout=_seconds(0.5)), "ack_timeout"),
        (pb.CreateConsumerGroupRequest(name="g", ack_timeout=_seconds(3601)), "ack_timeout"),
        (pb.CreateConsumerGroupRequest(name="g", max_attempts=101), "max_attempts"),
        (pb.CreateConsumerGroupRequest(name="g", ordering=9), "ordering"),  # type: ignore[arg-type]
        (
            pb.CreateConsumerGroupRequest(name="g", filter=pb.SystemEventFilter(types=[42])),  # type: ignore[list-item]
            "filter.types[0]",
        ),
    ],
)
async def test_a_bad_create_is_invalid_argument_naming_the_field(
    make_settings: SettingsFactory, request_: pb.CreateConsumerGroupRequest, field: str
) -> None:
    async with serving(make_settings()) as h:
        groups = pb.ConsumerGroupServiceStub(h.channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await groups.CreateConsumerGroup(request_)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(caught.value) == [field]


async def test_consume_errors(make_settings: SettingsFactory) -> None:
    async with serving(make_settings()) as h:
        groups = pb.ConsumerGroupServiceStub(h.channel)
        late = await groups.CreateConsumerGroup(
            pb.CreateConsumerGroupRequest(name="g", after_position=0)
        )
        assert late.ack_floor == 0
        # A start point past the log's end.
        assert await status_of(
            groups.CreateConsumerGroup(pb.CreateConsumerGroupRequest(name="h", after_position=99))
        ) == (grpc.StatusCode.OUT_OF_RANGE)

        unknown = Member(groups, "nope").open()
        assert await unknown.status() == grpc.StatusCode.NOT_FOUND

        not_start = Member(
            groups, "g", first=pb.ConsumeRequest(ack=pb.Ack(delivery_ids=["x"]))
        ).open()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await not_start.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(caught.value) == ["start"]

        # Acks for ids this member never held are ignored; the stream goes on.
        member = Member(groups, "g").open()
        member.ack("never-delivered")
        member.send(pb.ConsumeRequest(start=pb.ConsumeStart(group="g")))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await member.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(caught.value) == ["start"]
        assert member.received == []
        assert member.settled == []
