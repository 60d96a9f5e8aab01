"""The tables: append-only tracked and system events, profile and session state, consumer groups."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID_LENGTH = 128
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """An aware datetime as stored: integer microseconds since the epoch."""
    return (value - _EPOCH) // _MICROSECOND


def _micros_or_none(value: datetime | None) -> int | None:
    # to_micros for a nullable value, its body inlined: the writer binds several per event.
    return None if value is None else (value - _EPOCH) // _MICROSECOND


class UtcMicros(TypeDecorator[datetime]):
    """A UTC datetime stored as integer microseconds since the epoch.

    Integers compare, index and round-trip exactly and identically on SQLite and PostgreSQL,
    which their native datetime types do not.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        """Convert an aware datetime to microseconds."""
        return _micros_or_none(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], int | None] | None:
        """The conversion itself where the integer needs no processing of its own.

        The default wraps process_bind_param in a function of its own: two calls more per
        value, and the writer binds several per tracked event. Where the dialect's BIGINT
        has a processor, the default's path keeps it.
        """
        if self.impl_instance.bind_processor(dialect) is not None:
            return super().bind_processor(dialect)
        return _micros_or_none

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Convert microseconds back to an aware UTC datetime."""
        if value is None:
            return None
        return _EPOCH + timedelta(microseconds=int(value))


# On SQLite only an INTEGER PRIMARY KEY is the rowid itself (auto-assigned, and the table's
# own order), not a BIGINT one.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of every Journey table."""


class ProfileRow(Base):
    """A profile's current state."""

    __tablename__ = "profiles"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    create_time: Mapped[datetime] = mapped_column(UtcMicros())
    last_activity_time: Mapped[datetime] = mapped_column(UtcMicros())
    visit_count: Mapped[int] = mapped_column(Integer)
    session_count: Mapped[int] = mapped_column(Integer)


class SessionRow(Base):
    """A session's current state, and its current (or last) visit."""

    __tablename__ = "sessions"
    # The sweeper asks "which ACTIVE (or IDLE) sessions saw no activity since T", oldest first.
    __table_args__ = (Index("ix_sessions_state_activity", "state", "last_activity_time"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    source_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    state: Mapped[int] = mapped_column(SmallInteger)
    open_time: Mapped[datetime] = mapped_column(UtcMicros())
    last_activity_time: Mapped[datetime] = mapped_column(UtcMicros())
    close_time: Mapped[datetime | None] = mapped_column(UtcMicros(), nullable=True)
    event_count: Mapped[int] = mapped_column(BigInteger)
    visit_count: Mapped[int] = mapped_column(Integer)
    visit_start_time: Mapped[datetime] = mapped_column(UtcMicros())
    visit_event_count: Mapped[int] = mapped_column(BigInteger)


class TrackedEventRow(Base):
    """A tracked event: append-only."""

    __tablename__ = "tracked_events"
    # Idempotency: a client id is stored once per source.
    __table_args__ = (
        Index("ux_tracked_events_source_event", "source_id", "event_id", unique=True),
    )

    seq: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    source_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    type: Mapped[str] = mapped_column(String(ID_LENGTH))
    # The serialized google.protobuf.Struct, stored as sent: converting it to JSON on the
    # hot path would cost more than the insert.
    properties: Mapped[bytes] = mapped_column(LargeBinary)
    occur_time: Mapped[datetime] = mapped_column(UtcMicros())
    receive_time: Mapped[datetime] = mapped_column(UtcMicros())
    profile_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    session_id: Mapped[str] = mapped_column(String(ID_LENGTH))


class SystemEventRow(Base):
    """A system event: append-only, keyed by its position in the log."""

    __tablename__ = "system_events"
    # Subscriptions and listings filtered by session or profile walk these in position order.
    __table_args__ = (
        Index("ix_system_events_session_position", "session_id", "position"),
        Index("ix_system_events_profile_position", "profile_id", "position"),
    )

    # Assigned by the single writer in commit order, not by the database: see writer.py.
    position: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[int] = mapped_column(SmallInteger)
    occur_time: Mapped[datetime] = mapped_column(UtcMicros())
    profile_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    session_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    source_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    properties: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The event as a subscriber is sent it (a journey.v1.SubscribeResponse carrying it), made
    # when it was committed: a replay sends these bytes with nothing decoded or encoded. The
    # row never changes, so they never go stale. Nullable only because a database made before
    # this column gets it added and filled by a migration (revision 0002_fill_encoded).
    encoded: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class ConsumerGroupRow(Base):
    """A consumer group's settings, and how far it has read the log."""

    __tablename__ = "consumer_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # The SystemEventFilter: {"types": [ints], "profile_id", "session_id", "source_id"}.
    filter: Mapped[dict[str, Any]] = mapped_column(JSON)
    ack_timeout_us: Mapped[int] = mapped_column(BigInteger)
    max_attempts: Mapped[int] = mapped_column(Integer)
    ordering: Mapped[int] = mapped_column(SmallInteger)
    create_time: Mapped[datetime] = mapped_column(UtcMicros())
    # Every matching event up to here has an entry, was acknowledged, or waits in the log
    # behind its key's tail entry: reading goes on after it. Advanced under the writer's lock,
    # so no replica skips or repeats an event. (scanned_position before revision 0005.)
    read_position: Mapped[int] = mapped_column(BigInteger)


class ConsumerGroupEntryRow(Base):
    """One matching event of one group, until acknowledged (then the row is deleted)."""

    __tablename__ = "consumer_group_entries"
    __table_args__ = (
        # Dispatch: a group's pending entries in position order; counts and listings by state.
        Index("ix_consumer_group_entries_state", "group_id", "state", "position"),
        # Per-key ordering: which is the next blocked entry of these keys? (A short range per
        # key of the state's entries, the first of it the answer.)
        Index("ix_consumer_group_entries_key", "group_id", "state", "key", "position"),
        # No index on delivery or member ids (revision 0004): each was written at every hand-out
        # and ack; requests find entries by position, and a member's entries are in the
        # group's short in-flight range of the state index.
    )

    group_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # The ordering key (session or profile id); "" without ordering.
    key: Mapped[str] = mapped_column(String(ID_LENGTH))
    occur_time: Mapped[datetime] = mapped_column(UtcMicros())
    # domain.groups.EntryState.
    state: Mapped[int] = mapped_column(SmallInteger)
    # Deliveries so far.
    attempt: Mapped[int] = mapped_column(Integer)
    # A pending entry is not delivered before this (a nack's delay).
    visible_at: Mapped[datetime] = mapped_column(UtcMicros())
    # The last delivery: to whom, its id, and until when it may go unacknowledged.
    member_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    delivery_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcMicros(), nullable=True)
    # Set when dead-lettered.
    reason: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    dead_letter_time: Mapped[datetime | None] = mapped_column(UtcMicros(), nullable=True)
    # With per-key ordering, on an unsettled entry: the newest of its key read from the log.
    # The key's matching events after it, up to the group's read_position, have no entry:
    # they wait in the log, and are looked up when this one is settled (revision 0005).
    # 1 or 0 rather than a boolean: pysqlite binds a Python bool through its adapter lookup,
    # which raised and formatted an error for each entry written.
    tail: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))


class ConsumerGroupMemberRow(Base):
    """An open Consume stream, on some replica, kept alive by that replica's heartbeats."""

    __tablename__ = "consumer_group_members"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(36), index=True)
    replica_id: Mapped[str] = mapped_column(String(36), index=True)
    heartbeat_time: Mapped[datetime] = mapped_column(UtcMicros())
