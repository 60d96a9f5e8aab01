"""The journey.v1 messages, enums and stubs: the one module that imports the generated code."""

from typing import TYPE_CHECKING

# Regenerating touches only journey_client/_gen; a new message or service is one more line here.
from journey_client._gen.journey.v1 import (
    consumer_group_pb2 as consumer_group_pb2,
)
from journey_client._gen.journey.v1 import (
    consumer_group_service_pb2 as consumer_group_service_pb2,
)
from journey_client._gen.journey.v1 import (
    session_pb2 as session_pb2,
)
from journey_client._gen.journey.v1 import (
    session_service_pb2 as session_service_pb2,
)
from journey_client._gen.journey.v1 import (
    settings_service_pb2 as settings_service_pb2,
)
from journey_client._gen.journey.v1 import (
    system_event_pb2 as system_event_pb2,
)
from journey_client._gen.journey.v1 import (
    system_event_service_pb2 as system_event_service_pb2,
)
from journey_client._gen.journey.v1 import (
    tracked_event_pb2 as tracked_event_pb2,
)
from journey_client._gen.journey.v1 import (
    tracker_service_pb2 as tracker_service_pb2,
)
from journey_client._gen.journey.v1.consumer_group_pb2 import (
    ConsumerGroup as ConsumerGroup,
)
from journey_client._gen.journey.v1.consumer_group_pb2 import (
    ConsumerGroupOrdering as ConsumerGroupOrdering,
)
from journey_client._gen.journey.v1.consumer_group_pb2 import (
    DeadLetter as DeadLetter,
)
from journey_client._gen.journey.v1.consumer_group_pb2 import (
    Delivery as Delivery,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    Ack as Ack,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    ConsumeRequest as ConsumeRequest,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    ConsumeResponse as ConsumeResponse,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    ConsumeStart as ConsumeStart,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    CreateConsumerGroupRequest as CreateConsumerGroupRequest,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    DeleteConsumerGroupRequest as DeleteConsumerGroupRequest,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    Deliveries as Deliveries,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    Extend as Extend,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    GetConsumerGroupRequest as GetConsumerGroupRequest,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    ListConsumerGroupsRequest as ListConsumerGroupsRequest,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    ListConsumerGroupsResponse as ListConsumerGroupsResponse,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    ListDeadLettersRequest as ListDeadLettersRequest,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    ListDeadLettersResponse as ListDeadLettersResponse,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    Nack as Nack,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    RedriveDeadLettersRequest as RedriveDeadLettersRequest,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    RedriveDeadLettersResponse as RedriveDeadLettersResponse,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    Reject as Reject,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2 import (
    Settled as Settled,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2_grpc import (
    ConsumerGroupServiceServicer as ConsumerGroupServiceServicer,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2_grpc import (
    ConsumerGroupServiceStub as ConsumerGroupServiceStub,
)
from journey_client._gen.journey.v1.consumer_group_service_pb2_grpc import (
    add_ConsumerGroupServiceServicer_to_server as add_ConsumerGroupServiceServicer_to_server,
)
from journey_client._gen.journey.v1.session_pb2 import (
    Profile as Profile,
)
from journey_client._gen.journey.v1.session_pb2 import (
    Session as Session,
)
from journey_client._gen.journey.v1.session_pb2 import (
    SessionState as SessionState,
)
from journey_client._gen.journey.v1.session_service_pb2 import (
    EndSessionRequest as EndSessionRequest,
)
from journey_client._gen.journey.v1.session_service_pb2 import (
    EndSessionResponse as EndSessionResponse,
)
from journey_client._gen.journey.v1.session_service_pb2 import (
    GetProfileRequest as GetProfileRequest,
)
from journey_client._gen.journey.v1.session_service_pb2 import (
    GetProfileResponse as GetProfileResponse,
)
from journey_client._gen.journey.v1.session_service_pb2 import (
    GetSessionRequest as GetSessionRequest,
)
from journey_client._gen.journey.v1.session_service_pb2 import (
    GetSessionResponse as GetSessionResponse,
)
from journey_client._gen.journey.v1.session_service_pb2_grpc import (
    SessionServiceServicer as SessionServiceServicer,
)
from journey_client._gen.journey.v1.session_service_pb2_grpc import (
    SessionServiceStub as SessionServiceStub,
)
from journey_client._gen.journey.v1.session_service_pb2_grpc import (
    add_SessionServiceServicer_to_server as add_SessionServiceServicer_to_server,
)
from journey_client._gen.journey.v1.settings_service_pb2 import (
    GetSettingsRequest as GetSettingsRequest,
)
from journey_client._gen.journey.v1.settings_service_pb2 import (
    GetSettingsResponse as GetSettingsResponse,
)
from journey_client._gen.journey.v1.settings_service_pb2_grpc import (
    SettingsServiceServicer as SettingsServiceServicer,
)
from journey_client._gen.journey.v1.settings_service_pb2_grpc import (
    SettingsServiceStub as SettingsServiceStub,
)
from journey_client._gen.journey.v1.settings_service_pb2_grpc import (
    add_SettingsServiceServicer_to_server as add_SettingsServiceServicer_to_server,
)
from journey_client._gen.journey.v1.system_event_pb2 import (
    CaughtUp as CaughtUp,
)
from journey_client._gen.journey.v1.system_event_pb2 import (
    Checkpoint as Checkpoint,
)
from journey_client._gen.journey.v1.system_event_pb2 import (
    FellBehind as FellBehind,
)
from journey_client._gen.journey.v1.system_event_pb2 import (
    SystemEvent as SystemEvent,
)
from journey_client._gen.journey.v1.system_event_pb2 import (
    SystemEventBatch as SystemEventBatch,
)
from journey_client._gen.journey.v1.system_event_pb2 import (
    SystemEventFilter as SystemEventFilter,
)
from journey_client._gen.journey.v1.system_event_pb2 import (
    SystemEventType as SystemEventType,
)
from journey_client._gen.journey.v1.system_event_service_pb2 import (
    ListSystemEventsRequest as ListSystemEventsRequest,
)
from journey_client._gen.journey.v1.system_event_service_pb2 import (
    ListSystemEventsResponse as ListSystemEventsResponse,
)
from journey_client._gen.journey.v1.system_event_service_pb2 import (
    SubscribeRequest as SubscribeRequest,
)
from journey_client._gen.journey.v1.system_event_service_pb2 import (
    SubscribeResponse as SubscribeResponse,
)
from journey_client._gen.journey.v1.system_event_service_pb2_grpc import (
    SystemEventServiceServicer as SystemEventServiceServicer,
)
from journey_client._gen.journey.v1.system_event_service_pb2_grpc import (
    SystemEventServiceStub as SystemEventServiceStub,
)
from journey_client._gen.journey.v1.system_event_service_pb2_grpc import (
    add_SystemEventServiceServicer_to_server as add_SystemEventServiceServicer_to_server,
)
from journey_client._gen.journey.v1.tracked_event_pb2 import (
    TrackedEvent as TrackedEvent,
)
from journey_client._gen.journey.v1.tracker_service_pb2 import (
    TrackRequest as TrackRequest,
)
from journey_client._gen.journey.v1.tracker_service_pb2 import (
    TrackResponse as TrackResponse,
)
from journey_client._gen.journey.v1.tracker_service_pb2_grpc import (
    TrackerServiceServicer as TrackerServiceServicer,
)
from journey_client._gen.journey.v1.tracker_service_pb2_grpc import (
    TrackerServiceStub as TrackerServiceStub,
)
from journey_client._gen.journey.v1.tracker_service_pb2_grpc import (
    add_TrackerServiceServicer_to_server as add_TrackerServiceServicer_to_server,
)

if TYPE_CHECKING:
    # The asyncio stub types exist only in the .pyi stubs: a stub built on an aio channel.
    from journey_client._gen.journey.v1.consumer_group_service_pb2_grpc import (
        ConsumerGroupServiceAsyncStub as ConsumerGroupServiceAsyncStub,
    )
    from journey_client._gen.journey.v1.session_service_pb2_grpc import (
        SessionServiceAsyncStub as SessionServiceAsyncStub,
    )
    from journey_client._gen.journey.v1.settings_service_pb2_grpc import (
        SettingsServiceAsyncStub as SettingsServiceAsyncStub,
    )
    from journey_client._gen.journey.v1.system_event_service_pb2_grpc import (
        SystemEventServiceAsyncStub as SystemEventServiceAsyncStub,
    )
    from journey_client._gen.journey.v1.tracker_service_pb2_grpc import (
        TrackerServiceAsyncStub as TrackerServiceAsyncStub,
    )


def commented_descriptors() -> dict[str, bytes]:
    """Each journey.v1 file's serialized FileDescriptorProto, with the .proto comments kept."""
    from importlib import resources

    from google.protobuf import descriptor_pb2

    data = resources.files("journey_client._gen").joinpath("journey_v1.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return {f.name: f.SerializeToString() for f in files}
