"""Request validation: every check that needs only the request, listing each bad field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from journey.domain.errors import FieldViolation
from journey.domain.model import SystemEventType
from journey_client import pb

MAX_ID = 128
MAX_EVENTS = 500
MAX_PROPERTIES_BYTES = 64 * 1024
MAX_PAGE_SIZE = 1000

# The range RFC 3339 (and protobuf's JSON mapping) can express: 0001-01-01 to 9999-12-31.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_KNOWN_TYPES = frozenset(int(t) for t in SystemEventType)

Violations = list[FieldViolation]


def _id(out: Violations, field: str, value: str, *, required: bool = False) -> None:
    if required and not value:
        out.append(FieldViolation(field, "is required"))
    elif len(value) > MAX_ID:
        out.append(FieldViolation(field, f"is {len(value)} characters; at most {MAX_ID} allowed"))
    elif "\x00" in value:
        # PostgreSQL text cannot hold it; refused on every database alike.
        out.append(FieldViolation(field, "contains a NUL character"))


def _time(out: Violations, field: str, message: Timestamp) -> None:
    if not (_MIN_SECONDS <= message.seconds <= _MAX_SECONDS and 0 <= message.nanos < 10**9):
        out.append(FieldViolation(field, "is not a valid time between years 1 and 9999"))


def _size(out: Violations, field: str, size: int) -> None:
    if size > MAX_PROPERTIES_BYTES:
        out.append(
            FieldViolation(
                field, f"is {size} bytes serialized; at most {MAX_PROPERTIES_BYTES} allowed"
            )
        )


def _filter(out: Violations, field: str, message: pb.SystemEventFilter) -> None:
    for i, kind in enumerate(message.types):
        if kind not in _KNOWN_TYPES:
            out.append(FieldViolation(f"{field}.types[{i}]", f"{kind} is not a system event type"))
    for name in ("profile_id", "session_id", "source_id"):
        _id(out, f"{field}.{name}", getattr(message, name))


def track(request: pb.TrackRequest) -> Violations:
    """TrackerService.Track."""
    out: Violations = []
    _id(out, "source_id", request.source_id, required=True)
    _id(out, "profile_id", request.profile_id)
    _id(out, "session_id", request.session_id)
    if not request.events:
        out.append(FieldViolation("events", "at least one event is required"))
    elif len(request.events) > MAX_EVENTS:
        out.append(
            FieldViolation(
                "events", f"has {len(request.events)} events; at most {MAX_EVENTS} allowed"
            )
        )
    else:
        for i, event in enumerate(request.events):
            _id(out, f"events[{i}].id", event.id)
            _id(out, f"events[{i}].type", event.type, required=True)
            _size(out, f"events[{i}].properties", event.properties.ByteSize())
            if event.HasField("occur_time"):
                _time(out, f"events[{i}].occur_time", event.occur_time)
    _size(out, "context", request.context.ByteSize())
    return out


def subscribe(request: pb.SubscribeRequest) -> Violations:
    """SystemEventService.Subscribe."""
    out: Violations = []
    _filter(out, "filter", request.filter)
    return out


def list_system_events(request: pb.ListSystemEventsRequest) -> Violations:
    """SystemEventService.ListSystemEvents; the page token is checked where it is decoded."""
    out: Violations = []
    _filter(out, "filter", request.filter)
    if request.page_size < 0:
        out.append(FieldViolation("page_size", "must not be negative"))
    for name in ("start_time", "end_time"):
        if request.HasField(name):
            _time(out, name, getattr(request, name))
    return out


def get_session(request: pb.GetSessionRequest) -> Violations:
    """SessionService.GetSession."""
    out: Violations = []
    _id(out, "session_id", request.session_id, required=True)
    return out


def end_session(request: pb.EndSessionRequest) -> Violations:
    """SessionService.EndSession."""
    out: Violations = []
    _id(out, "session_id", request.session_id, required=True)
    _id(out, "reason", request.reason)
    return out


def get_profile(request: pb.GetProfileRequest) -> Violations:
    """SessionService.GetProfile."""
    out: Violations = []
    _id(out, "profile_id", request.profile_id, required=True)
    return out


VALIDATORS: dict[str, Callable[[Any], Violations]] = {
    "/journey.v1.TrackerService/Track": track,
    "/journey.v1.SystemEventService/Subscribe": subscribe,
    "/journey.v1.SystemEventService/ListSystemEvents": list_system_events,
    "/journey.v1.SessionService/GetSession": get_session,
    "/journey.v1.SessionService/EndSession": end_session,
    "/journey.v1.SessionService/GetProfile": get_profile,
}
