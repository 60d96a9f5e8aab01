"""Batches built by concatenating cached bytes are what protobuf itself would send."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journey.api import convert, encoding
from journey.api.encoding import encode, messages
from journey.domain.model import EncodedEvent, SystemEvent, SystemEventType
from journey_client import pb

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(position: int, padding: int = 0) -> SystemEvent:
    return SystemEvent(
        position,
        f"id-{position}",
        SystemEventType.VISIT_ENDED,
        T0 + timedelta(microseconds=position),
        "profile",
        "session",
        "web",
        {"reason": "x" * padding, "visit_number": position},
    )


def encoded(events: list[SystemEvent]) -> list[EncodedEvent]:
    return [EncodedEvent(e.position, encode(e)) for e in events]


def decoded(message: bytes) -> pb.SubscribeResponse:
    return pb.SubscribeResponse.FromString(message)


@given(
    paddings=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40),
    max_batch_size=st.integers(min_value=2, max_value=50),
)
def test_a_batch_parses_as_the_batch_protobuf_would_send(
    paddings: list[int], max_batch_size: int
) -> None:
    # Paddings up to 3,000 bytes make lengths whose varints take one, two and three bytes.
    events = [event(i + 1, p) for i, p in enumerate(paddings)]
    sent: list[pb.SystemEvent] = []
    for message in messages(encoded(events), max_batch_size):
        response = decoded(message)
        assert response.WhichOneof("content") == "batch"
        assert 1 <= len(response.batch.events) <= max_batch_size
        # Not a byte comparison: protobuf may order a Struct's map entries differently each time.
        assert len(message) == response.ByteSize()
        sent.extend(response.batch.events)
    assert sent == [convert.system_event(e) for e in events]


def test_batches_take_at_most_max_batch_size_and_never_split_an_event() -> None:
    events = [event(i) for i in range(1, 8)]
    batches = [decoded(m) for m in messages(encoded(events), 3)]
    assert [[e.position for e in m.batch.events] for m in batches] == [[1, 2, 3], [4, 5, 6], [7]]


def test_a_batch_stops_at_max_batch_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    events = encoded([event(i, padding=100) for i in range(1, 6)])
    one = len(events[0].data)
    # Room for two events and a bit, not three.
    monkeypatch.setattr(encoding, "MAX_BATCH_BYTES", 2 * one + one // 2)
    batches = [decoded(m) for m in messages(events, 1000)]
    assert [[e.position for e in m.batch.events] for m in batches] == [[1, 2], [3, 4], [5]]


def test_an_event_bigger_than_max_batch_bytes_still_goes_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoding, "MAX_BATCH_BYTES", 10)
    batches = [decoded(m) for m in messages(encoded([event(1), event(2)]), 1000)]
    assert [[e.position for e in m.batch.events] for m in batches] == [[1], [2]]


@pytest.mark.parametrize("max_batch_size", [0, 1])
def test_zero_or_one_sends_each_event_alone_as_before(max_batch_size: int) -> None:
    events = [event(1), event(2)]
    sent = [decoded(m) for m in messages(encoded(events), max_batch_size)]
    assert sent == [pb.SubscribeResponse(event=convert.system_event(e)) for e in events]


@given(
    paddings=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
    token=st.text(max_size=40),
)
def test_a_list_response_parses_as_protobuf_would_send_it(paddings: list[int], token: str) -> None:
    events = [event(i + 1, p) for i, p in enumerate(paddings)]
    data = encoding.list_response(encoded(events), token)
    response = pb.ListSystemEventsResponse.FromString(data)
    assert list(response.system_events) == [convert.system_event(e) for e in events]
    assert response.next_page_token == token
    assert len(data) == response.ByteSize()


def test_the_trace_context_is_in_the_encoded_bytes() -> None:
    context = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    traced = dataclasses.replace(event(1), trace_context=context)
    assert dict(decoded(encode(traced)).event.trace_context) == context
    assert dict(decoded(encode(event(1))).event.trace_context) == {}
