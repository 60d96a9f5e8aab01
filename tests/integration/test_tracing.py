"""Trace context carried by the events, and the OpenTelemetry spans with `tracing` on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from journey.clock import ManualClock
from journey_client import JourneyClient, pb
from tests.conftest import SettingsFactory
from tests.integration.harness import Harness, serving

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
CALLER = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
START = datetime(2026, 1, 1, tzinfo=UTC)
T = pb.SystemEventType


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The spans a test's server ends, kept in memory."""
    spans = InMemorySpanExporter()
    yield spans
    spans.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A provider of the test's own: the global one can be set only once per process."""
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


def track_request(session_id: str = "", profile_id: str = "") -> pb.TrackRequest:
    return pb.TrackRequest(
        source_id="web",
        session_id=session_id,
        profile_id=profile_id,
        events=[pb.TrackedEvent(type="page-view")],
    )


async def track(
    h: Harness, metadata: Sequence[tuple[str, str]] = (), session_id: str = ""
) -> pb.TrackResponse:
    response: pb.TrackResponse = await h.tracker.Track(
        track_request(session_id), metadata=tuple(metadata)
    )
    return response


def server_spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def listed(h: Harness) -> list[pb.SystemEvent]:
    return list(
        (await h.events.ListSystemEvents(pb.ListSystemEventsRequest(page_size=1000))).system_events
    )


async def subscribed(h: Harness, count: int) -> list[pb.SystemEvent]:
    """The first `count` events a subscription from the beginning delivers, singly and batched."""
    out: list[pb.SystemEvent] = []
    for batch_size in (0, 100):
        call = h.events.Subscribe(pb.SubscribeRequest(beginning=Empty(), max_batch_size=batch_size))
        got: list[pb.SystemEvent] = []
        async for message in call:
            if message.HasField("event"):
                got.append(message.event)
            elif message.HasField("batch"):
                got.extend(message.batch.events)
            if len(got) >= count:
                break
        call.cancel()
        out.extend(got)
    return out


async def wait_for_events(h: Harness, count: int, clock: ManualClock) -> list[pb.SystemEvent]:
    """Wait for the sweeper to bring the log to `count` events.

    The clock is nudged on meanwhile: a sweeper whose round straddled the last advance sleeps
    toward a moment just past it.
    """
    async with asyncio.timeout(10):
        while len(events := await listed(h)) < count:
            clock.advance(timedelta(seconds=1))
            await asyncio.sleep(0.02)
    return events


# --- tracing on -------------------------------------------------------------------------------


async def test_a_server_span_per_call_continues_the_callers_trace(
    make_settings: SettingsFactory, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with serving(make_settings(tracing=True), tracer_provider=provider) as h:
        await track(h, tuple(CALLER.items()))
    [span] = server_spans(exporter, "journey.v1.TrackerService/Track")
    assert span.kind is trace.SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.parent.is_remote
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "journey.v1.TrackerService",
        "rpc.method": "Track",
        "rpc.grpc.status_code": 0,
    }
    assert span.status.status_code is trace.StatusCode.UNSET


