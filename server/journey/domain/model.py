"""The domain's values: system-event types, profiles, sessions, tracked and system events."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple


class SystemEventType(enum.IntEnum):
    """The milestones Journey emits; the values equal the protobuf enum numbers."""

    PROFILE_CREATED = 1
    SESSION_OPENED = 2
    VISIT_STARTED = 3
    VISIT_ENDED = 4
    SESSION_CLOSED = 5

    @property
    def slug(self) -> str:
        """The Tracardi name used in configuration and docs, e.g. `visit-ended`."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_slug(cls, slug: str) -> SystemEventType:
        """Parse a Tracardi name; ValueError if it names no type."""
        for member in cls:
            if member.slug == slug:
                return member
        raise ValueError(f"unknown system event type {slug!r}")


# No trace context: what events caused by an untraced call, or by a timeout, carry.
NO_TRACE_CONTEXT: Mapping[str, str] = MappingProxyType({})


class SessionState(enum.IntEnum):
    """Where a session stands; the values equal the protobuf enum numbers."""

    ACTIVE = 1
    IDLE = 2
    CLOSED = 3


class Profile(NamedTuple):
    """A customer (a named tuple, as Session: the rules make new ones at every call)."""

    id: str
    create_time: datetime
    last_activity_time: datetime
    visit_count: int
    session_count: int


class Session(NamedTuple):
    """A series of visits by one profile; `visit_*` describe the current or last visit.

    A named tuple, as Profile: each Track call makes one with `_replace`, and a frozen
    dataclass's `dataclasses.replace` took most of the rules' time.
    """

    id: str
    profile_id: str
    source_id: str
    state: SessionState
    open_time: datetime
    last_activity_time: datetime
    close_time: datetime | None
    event_count: int
    visit_count: int
    visit_start_time: datetime
    visit_event_count: int


class NewTrackedEvent(NamedTuple):
    """A tracked event as a client sent it; `properties` is the serialized Struct, kept opaque.

    Named tuples, this and TrackedEvent: there is one of each per event tracked, and a frozen
    dataclass's __init__ (an object.__setattr__ per field) cost five times as much.
    """

    id: str
    type: str
    properties: bytes
    occur_time: datetime | None


class TrackedEvent(NamedTuple):
    """A tracked event as stored in the audit log (a named tuple: see NewTrackedEvent)."""

    id: str
    source_id: str
    type: str
    properties: bytes
    occur_time: datetime
    receive_time: datetime
    profile_id: str
    session_id: str


@dataclass(frozen=True)
class SystemEventDraft:
    """A system event that a rule decided on, before storage gives it an id and a position."""

    type: SystemEventType
    occur_time: datetime
    profile_id: str
    session_id: str
    source_id: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SystemEvent:
    """A committed system event: a draft with its id and its position in the log."""

    position: int
    id: str
    type: SystemEventType
    occur_time: datetime
    profile_id: str
    session_id: str
    source_id: str
    properties: dict[str, Any]
    # The W3C trace context (`traceparent`, `tracestate`) of the call that caused it, if any.
    trace_context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """A system event as the bytes a subscriber is sent: encoded once, when it was committed.

    The encoding is the API's, handed to storage as a function; the domain only carries it.
    """

    position: int
    data: bytes


# Turns a committed system event into the bytes its subscribers are sent.
Encode = Callable[[SystemEvent], bytes]


@dataclass(frozen=True)
class SystemEventFilter:
    """Selects system events; an empty condition matches anything."""

    types: frozenset[SystemEventType] = frozenset()
    profile_id: str = ""
    session_id: str = ""
    source_id: str = ""

    def matches(self, event: SystemEvent) -> bool:
        """Whether the event satisfies every condition that is set."""
        return (
            (not self.types or event.type in self.types)
            and (not self.profile_id or event.profile_id == self.profile_id)
            and (not self.session_id or event.session_id == self.session_id)
            and (not self.source_id or event.source_id == self.source_id)
        )
