"""Consumer groups' pure rules: settings, per-key ordering, redelivery, dead letters, assignment."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, TypeVar

from journey.domain.model import SystemEventFilter

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
DEFAULT_ACK_TIMEOUT = timedelta(seconds=30)
MIN_ACK_TIMEOUT = timedelta(seconds=1)
MAX_ACK_TIMEOUT = timedelta(hours=1)
DEFAULT_MAX_ATTEMPTS = 5
MAX_MAX_ATTEMPTS = 100
DEFAULT_MAX_IN_FLIGHT = 100
MAX_MAX_IN_FLIGHT = 1000
# A nack without a delay waits 1 s after the first attempt, doubling, at most ack_timeout.
FIRST_BACKOFF = timedelta(seconds=1)
MAX_REASON = 1024

REASON_MAX_ATTEMPTS = "max attempts"
REASON_ACK_TIMEOUT = "ack timeout"

BEGINNING = "beginning"
END = "end"
# Where a new group starts: BEGINNING, END, or after a position.
Start = str | int


class Ordering(enum.IntEnum):
    """How a group orders the events of one key; the values equal the protobuf enum numbers."""

    NONE = 1
    SESSION = 2
    PROFILE = 3


class EntryState(enum.IntEnum):
    """Where one event of one group stands; an acknowledged event has no entry any more."""

    PENDING = 0
    IN_FLIGHT = 1
    DEAD = 2
    # With per-key ordering: an earlier event of its key is still unsettled. Only the first
    # unsettled event of a key is ever PENDING or IN_FLIGHT, so dispatch needs no per-key check.
    # Most waiting events have no entry at all: they wait in the log behind their key's tail
    # entry (storage.groups); a redriven event waits in one of these.
    BLOCKED = 3


@dataclass(frozen=True)
class GroupSettings:
    """What a group is created with; the start point is not part of it (it counts only once)."""

    event_filter: SystemEventFilter
    ack_timeout: timedelta
    max_attempts: int
    ordering: Ordering


@dataclass(frozen=True)
class GroupState:
    """A group, its settings, and its progress as stored (on every replica)."""

    name: str
    settings: GroupSettings
    create_time: datetime
    ack_floor: int
    pending_count: int
    in_flight_count: int
    dead_letter_count: int
    member_count: int
    oldest_pending_time: datetime | None


@dataclass(frozen=True)
class DeadLetter:
    """An event a group gave up on, as the bytes subscribers are sent, and why."""

    position: int
    encoded: bytes
    attempts: int
    reason: str
    dead_letter_time: datetime


class Delivery(NamedTuple):
    """One event handed to one member: `encoded` is the event as subscribers are sent it.

    A named tuple: a round makes one per event, and a frozen dataclass's __init__ (an
    object.__setattr__ per field) cost four times as much.
    """

    delivery_id: str
    attempt: int
    position: int
    encoded: bytes


@dataclass(frozen=True)
class Settled:
    """A member's acks, nacks and rejects now durable, and those that came too late.

    `ignored`: deliveries this member held whose event had meanwhile gone to another member (or
    was dead-lettered); nothing was done for them, and their slots are free as well.
    """

    delivery_ids: tuple[str, ...]
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class Nack:
    """Deliver these again after `delay` (None: the group's backoff)."""

    delivery_ids: tuple[str, ...]
    delay: timedelta | None


@dataclass(frozen=True)
class Reject:
    """Dead-letter these now, for `reason`."""

    delivery_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Ack:
    """These are done."""

    delivery_ids: tuple[str, ...]


@dataclass(frozen=True)
class Extend:
    """Restart these deliveries' ack_timeout."""

    delivery_ids: tuple[str, ...]


MemberRequest = Ack | Nack | Reject | Extend


def ordering_key(ordering: Ordering, session_id: str, profile_id: str) -> str:
    """The key whose events a group delivers one at a time, in order ("" for NONE)."""
    if ordering == Ordering.SESSION:
        return session_id or profile_id
    if ordering == Ordering.PROFILE:
        return profile_id
    return ""


def backoff(attempt: int, ack_timeout: timedelta) -> timedelta:
    """The delay before delivering again after the `attempt`-th delivery was nacked."""
    doubled: timedelta = FIRST_BACKOFF * (1 << min(max(attempt - 1, 0), 30))
    return min(doubled, ack_timeout)


def exhausted(attempt: int, max_attempts: int) -> bool:
    """Whether an event delivered `attempt` times without an ack goes to the dead letters."""
    return attempt >= max_attempts


def same_settings(a: GroupSettings, b: GroupSettings) -> bool:
    """Whether creating a group with `b` where one with `a` exists returns it."""
    return a == b


T = TypeVar("T")


def assign(items: Sequence[T], rooms: Mapping[str, int]) -> list[tuple[str, T]]:
    """Deal `items` (in order) to the members with room, one at a time in turn.

    So a batch is spread over every member with room rather than filling the first one, and
    with per-key ordering the heads of different keys go to different members in parallel.
    The items dealt are the first ones: it stops only when no member has room left.
    """
    left = {member: room for member, room in rooms.items() if room > 0}
    out: list[tuple[str, T]] = []
    members = list(left)
    turn = 0
    for item in items:
        if not members:
            break
        member = members[turn % len(members)]
        out.append((member, item))
        left[member] -= 1
        if left[member] == 0:
            members.remove(member)
        else:
            turn += 1
    return out
