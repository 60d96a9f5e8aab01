"""Translation between journey.v1 protobuf messages and domain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from journey.domain import groups
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


def group_settings(request: pb.CreateConsumerGroupRequest) -> groups.GroupSettings:
    """A new group's settings, defaults applied (validated beforehand)."""
    return groups.GroupSettings(
        event_filter=event_filter(request.filter),
        ack_timeout=request.ack_timeout.ToTimedelta()
        if request.HasField("ack_timeout")
        else groups.DEFAULT_ACK_TIMEOUT,
        max_attempts=request.max_attempts or groups.DEFAULT_MAX_ATTEMPTS,
        ordering=groups.Ordering(request.ordering or groups.Ordering.NONE),
    )


def group_start(request: pb.CreateConsumerGroupRequest) -> groups.Start:
    """Where a new group starts."""
    match request.WhichOneof("start"):
        case "beginning":
            return groups.BEGINNING
        case "after_position":
            return request.after_position
    return groups.END


def _filter_message(value: SystemEventFilter) -> pb.SystemEventFilter:
    return pb.SystemEventFilter(
        types=sorted(int(t) for t in value.types),  # type: ignore[misc]
        profile_id=value.profile_id,
        session_id=value.session_id,
        source_id=value.source_id,
    )


def consumer_group(state: groups.GroupState) -> pb.ConsumerGroup:
    """A protobuf consumer group."""
    message = pb.ConsumerGroup(
        name=state.name,
        filter=_filter_message(state.settings.event_filter),
        ack_timeout=duration(state.settings.ack_timeout),
        max_attempts=state.settings.max_attempts,
        ordering=int(state.settings.ordering),  # type: ignore[arg-type]
        create_time=timestamp(state.create_time),
        ack_floor=state.ack_floor,
        pending_count=state.pending_count,
        in_flight_count=state.in_flight_count,
        dead_letter_count=state.dead_letter_count,
        member_count=state.member_count,
    )
    if state.oldest_pending_time is not None:
        message.oldest_pending_time.CopyFrom(timestamp(state.oldest_pending_time))
    return message


def dead_letter(value: groups.DeadLetter) -> pb.DeadLetter:
    """A protobuf dead letter; the event decoded from the bytes stored at commit."""
    return pb.DeadLetter(
        event=pb.SubscribeResponse.FromString(value.encoded).event,
        attempts=value.attempts,
        reason=value.reason,
        dead_letter_time=timestamp(value.dead_letter_time),
    )


def member_request(message: pb.ConsumeRequest) -> groups.MemberRequest:
    """A member's ack, nack, reject or extend (validated beforehand; never start)."""
    match message.WhichOneof("request"):
        case "ack":
            return groups.Ack(tuple(message.ack.delivery_ids))
        case "nack":
            delay = (
                message.nack.retry_delay.ToTimedelta()
                if message.nack.HasField("retry_delay")
                else None
            )
            return groups.Nack(tuple(message.nack.delivery_ids), delay)
        case "reject":
            return groups.Reject(tuple(message.reject.delivery_ids), message.reject.reason)
    return groups.Extend(tuple(message.extend.delivery_ids))
