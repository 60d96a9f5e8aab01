"""System-event filters and subscription start points, from names a person would type."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeAlias

from journey_client import pb

# The config names used throughout Journey's docs and configuration.
TYPE_NAMES: dict[str, pb.SystemEventType.ValueType] = {
    "profile-created": pb.SystemEventType.SYSTEM_EVENT_TYPE_PROFILE_CREATED,
    "session-opened": pb.SystemEventType.SYSTEM_EVENT_TYPE_SESSION_OPENED,
    "visit-started": pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_STARTED,
    "visit-ended": pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED,
    "session-closed": pb.SystemEventType.SYSTEM_EVENT_TYPE_SESSION_CLOSED,
}

# "beginning", "end", or a position to resume after (exclusive).
Start: TypeAlias = Literal["beginning", "end"] | int


def event_type(name: str | int) -> pb.SystemEventType.ValueType:
    """A system-event type from its config name, enum name or number."""
    if isinstance(name, int):
        return pb.SystemEventType.ValueType(name)
    if name in TYPE_NAMES:
        return TYPE_NAMES[name]
    try:
        return pb.SystemEventType.Value(name)
    except ValueError:
        known = ", ".join(TYPE_NAMES)
        raise ValueError(f"unknown system-event type {name!r} (known: {known})") from None


def event_filter(
    types: Iterable[str | int] = (),
    *,
    profile_id: str = "",
    session_id: str = "",
    source_id: str = "",
) -> pb.SystemEventFilter:
    """A filter: every condition given must hold; types by config name (`visit-ended`) or enum."""
    return pb.SystemEventFilter(
        types=[event_type(t) for t in types],
        profile_id=profile_id,
        session_id=session_id,
        source_id=source_id,
    )


def parse_start(text: str) -> Start:
    """`beginning`, `end`, or a position (exclusive); raises ValueError otherwise."""
    if text in ("beginning", "end"):
        return text  # type: ignore[return-value]
    if text.isdigit():
        return int(text)
    raise ValueError(f"start must be beginning, end or a position, not {text!r}")


# Events per message the clients ask for: a replay or a backlog arrives many events per message
# (grpc's cost is per message), while a lone live event still comes at once.
DEFAULT_MAX_BATCH_SIZE = 1000


def subscribe_request(
    filter: pb.SystemEventFilter | None,
    start: Start,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> pb.SubscribeRequest:
    """The SubscribeRequest for a filter, a start point and a batch size (0 or 1: no batches)."""
    if max_batch_size < 0:
        raise ValueError(f"max_batch_size must be >= 0, not {max_batch_size}")
    request = pb.SubscribeRequest(filter=filter, max_batch_size=max_batch_size)
    if start == "beginning":
        request.beginning.SetInParent()
    elif start == "end":
        request.end.SetInParent()
    elif isinstance(start, int) and start >= 0:
        request.after_position = start
    else:
        raise ValueError(f"start must be beginning, end or a position >= 0, not {start!r}")
    return request
