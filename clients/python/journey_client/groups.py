"""Consumer-group settings from names a person would type: orderings, durations, start points."""

from __future__ import annotations

import re
from datetime import timedelta

from journey_client import pb
from journey_client.filters import Start

ORDERINGS: dict[str, pb.ConsumerGroupOrdering.ValueType] = {
    "none": pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_NONE,
    "session": pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION,
    "profile": pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_PROFILE,
}

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")


def ordering(name: str | int) -> pb.ConsumerGroupOrdering.ValueType:
    """An ordering from `none`, `session`, `profile`, its enum name or number."""
    if isinstance(name, int):
        return pb.ConsumerGroupOrdering.ValueType(name)
    if name.lower() in ORDERINGS:
        return ORDERINGS[name.lower()]
    try:
        return pb.ConsumerGroupOrdering.Value(name)
    except ValueError:
        raise ValueError(f"ordering must be none, session or profile, not {name!r}") from None


def ordering_name(value: int) -> str:
    """`none`, `session` or `profile` (unspecified means none)."""
    for name, number in ORDERINGS.items():
        if number == value:
            return name
    return "none"


def parse_duration(text: str) -> timedelta:
    """`30s`, `500ms`, `2m`, `1h`, or a number of seconds; raises ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration (like 30s, 500ms, 2m, 1h): {text!r}")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])


def create_request(
    name: str,
    filter: pb.SystemEventFilter | None = None,
    start: Start = "end",
    *,
    ack_timeout: float | timedelta | None = None,
    max_attempts: int = 0,
    ordering_: str | int = "none",
) -> pb.CreateConsumerGroupRequest:
    """The CreateConsumerGroupRequest for these settings (the server checks their ranges)."""
    request = pb.CreateConsumerGroupRequest(
        name=name, filter=filter, max_attempts=max_attempts, ordering=ordering(ordering_)
    )
    if start == "beginning":
        request.beginning.SetInParent()
    elif start == "end":
        request.end.SetInParent()
    elif isinstance(start, int) and start >= 0:
        request.after_position = start
    else:
        raise ValueError(f"start must be beginning, end or a position >= 0, not {start!r}")
    if ack_timeout is not None:
        if not isinstance(ack_timeout, timedelta):
            ack_timeout = timedelta(seconds=ack_timeout)
        request.ack_timeout.FromTimedelta(ack_timeout)
    if max_attempts < 0:
        raise ValueError(f"max_attempts must be >= 0, not {max_attempts}")
    return request
