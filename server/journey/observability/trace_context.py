"""W3C trace context for system events: the caller's as received, or the current span's."""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Mapping
from typing import Any

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
NONE: Mapping[str, str] = {}

# version-traceid-parentid-flags, lowercase hex (W3C Trace Context, section 3.2). Version ff is
# invalid; a higher version may append fields after a dash, of which only these four are read.
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})"
    r"-[0-9a-f]{2}(?P<rest>-.*)?"
)
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
# A tracestate is at most 32 list members; 512 characters is what the spec asks vendors to keep.
_MAX_TRACESTATE = 512

# Set by the tracing interceptor for the call it wraps: what the events the call causes carry.
# None (the default) when tracing is off: then the caller's own context is used.
_FOR_EVENTS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "journey_trace_context", default=None
)


def valid_traceparent(value: str) -> bool:
    """Whether `value` is a syntactically valid W3C traceparent."""
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return False
    version = match["version"]
    if version == "ff" or (version == "00" and match["rest"] is not None):
        return False
    return match["trace_id"] != _ZERO_TRACE_ID and match["span_id"] != _ZERO_SPAN_ID


def from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> Mapping[str, str]:
    """The caller's traceparent (if valid) and tracestate (if any), as received; else none."""
    if not metadata:
        return NONE
    traceparent = tracestate = None
    for key, value in metadata:
        if key == TRACEPARENT:
            # grpc hands the server only the last of several (checked with grpcio 1.85).
            traceparent = value
        elif key == TRACESTATE and isinstance(value, str):
            # Several tracestate headers are one list (RFC 9110 field combination).
            tracestate = value if tracestate is None else f"{tracestate},{value}"
    if not isinstance(traceparent, str) or not valid_traceparent(traceparent):
        return NONE
    if (
        tracestate is None
        or not tracestate.strip()
        or len(tracestate) > _MAX_TRACESTATE
        or not tracestate.isprintable()
        or not tracestate.isascii()
    ):
        # A bad tracestate is dropped, the traceparent kept (W3C Trace Context, 3.3.1).
        return {TRACEPARENT: traceparent}
    return {TRACEPARENT: traceparent, TRACESTATE: tracestate}


def for_events(metadata: Iterable[tuple[str, Any]] | None) -> Mapping[str, str]:
    """The trace context the events caused by the current call carry."""
    chosen = _FOR_EVENTS.get()
    return from_metadata(metadata) if chosen is None else chosen


def set_for_events(value: Mapping[str, str]) -> contextvars.Token[Mapping[str, str] | None]:
    """Make `value` what the current call's events carry (the tracing interceptor's part)."""
    return _FOR_EVENTS.set(value)


def reset_for_events(token: contextvars.Token[Mapping[str, str] | None]) -> None:
    """Undo set_for_events."""
    _FOR_EVENTS.reset(token)
