"""The trace id of a call, from its W3C `traceparent` metadata (trace context level 1)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# version-traceid-parentid-flags, lower-case hex; a later version may append fields.
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-[0-9a-f]{2}(?P<rest>-.*)?"
)
_INVALID_TRACE_ID = "0" * 32
_INVALID_PARENT_ID = "0" * 16


def trace_id(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The 32-hex-digit trace id of a valid, single `traceparent` header; None otherwise."""
    values = [value for key, value in metadata or () if key == "traceparent"]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    found = _TRACEPARENT.fullmatch(values[0].strip())
    if (
        found is None
        or found["version"] == "ff"
        # Version 00 has exactly four fields; only later versions may add more.
        or (found["version"] == "00" and found["rest"] is not None)
        or found["trace_id"] == _INVALID_TRACE_ID
        or found["parent_id"] == _INVALID_PARENT_ID
    ):
        return None
    return found["trace_id"]