async def test_events_carry_the_server_spans_context(
    make_settings: SettingsFactory, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with serving(make_settings(tracing=True), tracer_provider=provider) as h:
        response = await track(h, tuple(CALLER.items()), session_id="s")
        ended = await h.sessions.EndSession(
            pb.EndSessionRequest(session_id="s"), metadata=tuple(CALLER.items())
        )
        events = await listed(h)
        streamed = await subscribed(h, 5)
    [tracked] = server_spans(exporter, "journey.v1.TrackerService/Track")
    [ending] = server_spans(exporter, "journey.v1.SessionService/EndSession")
    expected = {"traceparent": traceparent_of(tracked), "tracestate": TRACESTATE}
    # A child of the caller's span: the caller's trace, the server span's id.
    assert expected["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert expected["traceparent"] != TRACEPARENT
    assert [dict(e.trace_context) for e in response.system_events] == [expected] * 3
    end_expected = {"traceparent": traceparent_of(ending), "tracestate": TRACESTATE}
    assert [dict(e.trace_context) for e in ended.system_events] == [end_expected] * 2
    # Stored in the events' encoded form: listings and subscriptions deliver it.
    assert [dict(e.trace_context) for e in events] == [expected] * 3 + [end_expected] * 2
    assert [dict(e.trace_context) for e in streamed] == ([expected] * 3 + [end_expected] * 2) * 2


async def test_a_call_without_trace_context_causes_events_without_one(
    make_settings: SettingsFactory, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with serving(make_settings(tracing=True), tracer_provider=provider) as h:
        response = await track(h, [("traceparent", "00-not-a-traceparent-01")])
        events = await listed(h)
    assert [dict(e.trace_context) for e in response.system_events] == [{}] * 3
    assert [dict(e.trace_context) for e in events] == [{}] * 3
    # The span is still there, the root of a trace of its own.
    [span] = server_spans(exporter, "journey.v1.TrackerService/Track")
    assert span.parent is None


async def test_a_callers_mistake_is_not_an_error_status(
    make_settings: SettingsFactory, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with serving(make_settings(tracing=True), tracer_provider=provider) as h:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await h.sessions.GetSession(pb.GetSessionRequest(session_id="nope"))
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    [not_found] = server_spans(exporter, "journey.v1.SessionService/GetSession")
    assert not_found.attributes is not None
    assert not_found.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    # The caller's mistake, not the server's: no error status (RPC semantic conventions).
    assert not_found.status.status_code is trace.StatusCode.UNSET


async def test_unavailable_is_an_error_status(
    make_settings: SettingsFactory, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with serving(make_settings(tracing=True), tracer_provider=provider) as h:
        # Refused by admission while shutting down, as every new call then is.
        h.server.admission.close()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await track(h)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    [span] = server_spans(exporter, "journey.v1.TrackerService/Track")
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.status.description == "UNAVAILABLE"


async def test_subscribe_is_one_span_for_the_whole_stream(
    make_settings: SettingsFactory, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with serving(make_settings(tracing=True), tracer_provider=provider) as h:
        await track(h)
        await subscribed(h, 3)
        name = "journey.v1.SystemEventService/Subscribe"
        async with asyncio.timeout(5):
            while len(server_spans(exporter, name)) < 2:
                await asyncio.sleep(0.02)
    spans = server_spans(exporter, name)
    assert len(spans) == 2
    assert all(s.attributes and s.attributes["rpc.method"] == "Subscribe" for s in spans)


async def test_each_sweep_that_emits_is_one_trace_of_its_own(
    make_settings: SettingsFactory, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    clock = ManualClock(START)
    async with serving(make_settings(tracing=True), clock=clock, tracer_provider=provider) as h:
        await track(h, tuple(CALLER.items()), session_id="a")
        await track(h, session_id="b")
        clock.advance(timedelta(minutes=31))
        visits_ended = (await wait_for_events(h, 8, clock))[6:]
        clock.advance(timedelta(hours=24))
        sessions_closed = (await wait_for_events(h, 10, clock))[8:]
        # Nothing more is due: sweeps that emit nothing leave no span.
        clock.advance(timedelta(hours=1))
        await asyncio.sleep(0.1)
    assert [e.type for e in visits_ended] == [T.SYSTEM_EVENT_TYPE_VISIT_ENDED] * 2
    assert [e.type for e in sessions_closed] == [T.SYSTEM_EVENT_TYPE_SESSION_CLOSED] * 2
    sweeps = server_spans(exporter, "journey.sweep")
    assert len(sweeps) == 2
    for sweep, events in zip(sweeps, (visits_ended, sessions_closed), strict=True):
        assert sweep.parent is None
        assert sweep.kind is trace.SpanKind.INTERNAL
        assert sweep.attributes is not None
        assert sweep.attributes["journey.system_events"] == 2
        # The sweep's own trace, not the caller's, for both sessions' events.
        assert f"{sweep.context.trace_id:032x}" != TRACE_ID
        assert [dict(e.trace_context) for e in events] == [
            {"traceparent": traceparent_of(sweep)}
        ] * 2
    assert sweeps[0].context.trace_id != sweeps[1].context.trace_id


# --- tracing off ------------------------------------------------------------------------------


async def test_off_events_carry_the_callers_context_as_received(
    make_settings: SettingsFactory, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with serving(make_settings(), tracer_provider=provider) as h:
        response = await track(h, tuple(CALLER.items()), session_id="s")
        only_parent = await track(h, [("traceparent", TRACEPARENT)])
        ended = await h.sessions.EndSession(
            pb.EndSessionRequest(session_id="s"), metadata=tuple(CALLER.items())
        )
        events = await listed(h)
        streamed = await subscribed(h, 8)
    assert [dict(e.trace_context) for e in response.system_events] == [CALLER] * 3
    parent = {"traceparent": TRACEPARENT}
    assert [dict(e.trace_context) for e in only_parent.system_events] == [parent] * 3
    assert [dict(e.trace_context) for e in ended.system_events] == [CALLER] * 2
    expected = [CALLER] * 3 + [parent] * 3 + [CALLER] * 2
    assert [dict(e.trace_context) for e in events] == expected
    assert [dict(e.trace_context) for e in streamed] == expected * 2
    # Off means off: the provider it was handed is not used.
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("traceparent", f"00-{'0' * 32}-{PARENT_ID}-01"),),
        (("traceparent", TRACEPARENT.upper()),),
        (("tracestate", TRACESTATE),),
    ],
    ids=["none", "zero-trace-id", "uppercase", "tracestate-alone"],
)
async def test_off_no_valid_traceparent_means_no_trace_context(
    make_settings: SettingsFactory, metadata: tuple[tuple[str, str], ...]
) -> None:
    async with serving(make_settings()) as h:
        response = await track(h, metadata)
        events = await listed(h)
    assert [dict(e.trace_context) for e in response.system_events] == [{}] * 3
    assert [dict(e.trace_context) for e in events] == [{}] * 3


async def test_off_timeouts_carry_no_trace_context(make_settings: SettingsFactory) -> None:
    clock = ManualClock(START)
    async with serving(make_settings(), clock=clock) as h:
        await track(h, tuple(CALLER.items()), session_id="a")
        clock.advance(timedelta(minutes=31))
        [visit_ended] = (await wait_for_events(h, 4, clock))[3:]
    assert visit_ended.type == T.SYSTEM_EVENT_TYPE_VISIT_ENDED
    assert dict(visit_ended.trace_context) == {}


async def test_the_client_passes_trace_context_through(make_settings: SettingsFactory) -> None:
    async with (
        serving(make_settings()) as h,
        JourneyClient(f"127.0.0.1:{h.port}") as client,
    ):
        response = await client.track("web", ["page-view"], session_id="s", trace_context=CALLER)
        ended = await client.end_session("s", trace_context={"traceparent": TRACEPARENT})
        untraced = await client.track("web", ["page-view"])
    assert [dict(e.trace_context) for e in response.system_events] == [CALLER] * 3
    assert [dict(e.trace_context) for e in ended.system_events] == [
        {"traceparent": TRACEPARENT}
    ] * 2
    assert [dict(e.trace_context) for e in untraced.system_events] == [{}] * 3


async def test_a_timeout_a_track_finds_overdue_carries_that_tracks_context(
    make_settings: SettingsFactory,
) -> None:
    clock = ManualClock(START)
    second = {"traceparent": f"00-{TRACE_ID}-{'1' * 16}-01"}
    async with serving(make_settings(), clock=clock) as h:
        await track(h, tuple(CALLER.items()), session_id="a")
        # No sweep comes first: the next Track finds the visit over and ends it itself.
        await h.server.sweeper.stop()
        clock.advance(timedelta(minutes=31))
        response = await track(h, tuple(second.items()), session_id="a")
    assert [e.type for e in response.system_events] == [
        T.SYSTEM_EVENT_TYPE_VISIT_ENDED,
        T.SYSTEM_EVENT_TYPE_VISIT_STARTED,
    ]
    assert [dict(e.trace_context) for e in response.system_events] == [second] * 2
