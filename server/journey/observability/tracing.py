"""OpenTelemetry tracing: a server span per RPC, a span per sweep; imported only with tracing on."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from journey.api.interceptors import Context, MethodInterceptor, StreamCall, UnaryCall
from journey.domain.model import NO_TRACE_CONTEXT
from journey.observability import trace_context

log = logging.getLogger(__name__)

# W3C Trace Context, whatever OTEL_PROPAGATORS says: the events' field is defined in its terms.
_PROPAGATOR = TraceContextTextMapPropagator()
# Per the semantic conventions, a server span is an error only for these codes: the others
# (INVALID_ARGUMENT, NOT_FOUND, ...) describe the caller's request, not a server fault.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_EXPORTERS_GROUP = "opentelemetry_traces_exporter"
# What OTEL_TRACES_EXPORTER's `otlp` means for each OTEL_EXPORTER_OTLP_*PROTOCOL.
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


class TracingError(Exception):
    """The OTEL_* environment asks for an exporter or protocol that cannot be had here."""


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    """OTEL_TRACES_EXPORTER's entry-point names: `otlp` (the default), `console`, or `none`."""
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    chosen = []
    for name in names:
        if name in ("", "none"):
            continue
        if name == "otlp":
            if protocol not in _OTLP_BY_PROTOCOL:
                raise TracingError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported {protocol!r}")
            name = _OTLP_BY_PROTOCOL[protocol]
        chosen.append(name)
    return chosen


def _exporter(name: str) -> SpanExporter:
    found = importlib.metadata.entry_points(group=_EXPORTERS_GROUP, name=name)
    if not found:
        known = sorted(e.name for e in importlib.metadata.entry_points(group=_EXPORTERS_GROUP))
        raise TracingError(
            f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed "
            f"(installed: {', '.join(known) or 'none'}); journey[otel] brings otlp over grpc"
        )
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter


def provider_from_env() -> TracerProvider:
    """A TracerProvider as the standard OTEL_* variables say; `service.name` defaults to journey.

    The SDK reads OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER(_ARG) and
    OTEL_BSP_*; each exporter its own (OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, ...).
    """
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "journey"}))
    provider = TracerProvider(resource=resource)
    for name in _exporter_names(os.environ):
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


class Tracing:
    """The tracer Journey's spans come from, and the provider it owns (if it made it)."""

    def __init__(self, provider: trace.TracerProvider, *, owned: bool) -> None:
        self.tracer = provider.get_tracer("journey", importlib.metadata.version("journey"))
        self._provider = provider
        self._owned = owned

    @classmethod
    def start(cls, provider: trace.TracerProvider | None = None) -> Tracing:
        """With `provider` (tests), use it; else the global one if it was set, else one from env.

        A provider made here also becomes the global one, for any other library in the
        process, and is shut down (its last spans exported) by `shutdown`.
        """
        if provider is not None:
            return cls(provider, owned=False)
        current = trace.get_tracer_provider()
        # The API's own placeholder until someone sets one (opentelemetry-instrument, say).
        if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return cls(current, owned=False)
        made = provider_from_env()
        trace.set_tracer_provider(made)
        return cls(made, owned=True)

    def interceptor(self) -> TracingInterceptor:
        """The interceptor that opens a server span per journey.v1 call."""
        return TracingInterceptor(self.tracer)

    @contextlib.contextmanager
    def sweep(self) -> Iterator[SweepSpan]:
        """A span, the root of its own trace, around one sweep that has sessions to expire."""
        with self.tracer.start_as_current_span(
            "journey.sweep", context=otel_context.Context(), kind=trace.SpanKind.INTERNAL
        ) as span:
            yield SweepSpan(span)

    async def shutdown(self) -> None:
        """Export what is pending and stop the exporters, if this provider is ours."""
        if self._owned and isinstance(self._provider, TracerProvider):
            # It blocks on the exporters (each bounded by its timeout): off the event loop.
            await asyncio.to_thread(self._provider.shutdown)


class SweepSpan:
    """One sweep's span: the trace context its events carry, and how many it emitted."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._emitted = 0
        self.trace_context = _context_of(span)

    def emitted(self, count: int) -> None:
        """Count events the sweep committed."""
        self._emitted += count
        self._span.set_attribute("journey.system_events", self._emitted)


def _context_of(span: trace.Span) -> Mapping[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


class TracingInterceptor(MethodInterceptor):
    """A server span per journey.v1 call, continuing the caller's W3C trace context.

    Outermost, so the span sees the status the caller sees. The events a call causes carry the
    span's context when the caller sent one, and none otherwise.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    async def unary(self, method: str, request: Any, context: Context, call: UnaryCall) -> Any:
        """Run the call inside its span."""
        with self._span(method, context) as span:
            try:
                response = await call(request, context)
            except BaseException as error:
                _finish(span, _code(error, context))
                raise
            _finish(span, _code(None, context))
            return response

    async def stream(
        self, method: str, request: Any, context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Run the whole stream inside its span."""
        with self._span(method, context) as span:
            try:
                async for response in call(request, context):
                    yield response
            except BaseException as error:
                _finish(span, _code(error, context))
                raise
            _finish(span, _code(None, context))

    @contextlib.contextmanager
    def _span(self, method: str, context: Context) -> Iterator[trace.Span]:
        carrier = trace_context.from_metadata(context.invocation_metadata())
        parent = _PROPAGATOR.extract(carrier) if carrier else otel_context.Context()
        service, _, name = method[1:].partition("/")
        span = self._tracer.start_span(
            method[1:],
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        token = trace_context.set_for_events(_context_of(span) if carrier else NO_TRACE_CONTEXT)
        try:
            # The status follows the gRPC code (_finish), not whether an exception passed.
            with trace.use_span(
                span, end_on_exit=True, record_exception=False, set_status_on_exception=False
            ):
                yield span
        finally:
            trace_context.reset_for_events(token)


def _code(error: BaseException | None, context: Context) -> grpc.StatusCode:
    # An abort (the error map, auth, admission) left its code on the context; before any,
    # grpc answers None (its stubs say otherwise).
    code: object = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _finish(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
