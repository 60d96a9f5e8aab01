"""The bytes subscribers are sent: each event encoded once at commit, batches by concatenation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import grpc

from journey.api import convert
from journey.domain.model import EncodedEvent, SystemEvent
from journey_client import pb

# A batch stops growing at this size (it always holds at least one event), well inside the 4 MiB
# that grpc clients accept by default, whatever the events' properties hold.
MAX_BATCH_BYTES = 1 << 20
# The key of SubscribeResponse.batch (field 5, length-delimited) on the wire.
_BATCH_KEY = b"\x2a"
# The key of ListSystemEventsResponse.next_page_token (field 2, length-delimited).
_NEXT_PAGE_TOKEN_KEY = b"\x12"
# The methods whose handlers return their responses already serialized.
_PRESERIALIZED = ("Subscribe", "ListSystemEvents")


def encode(event: SystemEvent) -> bytes:
    """The serialized SubscribeResponse carrying `event`: what storage keeps and replays send.

    The writer calls it once per event, in the transaction that stores the event; every
    subscriber, live or replaying, is sent these bytes.
    """
    return pb.SubscribeResponse(event=convert.system_event(event)).SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(key: bytes, body: bytes) -> bytes:
    return key + _varint(len(body)) + body


def batch_message(entries: Sequence[bytes]) -> bytes:
    """The SubscribeResponse carrying a SystemEventBatch of encoded events.

    SubscribeResponse.event and SystemEventBatch.events are both field 1 and length-delimited,
    so an event's SubscribeResponse bytes are, byte for byte, its entry in a batch; and a
    repeated field is its entries one after another. A batch is thus a concatenation, with no
    event decoded or encoded again (tests/unit/test_encoding.py checks that protobuf parses it as
    the batch it would have built).
    """
    return _length_delimited(_BATCH_KEY, b"".join(entries))


def list_response(events: Sequence[EncodedEvent], next_page_token: str) -> bytes:
    """The serialized ListSystemEventsResponse carrying `events` as they were encoded.

    ListSystemEventsResponse.system_events is field 1 as well: by the same token as in
    batch_message, the events' stored bytes, one after another, are that repeated field.
    """
    body = b"".join(event.data for event in events)
    if next_page_token:
        body += _length_delimited(_NEXT_PAGE_TOKEN_KEY, next_page_token.encode())
    return body


def messages(events: Sequence[EncodedEvent], max_batch_size: int) -> Iterator[bytes]:
    """The messages that carry `events` in order: one each, or batches of at most that many.

    A batch also stops at MAX_BATCH_BYTES. `max_batch_size` <= 1 means one event each.
    """
    if max_batch_size <= 1:
        for event in events:
            yield event.data
        return
    entries: list[bytes] = []
    size = 0
    for event in events:
        entry = event.data
        if entries and (len(entries) == max_batch_size or size + len(entry) > MAX_BATCH_BYTES):
            yield batch_message(entries)
            entries, size = [], 0
        entries.append(entry)
        size += len(entry)
    if entries:
        yield batch_message(entries)


class _Registrar:
    """Collects the method handlers a generated add_*_to_server function registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, _handlers: Any) -> None:
        """Ignored: the same handlers arrive through add_registered_method_handlers."""

    def add_registered_method_handlers(self, _service: str, handlers: dict[str, Any]) -> None:
        """Keep the handlers."""
        self.handlers = handlers


def add_system_event_service(servicer: pb.SystemEventServiceServicer, server: Any) -> None:
    """Register SystemEventService with Subscribe and ListSystemEvents sending bytes as they are.

    Their servicer methods write (Subscribe) or return (ListSystemEvents) responses serialized
    from the events' stored bytes. The generated code registers every method (so a method
    added to the contract is not missed); only those two serializers are replaced: grpc sends
    a response as it is when the handler has no serializer.
    """
    registrar = _Registrar()
    # The generated function only calls the two methods _Registrar has.
    pb.add_SystemEventServiceServicer_to_server(servicer, cast(Any, registrar))
    handlers = dict(registrar.handlers)
    for name in _PRESERIALIZED:
        handlers[name] = handlers[name]._replace(response_serializer=None)
    service = pb.system_event_service_pb2.DESCRIPTOR.services_by_name["SystemEventService"]
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
