"""Subscribe's servicer without a server: what it writes for a delivery, by max_batch_size."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from journey.api.encoding import encode
from journey.api.servicers import MAX_BATCH_SIZE, SystemEventServicer
from journey.domain.model import EncodedEvent, SystemEvent, SystemEventFilter, SystemEventType
from journey.streaming.follow import Delivery, StreamItem
from journey_client import pb

BACKLOG = 2_500


class OneDelivery:
    """Stands in for Follow: one delivery of a backlog of BACKLOG events, then the end."""

    async def stream(
        self, event_filter: SystemEventFilter, start: str | int
    ) -> AsyncIterator[StreamItem]:
        events = [
            SystemEvent(
                p,
                f"e{p}",
                SystemEventType.VISIT_ENDED,
                datetime(2026, 1, 1, tzinfo=UTC),
                "p",
                "s",
                "web",
                {},
            )
            for p in range(1, BACKLOG + 1)
        ]
        yield Delivery([EncodedEvent(e.position, encode(e)) for e in events])


class Written:
    """Stands in for the servicer context: keeps what is written."""

    def __init__(self) -> None:
        self.messages: list[pb.SubscribeResponse] = []

    async def write(self, data: bytes) -> None:
        self.messages.append(pb.SubscribeResponse.FromString(data))


async def written(max_batch_size: int) -> list[pb.SubscribeResponse]:
    servicer = SystemEventServicer(cast(Any, None), cast(Any, OneDelivery()))
    context = Written()
    request = pb.SubscribeRequest(max_batch_size=max_batch_size)
    async for _ in servicer.Subscribe(request, cast(Any, context)):
        pass
    return context.messages


@pytest.mark.parametrize(
    ("asked", "sizes"),
    [
        (5_000, [1_000, 1_000, 500]),  # above the maximum means the maximum
        (1_000, [1_000, 1_000, 500]),
        (700, [700, 700, 700, 400]),
    ],
)
async def test_a_backlog_goes_out_in_batches_of_at_most_the_size_asked(
    asked: int, sizes: list[int]
) -> None:
    messages = await written(asked)
    assert [len(m.batch.events) for m in messages] == sizes
    assert MAX_BATCH_SIZE == 1_000
    positions = [e.position for m in messages for e in m.batch.events]
    assert positions == list(range(1, BACKLOG + 1))


@pytest.mark.parametrize("asked", [0, 1])
async def test_zero_or_one_writes_one_event_per_message(asked: int) -> None:
    messages = await written(asked)
    assert [m.WhichOneof("content") for m in messages] == ["event"] * BACKLOG
    assert [m.event.position for m in messages] == list(range(1, BACKLOG + 1))
