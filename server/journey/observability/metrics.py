"""Prometheus metrics: a registry per server, the gRPC and Journey metrics, the /metrics server."""

from __future__ import annotations

import asyncio
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from journey.domain.model import SystemEvent, SystemEventType

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

# The source label of tracked events from sources that are not registered: the label's values
# stay bounded by the configuration, whatever clients send.
OTHER_SOURCE = "other"
# Storage failures by kind; storage.failures.failure_kind names one of these.
STORAGE_ERROR_KINDS = ("unavailable", "locked", "full", "integrity", "other")
UNARY = "unary"
SERVER_STREAM = "server_stream"
BIDI_STREAM = "bidi_stream"
# go-grpc-prometheus prints a status as grpc-go's codes.Code.String() does.
GRPC_CODES = (
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
)
# go-grpc-prometheus's buckets (prometheus.DefBuckets), so its dashboards' quantiles match.
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Lag in events: from "keeping up" to "a replay of a large log".
LAG_BUCKETS = (0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0)
# Calls per group commit: 1 when idle, up to the writer's MAX_BATCH (256) under load.
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The sweeper promises a timeout's events within a second: buckets around that promise.
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0, 60.0)


def grpc_code_name(status_name: str) -> str:
    """grpc-go's name for a status: `INVALID_ARGUMENT` -> `InvalidArgument`, `OK` -> `OK`."""
    if status_name in ("OK", "CANCELLED"):
        # grpc-go spells it Canceled.
        return {"OK": "OK", "CANCELLED": "Canceled"}[status_name]
    return "".join(part.capitalize() for part in status_name.split("_"))


def split_method(method: str) -> tuple[str, str]:
    """`/journey.v1.TrackerService/Track` -> (`journey.v1.TrackerService`, `Track`)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class MethodMetrics:
    """The gRPC metrics of one method, as plain numbers that the interceptor adds to.

    Only the event loop's thread writes them, so they need no lock; a scrape reads them from
    its own thread and may see a call half-counted, never a count that goes down. Plain
    numbers cost a fraction of prometheus-client's locked counters, and this is paid per call.
    """

    __slots__ = (
        "buckets",
        "grpc_type",
        "handled",
        "method",
        "received",
        "seconds",
        "sent",
        "service",
        "started",
    )

    def __init__(self, grpc_type: str, method: str) -> None:
        self.grpc_type = grpc_type
        self.service, self.method = split_method(method)
        self.started = 0
        self.received = 0
        self.sent = 0
        self.handled = dict.fromkeys(GRPC_CODES, 0)
        # Calls by the first bound at or above their duration; the last counts the rest.
        self.buckets = [0] * (len(HANDLING_BUCKETS) + 1)
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        """Count a call's duration."""
        self.buckets[bisect_left(HANDLING_BUCKETS, seconds)] += 1
        self.seconds += seconds


class RpcMetrics:
    """The server metrics of go-grpc-prometheus, under its names and labels.

    A collector: the families are built from each method's numbers when scraped.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._methods: dict[str, MethodMetrics] = {}
        registry.register(self)

    def method(self, grpc_type: str, method: str) -> MethodMetrics:
        """The metrics of `method` (a full method name), made on first use."""
        found = self._methods.get(method)
        if found is None:
            found = self._methods[method] = MethodMetrics(grpc_type, method)
        return found

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields (so registering does not collect)."""
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        """Every method's counts."""
        # list() copies under the GIL in one go, whatever the event loop adds meanwhile.
        return self._families(list(self._methods.values()))

    @staticmethod
    def _families(methods: list[MethodMetrics]) -> list[Metric]:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        started = CounterMetricFamily(
            "grpc_server_started", "Total number of RPCs started on the server.", labels=labels
        )
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=(*labels, "grpc_code"),
        )
        handling = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            labels=labels,
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels=labels,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels=labels,
        )
        for m in methods:
            values = [m.grpc_type, m.service, m.method]
            started.add_metric(values, m.started)
            received.add_metric(values, m.received)
            sent.add_metric(values, m.sent)
            for code, count in m.handled.items():
                handled.add_metric([*values, code], count)
            cumulative, total = [], 0
            for bound, count in zip((*HANDLING_BUCKETS, math.inf), m.buckets, strict=True):
                total += count
                cumulative.append((_le(bound), total))
            handling.add_metric(values, cumulative, m.seconds)
        return [started, handled, handling, received, sent]


@dataclass(frozen=True)
class Streams:
    """What the lag collector reads at scrape time (from the scraping thread)."""

    head: Callable[[], int]
    # The position each open subscription has covered.
    cursors: Callable[[], list[int]]


