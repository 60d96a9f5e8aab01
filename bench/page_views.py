"""The realistic page view of the ingest scenario, as Journey's client and a NATS user send it.

Both sides send the same event: a type, a client id and three properties (a URL, a referrer,
a number), as a web tracker records a page view. Journey gets it as a protobuf TrackedEvent
(properties a Struct) inside a Track of 20; NATS gets the same fields as one JSON document per
acked publish, which is how a NATS user would publish an event. Each message is built per
event on both sides, with its own id, so neither load generator reuses a prebuilt payload.
"""

from __future__ import annotations

import json

from google.protobuf.struct_pb2 import Struct

from journey_client import pb

EVENT_TYPE = "page-view"
REFERRERS = (
    "https://www.google.com/",
    "https://shop.example.com/",
    "https://www.bing.com/",
    "",
)
# Distinct pages, so the properties are not one repeated value.
PAGES = 256


def properties(n: int) -> dict[str, str | float]:
    """The n-th page view's properties: a product URL, a referrer and a load time in ms."""
    n %= PAGES
    return {
        "url": f"https://shop.example.com/products/{1000 + n % PAGES}?ref=nav",
        "referrer": REFERRERS[n % len(REFERRERS)],
        "load_ms": 120 + (n * 37) % 900,
    }


def _struct(values: dict[str, str | float]) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


# Built once: the load generator's CPU is shared with the server under test, and a Struct
# copied into a message is cheaper than one built from a dict per event.
_STRUCTS = tuple(_struct(properties(n)) for n in range(PAGES))


def tracked_event(n: int, event_id: str) -> pb.TrackedEvent:
    """The n-th page view as Journey's client sends it."""
    return pb.TrackedEvent(type=EVENT_TYPE, id=event_id, properties=_STRUCTS[n % len(_STRUCTS)])


def json_bytes(n: int, event_id: str) -> bytes:
    """The n-th page view as the JSON a NATS user publishes: the same fields as tracked_event."""
    document = {"type": EVENT_TYPE, "id": event_id, "properties": properties(n)}
    return json.dumps(document, separators=(",", ":")).encode()
