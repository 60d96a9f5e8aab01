"""Delivery rules on one server: settle, flow control, nack, reject, dead letters, timeouts."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.empty_pb2 import Empty

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.groups.members import Member, positions
from tests.integration.harness import Harness, serving


def seconds(value: float) -> Duration:
    message = Duration()
    message.FromTimedelta(timedelta(seconds=value))
    return message


async def create(h: Harness, name: str = "g", **fields: object) -> pb.ConsumerGroupServiceAsyncStub:
    groups = pb.ConsumerGroupServiceStub(h.channel)
    await groups.CreateConsumerGroup(
        pb.CreateConsumerGroupRequest(name=name, beginning=Empty(), **fields)  # type: ignore[arg-type]
    )
    return groups


async def group(groups: pb.ConsumerGroupServiceAsyncStub, name: str = "g") -> pb.ConsumerGroup:
    return await groups.GetConsumerGroup(pb.GetConsumerGroupRequest(name=name))


async def test_max_in_flight_is_held_and_settled_comes_before_the_slot_is_reused(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        groups = await create(h)
        for i in range(3):
            await h.track("page-view", profile_id=f"p{i}", session_id=f"s{i}")  # 3 events each
        member = Member(groups, "g", max_in_flight=2).open()
        first = await member.deliveries(2)
        assert positions(first) == [1, 2]
        assert [d.attempt for d in first] == [1, 1]
        # No third while two are unsettled.
        with pytest.raises(TimeoutError):
            await member.read(seconds=0.5)
        member.ack(first[0].delivery_id)
        # The next response settles it; only then may a delivery use its slot.
        response = await member.read()
        assert list(response.settled.delivery_ids) == [first[0].delivery_id]
        assert positions(await member.deliveries(1)) == [3]
        state = await group(groups)
        assert (state.in_flight_count, state.pending_count, state.ack_floor) == (2, 8, 1)
        assert state.member_count == 1
        # Everything acked: the floor is the log's end, nothing pending.
        while len(member.settled) < 9:
            if member.holding:
                member.ack(*member.holding)
            await member.read()
        state = await group(groups)
        assert (state.pending_count, state.in_flight_count, state.ack_floor) == (0, 0, 9)
        assert not state.HasField("oldest_pending_time")
        # An acked event is never delivered again.
        assert sorted(positions(member.received)) == list(range(1, 10))


async def test_overlapping_groups_each_get_every_matching_event(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        groups = await create(h, "all")
        await create(
            h,
            "visits",
            filter=pb.SystemEventFilter(types=[pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_STARTED]),
        )
        everyone = Member(groups, "all").open()
        visits = Member(groups, "visits").open()
        await h.track("page-view", profile_id="p", session_id="s")
        assert positions(await everyone.deliveries(3)) == [1, 2, 3]
        got = await visits.deliveries(1)
        assert got[0].event.type == pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_STARTED


async def test_nack_reject_and_max_attempts_dead_letter_and_redrive_delivers_again(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        groups = await create(h, max_attempts=2)
        await h.track("page-view", profile_id="p", session_id="s")  # positions 1, 2, 3
        member = Member(groups, "g").open()
        first = {d.event.position: d for d in await member.deliveries(3)}
        member.nack(first[1].delivery_id, delay=timedelta(0))
        member.reject(first[2].delivery_id, reason="cannot parse")
        member.ack(first[3].delivery_id)
        await member.until_settled(*(d.delivery_id for d in first.values()))
        while len(member.received) < 4:
            await member.read()
        again = member.received[3:]
        assert (positions(again), again[0].attempt) == ([1], 2)
        assert set(member.settled) == {d.delivery_id for d in first.values()}
        # The second nack is the last attempt: dead.
        member.nack(again[0].delivery_id, delay=timedelta(0))
        await member.until_settled(again[0].delivery_id)
        state = await group(groups)
        assert (state.dead_letter_count, state.pending_count, state.ack_floor) == (2, 0, 3)
        letters = (await groups.ListDeadLetters(pb.ListDeadLettersRequest(name="g"))).dead_letters
        assert [(d.event.position, d.attempts, d.reason) for d in letters] == [
            (1, 2, "max attempts"),
            (2, 1, "cannot parse"),
        ]
        assert letters[0].event == (await h.all_events())[0]
        assert all(d.dead_letter_time.seconds > 0 for d in letters)
        page = await groups.ListDeadLetters(pb.ListDeadLettersRequest(name="g", page_size=1))
        assert page.next_page_token
        rest = await groups.ListDeadLetters(
            pb.ListDeadLettersRequest(name="g", page_size=1, page_token=page.next_page_token)
        )
        assert [d.event.position for d in rest.dead_letters] == [2]
        assert not rest.next_page_token

        redriven = await groups.RedriveDeadLetters(pb.RedriveDeadLettersRequest(name="g"))
        assert redriven.count == 2
        back = await member.deliveries(2)
        assert (positions(back), [d.attempt for d in back]) == ([1, 2], [1, 1])
        assert (await group(groups)).dead_letter_count == 0


async def test_ack_timeout_redelivers_extend_restarts_it_and_a_late_ack_is_ignored(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        groups = await create(h, ack_timeout=seconds(1))
        await h.track("page-view", profile_id="p", session_id="s")
        slow = Member(groups, "g", max_in_flight=2).open()
        kept, dropped = await slow.deliveries(2)
        # Keep extending one of them for longer than the timeout.
        for _ in range(4):
            slow.extend(kept.delivery_id)
            await asyncio.sleep(0.4)
        slow.extend(kept.delivery_id)
        other = Member(groups, "g").open()
        got = await other.deliveries(2, seconds=5)
        # The third event (never held) and the dropped one, again; never the extended one.
        assert sorted(positions(got)) == sorted([3, dropped.event.position])
        again = next(d for d in got if d.event.position == dropped.event.position)
        assert again.attempt == 2
        # Too late: the event went to `other`. The ack frees the slot but does not count.
        slow.ack(dropped.delivery_id, kept.delivery_id)
        await slow.until_settled(dropped.delivery_id, kept.delivery_id)
        assert (slow.settled, slow.ignored) == ([kept.delivery_id], [dropped.delivery_id])
        other.ack(*(d.delivery_id for d in got))
        await other.until_settled(*(d.delivery_id for d in got))
        state = await group(groups)
        assert (state.pending_count, state.ack_floor) == (0, 3)


async def test_a_member_that_goes_away_gives_its_work_to_the_others_at_once(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        groups = await create(h)  # ack_timeout 30 s
        await h.track("page-view", profile_id="p", session_id="s")
        leaving = Member(groups, "g").open()
        held = await leaving.deliveries(3)
        staying = Member(groups, "g").open()
        with pytest.raises(TimeoutError):
            await staying.read(seconds=0.3)
        leaving.close()
        got = await staying.deliveries(3, seconds=3)
        assert sorted(positions(got)) == positions(held)
        assert {d.attempt for d in got} == {2}


async def test_deleting_a_group_ends_its_streams_not_found(make_settings: SettingsFactory) -> None:
    async with serving(make_settings()) as h:
        groups = await create(h)
        member = Member(groups, "g").open()
        await h.track("page-view", profile_id="p", session_id="s")
        await member.deliveries(3)
        await groups.DeleteConsumerGroup(pb.DeleteConsumerGroupRequest(name="g"))
        assert await member.status() == grpc.StatusCode.NOT_FOUND


async def test_timeout_driven_events_reach_groups(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        visit_timeout=timedelta(seconds=1), session_timeout=timedelta(seconds=1)
    )
    async with serving(settings) as h:
        groups = await create(
            h,
            filter=pb.SystemEventFilter(
                types=[
                    pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED,
                    pb.SystemEventType.SYSTEM_EVENT_TYPE_SESSION_CLOSED,
                ]
            ),
        )
        member = Member(groups, "g").open()
        await h.track("page-view", profile_id="p", session_id="s")
        got = await member.deliveries(2, seconds=10)
        assert [d.event.type for d in got] == [
            pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED,
            pb.SystemEventType.SYSTEM_EVENT_TYPE_SESSION_CLOSED,
        ]


async def test_a_redriven_event_waits_for_its_key_and_blocks_the_rest(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        groups = await create(h, ordering=pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION)
        # 1 profile-created (key p), 2 session-opened and 3 visit-started (key s).
        await h.track("page-view", profile_id="p", session_id="s")
        member = Member(groups, "g").open()
        first = await member.deliveries(2)
        assert positions(first) == [1, 2]
        member.reject(first[1].delivery_id, reason="bad")  # 2 dead: 3 is next for key s
        third = await member.deliveries(1)
        assert positions(third) == [3]
        await groups.RedriveDeadLetters(pb.RedriveDeadLettersRequest(name="g"))
        # 2 is back, but 3 of its key is in flight: 2 waits for it.
        with pytest.raises(TimeoutError):
            await member.deliveries(1, seconds=0.5)
        member.ack(third[0].delivery_id)
        again = await member.deliveries(1)
        assert (positions(again), again[0].attempt) == ([2], 1)


async def test_a_head_dead_lettered_by_its_ack_timeout_lets_its_key_go_on(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        groups = await create(
            h,
            ordering=pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION,
            ack_timeout=seconds(1),
            max_attempts=1,
        )
        # 1 profile-created (key p), 2 session-opened and 3 visit-started (key s).
        await h.track("page-view", profile_id="p", session_id="s")
        member = Member(groups, "g").open()
        first = await member.deliveries(2)
        assert positions(first) == [1, 2]
        member.ack(first[0].delivery_id)
        # 2 is never answered: at its timeout, out of attempts, it is dead and 3 may go.
        third = await member.deliveries(1, seconds=5)
        assert (positions(third), third[0].attempt) == ([3], 1)
        letters = await groups.ListDeadLetters(pb.ListDeadLettersRequest(name="g"))
        assert [(d.event.position, d.reason) for d in letters.dead_letters] == [(2, "ack timeout")]


async def test_a_graceful_stop_ends_streams_unavailable_and_gives_their_work_back(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    async with serving(settings) as h:
        groups = await create(h)
        await h.track("page-view", profile_id="p", session_id="s")
        member = Member(groups, "g").open()
        await member.deliveries(3)
        await h.server.stop(5.0)
        assert await member.status() == grpc.StatusCode.UNAVAILABLE
    # Given back as the stream ended, not 30 s (ack_timeout) later, nor 5 s (heartbeats).
    async with serving(settings) as h:
        groups = pb.ConsumerGroupServiceStub(h.channel)
        again = await Member(groups, "g").open().deliveries(3, seconds=3)
        assert ([d.attempt for d in again], positions(again)) == ([2, 2, 2], [1, 2, 3])
