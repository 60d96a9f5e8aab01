"""Request validation: every check that needs only the request, listing each bad field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from journey.domain import groups
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


def _event_may_be_bad(event: pb.TrackedEvent) -> bool:
    # What the checks below look at, without naming anything; True means check in full.
    ids_ok = (
        0 < len(event.type) <= MAX_ID
        and len(event.id) <= MAX_ID
        and "\x00" not in event.type
        and "\x00" not in event.id
    )
    if not ids_ok or event.properties.ByteSize() > MAX_PROPERTIES_BYTES:
        return True
    if event.HasField("occur_time"):
        seconds, nanos = event.occur_time.seconds, event.occur_time.nanos
        return not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos < 10**9)
    return False


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
            # The field names are made only for an event that needs them: a Track of 20 page
            # views built 80 of them, all for nothing, at every call.
            if _event_may_be_bad(event):
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


def _group_name(out: Violations, field: str, name: str) -> None:
    if not name:
        out.append(FieldViolation(field, "is required"))
    elif not groups.NAME_PATTERN.fullmatch(name):
        out.append(
            FieldViolation(
                field, "must be 1-64 characters from [a-z0-9._-], starting with a letter or digit"
            )
        )


def _duration(out: Violations, field: str, message: Duration, low: float, high: float) -> None:
    nanos_ok = -(10**9) < message.nanos < 10**9 and (message.seconds * message.nanos >= 0)
    seconds = message.seconds + message.nanos / 1e9
    if not nanos_ok or not low <= seconds <= high:
        out.append(FieldViolation(field, f"must be from {low:g} s to {high:g} s"))


def _delivery_ids(out: Violations, field: str, ids: Any) -> None:
    # None at all is allowed: a no-op, as an id no longer held is.
    if len(ids) > groups.MAX_MAX_IN_FLIGHT:
        out.append(
            FieldViolation(
                f"{field}.delivery_ids", f"at most {groups.MAX_MAX_IN_FLIGHT} ids per message"
            )
        )
    # Checked together first: a busy member sends hundreds of ids a second, nearly all valid.
    if max(map(len, ids), default=0) <= MAX_ID and not any("\x00" in value for value in ids):
        return
    for i, value in enumerate(ids):
        _id(out, f"{field}.delivery_ids[{i}]", value)


_ORDERINGS = frozenset(pb.ConsumerGroupOrdering.values())


def create_consumer_group(request: pb.CreateConsumerGroupRequest) -> Violations:
    """ConsumerGroupService.CreateConsumerGroup."""
    out: Violations = []
    _group_name(out, "name", request.name)
    _filter(out, "filter", request.filter)
    if request.HasField("ack_timeout"):
        _duration(
            out,
            "ack_timeout",
            request.ack_timeout,
            groups.MIN_ACK_TIMEOUT.total_seconds(),
            groups.MAX_ACK_TIMEOUT.total_seconds(),
        )
    if request.max_attempts > groups.MAX_MAX_ATTEMPTS:
        out.append(
            FieldViolation("max_attempts", f"must be from 1 to {groups.MAX_MAX_ATTEMPTS}, or 0")
        )
    if request.ordering not in _ORDERINGS:
        out.append(FieldViolation("ordering", f"{request.ordering} is not an ordering"))
    return out


def named(request: Any) -> Violations:
    """A request naming one group (get, delete, redrive)."""
    out: Violations = []
    _group_name(out, "name", request.name)
    return out


def list_consumer_groups(request: pb.ListConsumerGroupsRequest) -> Violations:
    """ConsumerGroupService.ListConsumerGroups."""
    out: Violations = []
    if request.page_size < 0:
        out.append(FieldViolation("page_size", "must not be negative"))
    return out


def list_dead_letters(request: pb.ListDeadLettersRequest) -> Violations:
    """ConsumerGroupService.ListDeadLetters."""
    out = named(request)
    if request.page_size < 0:
        out.append(FieldViolation("page_size", "must not be negative"))
    return out


def consume_order(request: pb.ConsumeRequest, *, first: bool) -> Violations:
    """A Consume stream's `start` comes first, and only first (the servicer knows which is)."""
    out: Violations = []
    kind = request.WhichOneof("request")
    if first and kind != "start":
        out.append(FieldViolation("start", "the first message must be start"))
    elif not first and kind == "start":
        out.append(FieldViolation("start", "only the first message may be start"))
    return out


def consume(request: pb.ConsumeRequest) -> Violations:
    """ConsumerGroupService.Consume: each message, as the servicer reads it."""
    out: Violations = []
    kind = request.WhichOneof("request")
    if kind is None:
        out.append(FieldViolation("request", "one of start, ack, nack, reject, extend is required"))
    elif kind == "start":
        _group_name(out, "start.group", request.start.group)
    elif kind == "nack":
        _delivery_ids(out, "nack", request.nack.delivery_ids)
        if request.nack.HasField("retry_delay"):
            _duration(
                out,
                "nack.retry_delay",
                request.nack.retry_delay,
                0,
                groups.MAX_ACK_TIMEOUT.total_seconds(),
            )
    elif kind == "reject":
        _delivery_ids(out, "reject", request.reject.delivery_ids)
        if len(request.reject.reason) > groups.MAX_REASON:
            out.append(FieldViolation("reject.reason", f"at most {groups.MAX_REASON} characters"))
        elif "\x00" in request.reject.reason:
            out.append(FieldViolation("reject.reason", "contains a NUL character"))
    else:
        _delivery_ids(out, kind, getattr(request, kind).delivery_ids)
    return out


VALIDATORS: dict[str, Callable[[Any], Violations]] = {
    "/journey.v1.TrackerService/Track": track,
    "/journey.v1.SystemEventService/Subscribe": subscribe,
    "/journey.v1.SystemEventService/ListSystemEvents": list_system_events,
    "/journey.v1.SessionService/GetSession": get_session,
    "/journey.v1.SessionService/EndSession": end_session,
    "/journey.v1.SessionService/GetProfile": get_profile,
    "/journey.v1.ConsumerGroupService/CreateConsumerGroup": create_consumer_group,
    "/journey.v1.ConsumerGroupService/GetConsumerGroup": named,
    "/journey.v1.ConsumerGroupService/ListConsumerGroups": list_consumer_groups,
    "/journey.v1.ConsumerGroupService/DeleteConsumerGroup": named,
    "/journey.v1.ConsumerGroupService/ListDeadLetters": list_dead_letters,
    "/journey.v1.ConsumerGroupService/RedriveDeadLetters": named,
    # Each message of the stream (api/interceptors.py checks them as the servicer reads).
    "/journey.v1.ConsumerGroupService/Consume": consume,
}
