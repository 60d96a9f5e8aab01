"""Cross-cutting concerns applied to every RPC: logging, errors, auth, admission, validation."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import DecodeError

from journey.api import traceparent
from journey.api.errors import abort
from journey.api.validation import VALIDATORS
from journey.auth import KeyRing
from journey.domain.errors import (
    FieldViolation,
    InvalidArgument,
    JourneyError,
    ResourceExhausted,
    Unavailable,
)
from journey.observability.metrics import (
    BIDI_STREAM,
    SERVER_STREAM,
    UNARY,
    MethodMetrics,
    RpcMetrics,
    grpc_code_name,
)

log = logging.getLogger("journey.rpc")

Context = grpc.aio.ServicerContext[Any, Any]
UnaryCall = Callable[[Any, Context], Awaitable[Any]]
StreamCall = Callable[[Any, Context], AsyncIterator[Any]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Deserializer = Callable[[bytes], Any]

OUR_PACKAGE = "/journey.v1."


class MethodInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps each journey.v1 method; subclasses say what to do around a call.

    A bidirectional stream goes through `stream` too, with the request iterator in place of
    the request, since most layers never look at the request; those that do override `bidi`.
    Its servicer reads requests from that iterator (not `context.read()`), so that the layers
    see each message.
    """

    def __init__(self) -> None:
        # grpc asks every interceptor about every call, but a method's handler never changes:
        # each method is wrapped once, and the outermost layer answers from here.
        self._wrapped: dict[str, Handler] = {}

    # The stubs say a handler is always found; grpc passes None for an unknown method.
    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """Return the next handler with its behaviour wrapped."""
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler: Handler | None = await continuation(handler_call_details)
        # Health and reflection are grpc's own (Watch streams through context.write, which
        # these wrappers do not speak); only Journey's methods are wrapped. An unknown method
        # is not remembered: callers choose those names.
        if handler is None or not method.startswith(OUR_PACKAGE):
            return handler
        wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped

    def _wrap(self, method: str, found: Handler) -> Handler:
        # Typed loosely: the stubs describe the sync handler shapes, not the aio ones.
        handler: Any = found
        deserializer = self.deserializer(handler.request_deserializer)
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            unary: UnaryCall = handler.unary_unary
            # Every unary call passes through each layer: a layer with nothing to do around it
            # adds no coroutine, and the others add one (a partial, not a closure awaiting).
            # Of the function, not the bound method: grpc asks each call's outermost handler
            # whether it is a coroutine function, and inspect answers that for a bound method
            # inside a partial only the slow way.
            layer = type(self).unary
            if layer is not MethodInterceptor.unary:
                unary = functools.partial(layer, self, method, call=unary)
            return grpc.unary_unary_rpc_method_handler(unary, deserializer, serializer)
        if handler.unary_stream is not None:
            stream: StreamCall = handler.unary_stream

            # grpc tells streaming behaviours apart by their being async generator functions.
            async def stream_behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
                async for response in self.stream(method, request, context, stream):
                    yield response

            return grpc.unary_stream_rpc_method_handler(stream_behaviour, deserializer, serializer)
        if handler.stream_stream is not None:
            bidi: StreamCall = handler.stream_stream

            async def bidi_behaviour(requests: Any, context: Context) -> AsyncIterator[Any]:
                async for response in self.bidi(method, requests, context, bidi):
                    yield response

            return grpc.stream_stream_rpc_method_handler(bidi_behaviour, deserializer, serializer)
        return found

    def deserializer(self, inner: Deserializer) -> Deserializer:
        """How the request's bytes become a message; by default, as the method says."""
        return inner

    async def unary(self, method: str, request: Any, context: Context, call: UnaryCall) -> Any:
        """Around a unary call; by default, just the call."""
        return await call(request, context)

    def stream(
        self, method: str, request: Any, context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Around a server-streaming call; by default, just the call."""
        return call(request, context)

    def bidi(
        self, method: str, requests: AsyncIterator[Any], context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Around a bidirectional stream; by default, as around a server-streaming call."""
        return self.stream(method, requests, context, call)


class LoggingInterceptor(MethodInterceptor):
    """Logs each call's method, outcome, duration and trace id (the JSON format's fields)."""

    async def unary(self, method: str, request: Any, context: Context, call: UnaryCall) -> Any:
        """Time the call and log how it ended."""
        started = time.perf_counter()
        outcome = "OK"
        try:
            return await call(request, context)
        except BaseException as error:
            outcome = _outcome(error, context)
            raise
        finally:
            _log(method, outcome, started, context)

    async def stream(
        self, method: str, request: Any, context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Log when the stream opens and how it ended."""
        started = time.perf_counter()
        outcome = "OK"
        if log.isEnabledFor(logging.DEBUG):
            fields = {"method": method, "trace_id": _trace_id(context)}
            log.debug("%s opened", method, extra=fields)
        try:
            async for response in call(request, context):
                yield response
        except BaseException as error:
            outcome = _outcome(error, context)
            raise
        finally:
            _log(method, outcome, started, context)


def _outcome(error: BaseException, context: Context) -> str:
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    return type(error).__name__


# The status a call that ended by an exception, not an abort, ends with.
_OUTCOME_CODES = {"CancelledError": "CANCELLED"}


def _trace_id(context: Context) -> str | None:
    return traceparent.trace_id(context.invocation_metadata())


def _log(method: str, outcome: str, started: float, context: Context) -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000
    level = logging.DEBUG if outcome in ("OK", "CancelledError") else logging.INFO
    if log.isEnabledFor(level):
        fields = {
            "method": method,
            "code": outcome if outcome.isupper() else _OUTCOME_CODES.get(outcome, "UNKNOWN"),
            "duration_ms": round(elapsed_ms, 3),
            "trace_id": _trace_id(context),
        }
        log.log(level, "%s %s %.1fms", method, outcome, elapsed_ms, extra=fields)


class MetricsInterceptor(MethodInterceptor):
    """Counts calls, outcomes, messages and durations under go-grpc-prometheus's names.

    Outermost, so that it sees every call's final status, refusals by the other interceptors
    included. Only present when metrics are on.
    """

    def __init__(self, metrics: RpcMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    async def unary(self, method: str, request: Any, context: Context, call: UnaryCall) -> Any:
        """Count the call, its request, its response if any, and how it ended."""
        m = self._metrics.method(UNARY, method)
        m.started += 1
        m.received += 1
        started = time.perf_counter()
        code = "OK"
        try:
            response = await call(request, context)
        except BaseException as error:
            code = _code_name(error, context)
            raise
        finally:
            m.handled[code] += 1
            m.observe(time.perf_counter() - started)
        m.sent += 1
        return response

    def stream(
        self, method: str, request: Any, context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Count the stream, its request, each message it sends, and how it ended."""
        m = self._metrics.method(SERVER_STREAM, method)
        m.received += 1
        return self._streamed(m, request, context, call)

    def bidi(
        self, method: str, requests: AsyncIterator[Any], context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Count the stream, each message it receives and sends, and how it ended."""
        m = self._metrics.method(BIDI_STREAM, method)
        return self._streamed(m, _counted(requests, m), context, call)

    async def _streamed(
        self, m: MethodMetrics, request: Any, context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        m.started += 1
        started = time.perf_counter()
        code = "OK"
        try:
            # Subscribe writes its messages through the context rather than yielding them.
            counting = cast(Context, _CountingContext(context, m))
            async for response in call(request, counting):
                m.sent += 1
                yield response
        except BaseException as error:
            code = _code_name(error, context)
            raise
        finally:
            m.handled[code] += 1
            m.observe(time.perf_counter() - started)


async def _counted(requests: AsyncIterator[Any], metrics: MethodMetrics) -> AsyncIterator[Any]:
    async for request in requests:
        metrics.received += 1
        yield request


class _CountingContext:
    """A servicer context that counts the messages written through it."""

    def __init__(self, context: Context, metrics: MethodMetrics) -> None:
        self._context = context
        self._metrics = metrics

    async def write(self, message: Any) -> None:
        """Write, then count the message."""
        await self._context.write(message)
        self._metrics.sent += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _code_name(error: BaseException, context: Context) -> str:
    """The status a call that raised `error` ends with, as go-grpc-prometheus names it."""
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        return grpc_code_name(code.name) if isinstance(code, grpc.StatusCode) else "Unknown"
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        # grpc cancels the handler when the client cancels or its deadline passes.
        remaining: float | None = cast("float | None", context.time_remaining())
        return "DeadlineExceeded" if remaining is not None and remaining <= 0 else "Canceled"
    # grpc answers anything else a handler raises with UNKNOWN.
    return "Unknown"


class ErrorInterceptor(MethodInterceptor):
    """Turns domain errors into their statuses, and anything unexpected into INTERNAL."""

    async def unary(self, method: str, request: Any, context: Context, call: UnaryCall) -> Any:
        """Map what the call raised."""
        try:
            return await call(request, context)
        except Exception as error:
            await self._abort(method, context, error)

    async def stream(
        self, method: str, request: Any, context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Map what the stream raised."""
        try:
            async for response in call(request, context):
                yield response
        except Exception as error:
            await self._abort(method, context, error)

    @staticmethod
    async def _abort(method: str, context: Context, error: Exception) -> None:
        if isinstance(error, grpc.aio.AbortError):
            raise error
        if isinstance(error, JourneyError):
            await abort(context, error)
        log.exception("%s failed", method, exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class CheckingInterceptor(MethodInterceptor):
    """Runs a check before the call starts; the check raises to refuse it."""

    def check(self, method: str, request: Any, context: Context) -> None:
        """Raise a JourneyError to refuse the call."""

    async def unary(self, method: str, request: Any, context: Context, call: UnaryCall) -> Any:
        """Check, then call."""
        self.check(method, request, context)
        return await call(request, context)

    async def stream(
        self, method: str, request: Any, context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Check, then stream."""
        self.check(method, request, context)
        async for response in call(request, context):
            yield response


class AuthInterceptor(CheckingInterceptor):
    """Lets a Journey call through only with an API key that has the method's role.

    Health and reflection are not wrapped (see MethodInterceptor), so they stay open.
    """

    def __init__(self, keys: KeyRing) -> None:
        super().__init__()
        self._keys = keys

    def check(self, method: str, request: Any, context: Context) -> None:
        """Raise unless the call's key has the method's role."""
        # Metadata keys arrive lower-cased; the key itself is never logged.
        metadata = context.invocation_metadata() or ()
        values = [v for k, v in metadata if k == "authorization"]
        value = values[0] if len(values) == 1 else None
        self._keys.check(method, value if isinstance(value, str) else None)


class SubscriberLimitInterceptor(MethodInterceptor):
    """Refuses a Subscribe with RESOURCE_EXHAUSTED while `limit` subscriptions are open."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.open = 0

    async def stream(
        self, method: str, request: Any, context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Count the stream while it runs."""
        if self.open >= self.limit:
            raise ResourceExhausted(
                f"the server already serves max_subscribers ({self.limit}) subscriptions"
            )
        self.open += 1
        try:
            async for response in call(request, context):
                yield response
        finally:
            self.open -= 1

    def bidi(
        self, method: str, requests: AsyncIterator[Any], context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Not a subscription: just the call."""
        return call(requests, context)


class AdmissionInterceptor(MethodInterceptor):
    """Counts running Journey calls, and refuses new ones with UNAVAILABLE once closed.

    A call refused here was never started, so the client knows it was not stored and can retry.
    Stopping the grpc server while calls run or arrive answers them CANCELLED instead, which
    leaves a client unable to tell; so shutdown closes this gate and drains it first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.open = True
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_arrival = 0.0

    def close(self) -> None:
        """Refuse every call from now on."""
        self.open = False

    async def drained(self, quiet: float = 0.1) -> None:
        """Wait until no admitted call runs and none arrived for `quiet` seconds.

        The quiet spell lets calls already received, but not yet started, be refused here
        rather than cancelled by the stop that follows.
        """
        loop = asyncio.get_running_loop()
        while True:
            await self._idle.wait()
            waited = loop.time() - self._last_arrival
            if waited >= quiet:
                return
            await asyncio.sleep(quiet - waited)

    def _enter(self) -> None:
        self._last_arrival = asyncio.get_running_loop().time()
        if not self.open:
            raise Unavailable("the server is shutting down")
        self._running += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._running -= 1
        if not self._running:
            self._idle.set()

    async def unary(self, method: str, request: Any, context: Context, call: UnaryCall) -> Any:
        """Admit the call, or refuse it."""
        self._enter()
        try:
            return await call(request, context)
        finally:
            self._leave()

    async def stream(
        self, method: str, request: Any, context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Admit the stream, or refuse it."""
        self._enter()
        try:
            async for response in call(request, context):
                yield response
        finally:
            self._leave()


@dataclass(frozen=True)
class Undecodable:
    """Request bytes that are not a valid message (bad UTF-8, corrupt wire, nesting too deep)."""

    error: str


class ValidationInterceptor(CheckingInterceptor):
    """Checks each request against its method's validator before the servicer sees it."""

    def deserializer(self, inner: Deserializer) -> Deserializer:
        """Keep an undecodable request as Undecodable: grpc itself would answer it UNKNOWN."""

        def lenient(data: bytes) -> Any:
            try:
                return inner(data)
            except DecodeError as error:
                return Undecodable(str(error))

        return lenient

    def bidi(
        self, method: str, requests: AsyncIterator[Any], context: Context, call: StreamCall
    ) -> AsyncIterator[Any]:
        """Check each request as the servicer reads it."""
        return call(self._checked(method, requests, context), context)

    async def _checked(
        self, method: str, requests: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[Any]:
        async for request in requests:
            self.check(method, request, context)
            yield request

    def check(self, method: str, request: Any, context: Context) -> None:
        """Raise InvalidArgument listing every bad field."""
        if isinstance(request, Undecodable):
            raise InvalidArgument(
                [FieldViolation("request", f"cannot be decoded: {request.error}")]
            )
        validator = VALIDATORS.get(method)
        if validator is not None and (violations := validator(request)):
            raise InvalidArgument(violations)
