"""A live server's /metrics: exact counts after Tracks, refusals, a subscription and a timeout."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from journey.app import StartupError, create_server
from journey.clock import ManualClock
from journey.config import Settings, Source
from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import serving, status_of
from tests.observability.scrape import Scrape, scrape

START = datetime(2030, 1, 1, tzinfo=UTC)
VISIT_TIMEOUT = timedelta(seconds=30)
TRACKER = "journey.v1.TrackerService"
EVENTS = "journey.v1.SystemEventService"


def track(s: Scrape, name: str, **labels: str) -> float:
    return s.value(name, grpc_type="unary", grpc_service=TRACKER, grpc_method="Track", **labels)


def subscribe(s: Scrape, name: str, **labels: str) -> float:
    return s.value(
        name, grpc_type="server_stream", grpc_service=EVENTS, grpc_method="Subscribe", **labels
    )


async def eventually(check: object, port: int | None, seconds: float = 10) -> Scrape:
    """Scrape until `check(scrape)` holds (the server counts some things after answering)."""
    assert callable(check)
    async with asyncio.timeout(seconds):
        while True:
            s = await scrape(port)
            if check(s):
                return s
            await asyncio.sleep(0.05)


async def test_metrics_count_calls_events_subscriptions_and_timeouts(
    make_settings: SettingsFactory,
) -> None:
    clock = ManualClock(START)
    settings = make_settings(
        metrics_listen="127.0.0.1:0",
        visit_timeout=VISIT_TIMEOUT,
        sources=(Source("web"), Source("shop")),
    )
    async with serving(settings, clock=clock) as h:
        port = h.server.metrics_port
        before = await scrape(port)
        # Every method and code is there at zero from the start, as go-grpc-prometheus does.
        assert track(before, "grpc_server_started_total") == 0
        assert track(before, "grpc_server_handled_total", grpc_code="Unavailable") == 0
        assert before.value("journey_system_events_total", type="visit-ended") == 0
        assert before.value("journey_storage_errors_total", kind="locked") == 0
        assert before.value("process_cpu_seconds_total") >= 0
        assert before.value("journey_log_head_position") == 0

        first = await h.track("page-view", "click", "scroll", source_id="web")
        await h.track("page-view", source_id="web", session_id=first.session_id)
        assert await status_of(h.track(source_id="unregistered")) == grpc.StatusCode.NOT_FOUND
        assert await status_of(h.track(source_id="")) == grpc.StatusCode.INVALID_ARGUMENT

        stream = h.events.Subscribe(pb.SubscribeRequest(beginning=Empty()))
        kinds: list[str | None] = []
        while not kinds or kinds[-1] != "caught_up":
            message = await stream.read()
            assert isinstance(message, pb.SubscribeResponse)
            kinds.append(message.WhichOneof("content"))
        assert kinds == ["event", "event", "event", "caught_up"]
        live = await scrape(port)
        assert live.value("journey_subscribers") == 1
        assert live.value("journey_subscriber_lag_max_events") == 0
        assert live.value("journey_subscriber_lag_events_bucket", le="0.0") == 1
        stream.cancel()

        # The visit times out; the clock stands still after, so it ends exactly 2 s late.
        clock.advance(VISIT_TIMEOUT + timedelta(seconds=2))
        s = await eventually(
            lambda s: (
                s.value("journey_sweeper_lateness_seconds_count") == 1
                and subscribe(s, "grpc_server_handled_total", grpc_code="Canceled") == 1
            ),
            port,
        )

    assert track(s, "grpc_server_started_total") == 4
    assert track(s, "grpc_server_msg_received_total") == 4
    assert track(s, "grpc_server_msg_sent_total") == 2
    assert track(s, "grpc_server_handling_seconds_count") == 4
    assert track(s, "grpc_server_handled_total", grpc_code="OK") == 2
    assert track(s, "grpc_server_handled_total", grpc_code="NotFound") == 1
    assert track(s, "grpc_server_handled_total", grpc_code="InvalidArgument") == 1
    assert subscribe(s, "grpc_server_started_total") == 1
    # Three events and caught_up, each written by the servicer rather than yielded.
    assert subscribe(s, "grpc_server_msg_sent_total") == 4
    assert subscribe(s, "grpc_server_handled_total", grpc_code="OK") == 0

    assert s.value("journey_tracked_events_total", source_id="web") == 4
    assert s.value("journey_tracked_events_total", source_id="shop") == 0
    assert s.value("journey_tracked_events_total", source_id="other") == 0
    system = {
        t: s.value("journey_system_events_total", type=t)
        for t in ("profile-created", "session-opened", "visit-started", "visit-ended")
    }
    assert system == dict.fromkeys(system, 1)
    assert s.value("journey_system_events_total", type="session-closed") == 0
    assert s.value("journey_log_head_position") == 4
    assert s.value("journey_subscribers") == 0

    # Two Tracks and one expiry committed, one call each.
    assert s.value("journey_writer_batch_size_count") == 3
    assert s.value("journey_writer_batch_size_sum") == 3
    assert s.value("journey_writer_commit_seconds_count") == 3
    assert s.value("journey_sweeper_lateness_seconds_sum") == 2.0
    assert s.value("journey_sweeper_lateness_seconds_bucket", le="1.5") == 0
    assert s.value("journey_sweeper_lateness_seconds_bucket", le="2.0") == 1
    for kind in ("unavailable", "locked", "full", "integrity", "other"):
        assert s.value("journey_storage_errors_total", kind=kind) == 0


async def test_without_registered_sources_every_source_counts_as_other(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings(metrics_listen="127.0.0.1:0")) as h:
        await h.track("page-view", "click", source_id="web")
        await h.track("page-view", source_id="app")
        s = await scrape(h.server.metrics_port)
    assert s.value("journey_tracked_events_total", source_id="other") == 3
    assert {
        dict(labels)["source_id"]
        for name, labels in s.samples
        if name.startswith("journey_tracked_events_total")
    } == {"other"}


async def test_metrics_are_off_by_default(make_settings: SettingsFactory) -> None:
    async with serving(make_settings()) as h:
        assert h.server.metrics_port is None
        assert h.server.metrics_server is None


async def test_the_metrics_port_is_released_at_stop() -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        database_url="sqlite+aiosqlite:///:memory:",
        metrics_listen="127.0.0.1:0",
    )
    server, _ = await create_server(settings)
    port = server.metrics_port
    assert port is not None
    await scrape(port)
    await server.stop(1.0)
    # The same port can be bound again.
    again = Settings(**{**settings.__dict__, "metrics_listen": f"127.0.0.1:{port}"})
    server, _ = await create_server(again)
    try:
        assert server.metrics_port == port
    finally:
        await server.stop(1.0)


async def test_a_taken_metrics_port_stops_the_start(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    async with serving(make_settings(metrics_listen="127.0.0.1:0")) as h:
        # A database of its own: an SQLite file belongs to one server.
        taken = make_settings(
            metrics_listen=f"127.0.0.1:{h.server.metrics_port}",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'other.db'}",
        )
        with pytest.raises(StartupError, match="metrics_listen: cannot listen on"):
            await create_server(taken)
