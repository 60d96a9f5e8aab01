"""Consumer groups' pure rules and the delivery bytes, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from journey.api import convert, encoding
from journey.domain.groups import (
    Ack,
    Delivery,
    Nack,
    Ordering,
    Reject,
    assign,
    backoff,
    exhausted,
    ordering_key,
)
from journey.domain.model import SystemEvent, SystemEventType
from journey.streaming.dispatch import Member
from journey_client import pb


def test_work_is_dealt_in_turn_to_the_members_with_room() -> None:
    dealt = assign(list(range(7)), {"a": 3, "b": 1, "c": 0, "d": 5})
    assert dealt == [("a", 0), ("b", 1), ("d", 2), ("a", 3), ("d", 4), ("a", 5), ("d", 6)]
    assert assign([1, 2], {"a": 0}) == []
    # More items than room: the first ones are dealt (a round leaves the rest pending).
    dealt = assign(list(range(12)), {"a": 2, "b": 3})
    assert [item for _, item in dealt] == [0, 1, 2, 3, 4]


def test_backoff_doubles_from_one_second_up_to_the_ack_timeout() -> None:
    timeout = timedelta(seconds=10)
    assert [backoff(a, timeout).total_seconds() for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert exhausted(5, 5)
    assert not exhausted(4, 5)


def test_the_ordering_key() -> None:
    assert ordering_key(Ordering.SESSION, "s", "p") == "s"
    assert ordering_key(Ordering.SESSION, "", "p") == "p"  # profile-created has no session
    assert ordering_key(Ordering.PROFILE, "s", "p") == "p"
    assert ordering_key(Ordering.NONE, "s", "p") == ""


def test_delivery_bytes_parse_as_the_message_protobuf_would_build() -> None:
    event = SystemEvent(
        position=7,
        id="e",
        type=SystemEventType.VISIT_ENDED,
        occur_time=datetime(2026, 1, 1, tzinfo=UTC),
        profile_id="p",
        session_id="s",
        source_id="web",
        properties={"n": 1},
        trace_context={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    )
    stored = encoding.encode(event)
    batch = [Delivery("id-1", 1, 7, stored), Delivery("id-2", 300, 7, stored)]
    (message,) = list(encoding.deliveries(batch))
    expected = pb.ConsumeResponse(
        deliveries=pb.Deliveries(
            deliveries=[
                pb.Delivery(delivery_id="id-1", attempt=1, event=convert.system_event(event)),
                pb.Delivery(delivery_id="id-2", attempt=300, event=convert.system_event(event)),
            ]
        )
    )
    assert pb.ConsumeResponse.FromString(message) == expected


def test_a_member_asks_only_about_what_it_holds_and_its_room_counts_what_settles() -> None:
    member = Member("m", "g", max_in_flight=3)
    member.outstanding.update({"a": 1, "b": 2, "c": 3})
    member.ask(Ack(("a", "stranger")))
    member.ask(Nack(("b",), None))
    member.ask(Reject(("nobody",), "x"))
    ops, room = member.take()
    assert (ops.acks, ops.nacks, ops.rejects) == (("a",), (("b", None),), ())
    assert ops.positions == {"a": 1, "b": 2}  # a round finds their entries by position
    # a and b settle in this round, so two slots can be used in it (after the Settled).
    assert room == 2
    assert not member.has_requests


def test_an_id_settled_between_its_ask_and_the_next_round_has_no_position() -> None:
    member = Member("m", "g", max_in_flight=2)
    member.outstanding.update({"a": 1, "b": 2})
    member.ask(Ack(("a",)))
    member.ask(Ack(("a", "b")))  # "a" again, before the round that settles it has ended
    del member.outstanding["a"]  # that round settled "a"
    ops, _ = member.take()
    assert ops.positions == {"b": 2}
