"""Each system event is serialised once, at commit; every subscriber still gets the right bytes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from google.protobuf.empty_pb2 import Empty

from journey.api import convert, encoding
from journey.domain.model import SystemEvent
from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import serving

SUBSCRIBERS = 3


async def test_every_subscriber_gets_each_event_serialised_once(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted: list[int] = []

    def counting(event: SystemEvent) -> pb.SystemEvent:
        converted.append(event.position)
        return convert.system_event(event)

    monkeypatch.setattr(encoding, "convert", SimpleNamespace(system_event=counting))
    async with serving(make_settings()) as h:
        streams = [h.events.Subscribe(pb.SubscribeRequest(end=Empty())) for _ in range(SUBSCRIBERS)]
        for stream in streams:
            first = cast(pb.SubscribeResponse, await stream.read())
            assert first.WhichOneof("content") == "caught_up"
        replies = [await h.track(profile_id=f"p{i}") for i in range(2)]
        sent = [e for reply in replies for e in reply.system_events]
        assert len(sent) == 6

        async def events_of(stream: Any) -> list[pb.SystemEvent]:
            out: list[pb.SystemEvent] = []
            while len(out) < len(sent):
                message = cast(pb.SubscribeResponse, await stream.read())
                if message.WhichOneof("content") == "event":
                    out.append(message.event)
            return out

        async with asyncio.timeout(10):
            received = await asyncio.gather(*(events_of(s) for s in streams))
        for stream in streams:
            stream.cancel()
        stored = await h.all_events()
    # Byte for byte what Track answered and what the log holds, for every subscriber...
    for events in received:
        assert events == sent == stored
    # ...from one conversion per event, not one per subscriber.
    assert sorted(converted) == [e.position for e in sent]
