"""Translation between journey.v1 protobuf messages and domain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from journey.domain.model import (
    NewTrackedEvent,
    Profile,
    Session,
    SystemEvent,
    SystemEventFilter,
    SystemEventType,
)
from journey_client import pb


def timestamp(moment: datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    message = Timestamp()
    message.FromDatetime(moment)
    return message


def moment(message: Timestamp) -> datetime:
    """An aware UTC datetime of a protobuf Timestamp (validated beforehand)."""
    return message.ToDatetime(tzinfo=UTC)


def duration(delta: timedelta) -> Duration:
    """A protobuf Duration of a timedelta."""
    message = Duration()
    message.FromTimedelta(delta)
    return message


def event_filter(message: pb.SystemEventFilter) -> SystemEventFilter:
    """A domain filter from a protobuf filter (validated beforehand)."""
    return SystemEventFilter(
        types=frozenset(SystemEventType(t) for t in message.types),
        profile_id=message.profile_id,
        session_id=message.session_id,
        source_id=message.source_id,
    )


def new_tracked_event(message: pb.TrackedEvent) -> NewTrackedEvent:
    """A domain tracked event from a protobuf one; properties stay serialized."""
    return NewTrackedEvent(
        id=message.id,
        type=message.type,
        properties=message.properties.SerializeToString()
        if message.HasField("properties")
        else b"",
        occur_time=moment(message.occur_time) if message.HasField("occur_time") else None,
    )


def system_event(event: SystemEvent) -> pb.SystemEvent:
    """A protobuf system event."""
    properties = Struct()
    properties.update(event.properties)
    return pb.SystemEvent(
        position=event.position,
        id=event.id,
        type=int(event.type),  # type: ignore[arg-type]
        occur_time=timestamp(event.occur_time),
        profile_id=event.profile_id,
        session_id=event.session_id,
        source_id=event.source_id,
        properties=properties,
        # None, not an empty map: protobuf takes it for nothing, while {} costs microseconds.
        trace_context=event.trace_context or None,
    )


def session(value: Session) -> pb.Session:
    """A protobuf session."""
    message = pb.Session(
        id=value.id,
        profile_id=value.profile_id,
        source_id=value.source_id,
        state=int(value.state),  # type: ignore[arg-type]
        open_time=timestamp(value.open_time),
        last_activity_time=timestamp(value.last_activity_time),
        event_count=value.event_count,
        visit_count=value.visit_count,
    )
    if value.close_time is not None:
        message.close_time.CopyFrom(timestamp(value.close_time))
    return message


def profile(value: Profile) -> pb.Profile:
    """A protobuf profile."""
    return pb.Profile(
        id=value.id,
        create_time=timestamp(value.create_time),
        last_activity_time=timestamp(value.last_activity_time),
        visit_count=value.visit_count,
        session_count=value.session_count,
    )