class StreamCollector:
    """The log head, the open subscriptions and their lag, computed when scraped.

    Nothing is counted on the hot path: a scrape reads the broker's head and each open
    stream's cursor.
    """

    def __init__(self, streams: Streams) -> None:
        self._streams = streams

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields (so registering does not collect)."""
        return self._families([], 0)

    def collect(self) -> Iterable[Metric]:
        """The current head, subscriber count and lags."""
        head = self._streams.head()
        return self._families([max(head - cursor, 0) for cursor in self._streams.cursors()], head)

    @staticmethod
    def _families(lags: list[int], head: int) -> list[Metric]:
        buckets = []
        for bound in LAG_BUCKETS:
            buckets.append((_le(bound), sum(1 for lag in lags if lag <= bound)))
        buckets.append(("+Inf", len(lags)))
        return [
            GaugeMetricFamily(
                "journey_log_head_position",
                "The position of the last committed system event.",
                value=head,
            ),
            GaugeMetricFamily(
                "journey_subscribers", "Open Subscribe streams (replaying or live).", len(lags)
            ),
            GaugeMetricFamily(
                "journey_subscriber_lag_max_events",
                "The largest lag of an open subscription: head minus its position, in events.",
                value=max(lags, default=0),
            ),
            GaugeHistogramMetricFamily(
                "journey_subscriber_lag_events",
                "The lags of the open subscriptions now (head minus each one's position).",
                buckets=buckets,
                gsum_value=sum(lags),
            ),
        ]


def _le(bound: float) -> str:
    # As prometheus-client writes a bucket's bound, Go style: 0.0, 100000.0, 1e+06, +Inf.
    if math.isinf(bound):
        return "+Inf"
    return repr(float(bound)) if bound < 1e6 else f"{bound:.0e}"


class Metrics:
    """Every metric of one server, in its own registry (tests run many servers in a process)."""

    def __init__(self, sources: Collection[str]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.rpc = RpcMetrics(self.registry)
        self._sources = frozenset(sources)
        self._tracked = Counter(
            "journey_tracked_events_total",
            "Tracked events stored, by source (registered sources only; the rest are `other`).",
            ("source_id",),
            registry=self.registry,
        )
        self._tracked_by_source = {s: self._tracked.labels(s) for s in (*sources, OTHER_SOURCE)}
        system = Counter(
            "journey_system_events_total",
            "System events committed, by type.",
            ("type",),
            registry=self.registry,
        )
        self._system = {t: system.labels(t.slug) for t in SystemEventType}
        self._batch_size = Histogram(
            "journey_writer_batch_size",
            "Calls per group commit.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._commit_seconds = Histogram(
            "journey_writer_commit_seconds",
            "How long each group commit's transaction took, reads and rules included.",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self._lateness = Histogram(
            "journey_sweeper_lateness_seconds",
            "How long after its timeout each timeout-driven system event was committed.",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        errors = Counter(
            "journey_storage_errors_total",
            "Failed storage transactions and reads, by kind.",
            ("kind",),
            registry=self.registry,
        )
        self._errors = {kind: errors.labels(kind) for kind in STORAGE_ERROR_KINDS}

    def watch(self, streams: Streams) -> None:
        """Report the log head and the subscriptions' lag, read at each scrape."""
        self.registry.register(StreamCollector(streams))

    def committed(
        self,
        calls: int,
        seconds: float,
        appended: Sequence[SystemEvent],
        tracked: Mapping[str, int],
    ) -> None:
        """A group commit: its size and duration, its system events, its tracked events."""
        self._batch_size.observe(calls)
        self._commit_seconds.observe(seconds)
        by_type: dict[SystemEventType, int] = {}
        for event in appended:
            by_type[event.type] = by_type.get(event.type, 0) + 1
        for event_type, count in by_type.items():
            self._system[event_type].inc(count)
        other = self._tracked_by_source[OTHER_SOURCE]
        for source_id, count in tracked.items():
            self._tracked_by_source.get(source_id, other).inc(count)

    def storage_failed(self, kind: str) -> None:
        """A storage transaction or read failed."""
        self._errors.get(kind, self._errors["other"]).inc()

    def expired(self, events: Sequence[SystemEvent], committed: datetime) -> None:
        """The sweeper committed these timeout-driven events at `committed`."""
        for event in events:
            self._lateness.observe(max((committed - event.occur_time).total_seconds(), 0.0))


class MetricsServer:
    """prometheus-client's HTTP server for /metrics on its own thread."""

    def __init__(self, metrics: Metrics, address: str) -> None:
        host, _, port = address.rpartition(":")
        # The server thread is prometheus-client's, a daemon: it never holds the process up.
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(
            int(port), host.strip("[]"), registry=metrics.registry
        )
        self.host = host
        self.port: int = self._httpd.server_port

    async def close(self) -> None:
        """Stop serving and release the port."""
        # shutdown() waits for the serving loop to notice (up to half a second): off the loop.
        await asyncio.to_thread(self._httpd.shutdown)
        self._httpd.server_close()
        await asyncio.to_thread(self._thread.join)
