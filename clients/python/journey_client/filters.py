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


def subscribe_request(filter: pb.SystemEventFilter | None, start: Start) -> pb.SubscribeRequest:
    """The SubscribeRequest for a filter and a start point."""
    request = pb.SubscribeRequest(filter=filter)
    if start == "beginning":
        request.beginning.SetInParent()
    elif start == "end":
        request.end.SetInParent()
    elif isinstance(start, int) and start >= 0:
        request.after_position = start
    else:
        raise ValueError(f"start must be beginning, end or a position >= 0, not {start!r}")
    return request
