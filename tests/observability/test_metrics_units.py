"""The metrics' parts without a server: status names, the interceptor, labels, failure kinds."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from journey.api.interceptors import Context, MetricsInterceptor
from journey.domain.model import SystemEvent, SystemEventType
from journey.observability.metrics import (
    GRPC_CODES,
    Metrics,
    RpcMetrics,
    Streams,
    grpc_code_name,
    split_method,
)
from journey.storage.failures import failure_kind
from tests.observability.scrape import parse

METHOD = "/journey.v1.TrackerService/Track"
STREAM = "/journey.v1.SystemEventService/Subscribe"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_status_names_are_grpc_gos() -> None:
    by_number = sorted(grpc.StatusCode, key=lambda code: code.value[0])
    assert [grpc_code_name(code.name) for code in by_number] == list(GRPC_CODES)
    assert grpc_code_name("CANCELLED") == "Canceled"
    assert grpc_code_name("INVALID_ARGUMENT") == "InvalidArgument"


def test_methods_split_into_service_and_name() -> None:
    assert split_method(METHOD) == ("journey.v1.TrackerService", "Track")


class FakeContext:
    """What the interceptor asks of a servicer context."""

    def __init__(self, remaining: float | None = None) -> None:
        self.status: grpc.StatusCode | None = None
        self.remaining = remaining
        self.written: list[Any] = []

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def time_remaining(self) -> float | None:
        return self.remaining

    async def write(self, message: Any) -> None:
        self.written.append(message)

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = code
        raise grpc.aio.AbortError()


def rpc_value(registry: CollectorRegistry, name: str, grpc_type: str, **labels: str) -> float:
    service, method = split_method(METHOD if grpc_type == "unary" else STREAM)
    value = registry.get_sample_value(
        name, {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method, **labels}
    )
    return 0.0 if value is None else value


async def test_a_unary_call_is_counted_with_its_outcome() -> None:
    registry = CollectorRegistry()
    interceptor = MetricsInterceptor(RpcMetrics(registry))

    async def ok(request: Any, context: Context) -> str:
        return "response"

    async def refused(request: Any, context: Context) -> str:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no")
        raise AssertionError("abort raises")

    async def cancelled(request: Any, context: Context) -> str:
        raise asyncio.CancelledError

    assert await interceptor.unary(METHOD, "r", cast(Context, FakeContext()), ok) == "response"
    with pytest.raises(grpc.aio.AbortError):
        await interceptor.unary(METHOD, "r", cast(Context, FakeContext()), refused)
    with pytest.raises(asyncio.CancelledError):
        await interceptor.unary(METHOD, "r", cast(Context, FakeContext()), cancelled)
    with pytest.raises(asyncio.CancelledError):  # the deadline passed: grpc cancels the handler
        await interceptor.unary(METHOD, "r", cast(Context, FakeContext(remaining=0.0)), cancelled)

    def value(name: str, **labels: str) -> float:
        return rpc_value(registry, name, "unary", **labels)

    assert value("grpc_server_started_total") == 4
    assert value("grpc_server_msg_received_total") == 4
    assert value("grpc_server_msg_sent_total") == 1
    assert value("grpc_server_handling_seconds_count") == 4
    # Cumulative buckets, as Prometheus expects: these calls took well under 5 ms.
    assert value("grpc_server_handling_seconds_bucket", le="0.005") == 4
    assert value("grpc_server_handling_seconds_bucket", le="+Inf") == 4
    assert 0 < value("grpc_server_handling_seconds_sum") < 0.02
    handled = {
        code: value("grpc_server_handled_total", grpc_code=code)
        for code in ("OK", "FailedPrecondition", "Canceled", "DeadlineExceeded", "Unknown")
    }
    assert handled == {
        "OK": 1,
        "FailedPrecondition": 1,
        "Canceled": 1,
        "DeadlineExceeded": 1,
        "Unknown": 0,
    }


async def test_a_stream_counts_messages_yielded_and_written() -> None:
    registry = CollectorRegistry()
    interceptor = MetricsInterceptor(RpcMetrics(registry))
    context = FakeContext()

    async def stream(request: Any, context: Context) -> AsyncIterator[str]:
        await context.write(b"one")
        await context.write(b"two")
        yield "three"
        raise RuntimeError("a bug")

    received: list[str] = []

    async def read_all() -> None:
        async for message in interceptor.stream(STREAM, "r", cast(Context, context), stream):
            received.append(message)

    with pytest.raises(RuntimeError):
        await read_all()
    assert received == ["three"]
    assert context.written == [b"one", b"two"]

    def value(name: str, **labels: str) -> float:
        return rpc_value(registry, name, "server_stream", **labels)

    assert value("grpc_server_started_total") == 1
    assert value("grpc_server_msg_sent_total") == 3
    assert value("grpc_server_handled_total", grpc_code="Unknown") == 1
    assert value("grpc_server_handled_total", grpc_code="OK") == 0


async def test_a_stream_closed_by_grpc_counts_as_cancelled() -> None:
    registry = CollectorRegistry()
    interceptor = MetricsInterceptor(RpcMetrics(registry))

    async def endless(request: Any, context: Context) -> AsyncIterator[str]:
        while True:
            yield "tick"

    messages = interceptor.stream(STREAM, "r", cast(Context, FakeContext()), endless)
    assert isinstance(messages, AsyncIterator)
    assert await anext(messages) == "tick"
    # grpc closes the generator when the client goes away between messages.
    await cast(Any, messages).aclose()
    assert rpc_value(registry, "grpc_server_handled_total", "server_stream", grpc_code="Canceled")


def event(event_type: SystemEventType, occur_time: datetime = T0) -> SystemEvent:
    return SystemEvent(1, "id", event_type, occur_time, "p", "s", "web", {})


def test_commits_count_by_type_and_registered_source() -> None:
    metrics = Metrics(["web"])
    metrics.committed(
        3,
        0.002,
        [event(SystemEventType.PROFILE_CREATED), event(SystemEventType.VISIT_STARTED)] * 2,
        {"web": 5, "stranger": 2, "another": 1},
    )
    s = parse(generate_latest(metrics.registry).decode())
    assert s.value("journey_tracked_events_total", source_id="web") == 5
    assert s.value("journey_tracked_events_total", source_id="other") == 3
    assert s.value("journey_system_events_total", type="profile-created") == 2
    assert s.value("journey_system_events_total", type="visit-started") == 2
    assert s.value("journey_system_events_total", type="visit-ended") == 0
    assert s.value("journey_writer_batch_size_sum") == 3
    assert s.value("journey_writer_batch_size_bucket", le="2.0") == 0
    assert s.value("journey_writer_batch_size_bucket", le="4.0") == 1
    assert s.value("journey_writer_commit_seconds_bucket", le="0.0025") == 1
    sources = {dict(k[1])["source_id"] for k in s.samples if k[0].startswith("journey_tracked")}
    assert sources == {"web", "other"}


def test_lateness_is_commit_time_minus_timeout_moment() -> None:
    metrics = Metrics([])
    ended = event(SystemEventType.VISIT_ENDED, T0)
    closed = event(SystemEventType.SESSION_CLOSED, T0 - timedelta(seconds=3))
    metrics.expired([ended, closed], T0 + timedelta(milliseconds=500))
    s = parse(generate_latest(metrics.registry).decode())
    assert s.value("journey_sweeper_lateness_seconds_count") == 2
    assert s.value("journey_sweeper_lateness_seconds_sum") == 4.0
    assert s.value("journey_sweeper_lateness_seconds_bucket", le="0.5") == 1
    assert s.value("journey_sweeper_lateness_seconds_bucket", le="1.0") == 1


def test_lag_is_read_at_scrape_time() -> None:
    cursors = [100, 95, 0]
    metrics = Metrics([])
    metrics.watch(Streams(head=lambda: 100, cursors=lambda: list(cursors)))
    s = parse(generate_latest(metrics.registry).decode())
    assert s.value("journey_log_head_position") == 100
    assert s.value("journey_subscribers") == 3
    assert s.value("journey_subscriber_lag_max_events") == 100
    assert s.value("journey_subscriber_lag_events_bucket", le="0.0") == 1
    assert s.value("journey_subscriber_lag_events_bucket", le="10.0") == 2
    assert s.value("journey_subscriber_lag_events_bucket", le="100.0") == 3
    assert s.value("journey_subscriber_lag_events_bucket", le="+Inf") == 3
    cursors.clear()
    s = parse(generate_latest(metrics.registry).decode())
    assert s.value("journey_subscribers") == 0
    assert s.value("journey_subscriber_lag_max_events") == 0


def test_storage_failures_have_a_kind_of_a_short_list() -> None:
    def driver_error(message: str, **attributes: object) -> Exception:
        error = sqlite3.OperationalError(message)
        for name, value in attributes.items():
            setattr(error, name, value)
        return error

    class AsyncpgLike(Exception):
        sqlstate = "55P03"

    busy = driver_error("database is locked", sqlite_errorname="SQLITE_BUSY")
    full = driver_error("database or disk is full", sqlite_errorname="SQLITE_FULL")
    assert failure_kind(OperationalError("SELECT", {}, busy)) == "locked"
    assert failure_kind(OperationalError("INSERT", {}, full)) == "full"
    assert failure_kind(OperationalError("SELECT", {}, AsyncpgLike())) == "locked"
    assert failure_kind(OperationalError("SELECT", {}, ConnectionRefusedError())) == "unavailable"
    assert failure_kind(ConnectionResetError()) == "unavailable"
    assert failure_kind(PoolTimeout()) == "unavailable"
    assert failure_kind(IntegrityError("INSERT", {}, Exception("duplicate key"))) == "integrity"
    assert failure_kind(ProgrammingError("SELECT", {}, Exception("syntax"))) == "other"
    metrics = Metrics([])
    metrics.storage_failed("locked")
    metrics.storage_failed("something new")
    s = parse(generate_latest(metrics.registry).decode())
    assert s.value("journey_storage_errors_total", kind="locked") == 1
    assert s.value("journey_storage_errors_total", kind="other") == 1


def test_each_server_has_its_own_registry_with_process_and_platform_metrics() -> None:
    first, second = Metrics([]), Metrics([])
    first.storage_failed("full")
    s = parse(generate_latest(second.registry).decode())
    assert s.value("journey_storage_errors_total", kind="full") == 0
    assert s.value("process_cpu_seconds_total") >= 0
    assert "python_info" in s.names()


def test_a_duration_falls_in_the_first_bucket_at_or_above_it() -> None:
    registry = CollectorRegistry()
    rpc = RpcMetrics(registry)
    m = rpc.method("unary", METHOD)
    for seconds in (0.005, 0.0051, 0.3, 11.0):
        m.observe(seconds)

    def bucket(le: str) -> float:
        return rpc_value(registry, "grpc_server_handling_seconds_bucket", "unary", le=le)

    assert [bucket(le) for le in ("0.005", "0.01", "0.25", "0.5", "10.0", "+Inf")] == [
        1,
        2,
        2,
        3,
        3,
        4,
    ]
    assert rpc_value(registry, "grpc_server_handling_seconds_sum", "unary") == pytest.approx(
        11.3101
    )
