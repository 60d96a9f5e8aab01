"""The Python client of Journey: `JourneyClient` (asyncio), `JourneySyncClient`, typed errors."""

from journey_client.client import JourneyClient, tracked_event
from journey_client.connection import DEFAULT_SERVER, Tls
from journey_client.consumer import Consumer, Delivery
from journey_client.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    JourneyError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from journey_client.filters import Start, event_filter
from journey_client.subscription import Backoff, Subscription
from journey_client.sync import JourneySyncClient, SyncConsumer, SyncDelivery

__all__ = [
    "DEFAULT_SERVER",
    "Backoff",
    "Consumer",
    "Delivery",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "JourneyClient",
    "JourneyError",
    "JourneySyncClient",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Start",
    "Subscription",
    "SyncConsumer",
    "SyncDelivery",
    "Tls",
    "Unauthenticated",
    "Unavailable",
    "event_filter",
    "tracked_event",
]
