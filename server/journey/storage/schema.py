"""The tables: append-only tracked and system events, and the current profile and session state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, BigInteger, Dialect, Index, Integer, LargeBinary, SmallInteger, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID_LENGTH = 128
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class UtcMicros(TypeDecorator[datetime]):
    """A UTC datetime stored as integer microseconds since the epoch.

    Integers compare, index and round-trip exactly and identically on SQLite and PostgreSQL,
    which their native datetime types do not.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        """Convert an aware datetime to microseconds."""
        if value is None:
            return None
        return (value - _EPOCH) // _MICROSECOND

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
