"""Errors and limits: one BadRequest violation per bad field, max_subscribers, message size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from journey.app import server_options
from journey.config import Settings
from journey_client import pb
from tests.integration.harness import Harness, serving

EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


def sqlite_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serving(sqlite_settings(tmp_path, max_subscribers=3)) as h:
        yield h


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations in the error's status details."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: list[tuple[str, str]] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found


async def test_a_request_with_several_bad_fields_lists_each_once(server: Harness) -> None:
    long = "x" * 129
    request = pb.TrackRequest(
        source_id="",
        profile_id=long,
        session_id=long,
        events=[
            pb.TrackedEvent(type="ok"),
            pb.TrackedEvent(type="", id=long),
            pb.TrackedEvent(type=long),
        ],
    )
    request.events[0].occur_time.seconds = 253_402_300_800  # year 10000
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server.tracker.Track(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [field for field, _ in violations(raised.value)]
    assert sorted(fields) == sorted(
        [
            "source_id",
            "profile_id",
            "session_id",
            "events[0].occur_time",
            "events[1].id",
            "events[1].type",
            "events[2].type",
        ]
    )
    # The message names every field too, for clients that do not read details.
    for field in fields:
        assert field in (raised.value.details() or "")


async def test_list_system_events_lists_each_bad_field(server: Harness) -> None:
    request = pb.ListSystemEventsRequest(
        filter=pb.SystemEventFilter(types=[1, 99, 100], profile_id="p" * 200),  # type: ignore[list-item]
        page_size=-1,
    )
    request.start_time.seconds = -62_135_596_801
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server.events.ListSystemEvents(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(f for f, _ in violations(raised.value)) == [
        "filter.profile_id",
        "filter.types[1]",
        "filter.types[2]",
        "page_size",
        "start_time",
    ]


async def open_subscription(
    h: Harness,
) -> grpc.aio.UnaryStreamCall[pb.SubscribeRequest, pb.SubscribeResponse]:
    stream = h.events.Subscribe(pb.SubscribeRequest())
    message = await stream.read()  # caught_up: the stream is open on the server
    assert message is not EOF
    return stream


async def test_max_subscribers_refuses_one_more_with_resource_exhausted(server: Harness) -> None:
    streams = [await open_subscription(server) for _ in range(3)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await open_subscription(server)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_subscribers (3)" in (raised.value.details() or "")
    # Other calls are not limited.
    await server.track("page-view")
    # A cancelled stream frees its place.
    streams.pop().cancel()
    async with asyncio.timeout(10):
        while True:
            try:
                streams.append(await open_subscription(server))
                break
            except grpc.aio.AioRpcError as error:
                # The server sees the cancellation a moment after the client.
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                await asyncio.sleep(0.05)
    for stream in streams:
        stream.cancel()


async def test_a_message_over_max_receive_message_size_is_refused(tmp_path: Path) -> None:
    async with serving(sqlite_settings(tmp_path, max_receive_message_size=2048)) as h:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await h.track("page-view", text="x" * 4096)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        response = await h.track("page-view", text="small")
        assert len(response.event_ids) == 1


async def test_keepalive_and_connection_age_options_reach_grpc(tmp_path: Path) -> None:
    settings = sqlite_settings(
        tmp_path,
        keepalive_time=timedelta(seconds=30),
        keepalive_timeout=timedelta(seconds=5),
        max_connection_age=timedelta(minutes=10),
        max_connection_age_grace=timedelta(seconds=20),
        max_send_message_size=1 << 20,
        keepalive_min_ping_interval=timedelta(seconds=20),
    )
    assert dict(server_options(settings)) == {
        # A plain server owns its port; only --workers share one (server_options' docstring).
        "grpc.so_reuseport": 0,
        "grpc.max_receive_message_length": 4 * 1024 * 1024,
        "grpc.max_send_message_length": 1 << 20,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.min_ping_interval_without_data_ms": 18_000,
        "grpc.max_connection_age_ms": 600_000,
        "grpc.max_connection_age_grace_ms": 20_000,
    }
    # Age limits are off by default: grpc's own default (none) applies.
    assert "grpc.max_connection_age_ms" not in dict(server_options(sqlite_settings(tmp_path)))
    assert dict(server_options(settings, reuse_port=True))["grpc.so_reuseport"] == 1
    async with serving(settings) as h:
        assert len((await h.track("page-view")).event_ids) == 1


async def test_a_response_over_max_send_message_size_is_refused(tmp_path: Path) -> None:
    async with serving(sqlite_settings(tmp_path, max_send_message_size=4096)) as h:
        for i in range(40):
            await h.track("page-view", session_id=f"s{i}")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await h.events.ListSystemEvents(pb.ListSystemEventsRequest(page_size=1000))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        small = await h.events.ListSystemEvents(pb.ListSystemEventsRequest(page_size=2))
        assert len(small.system_events) == 2
