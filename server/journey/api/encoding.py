"""The bytes subscribers are sent: each event encoded once at commit, batches by concatenation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import grpc

from journey.api import convert
from journey.domain.groups import Delivery, Settled
from journey.domain.model import EncodedEvent, SystemEvent
from journey_client import pb

# A batch stops growing at this size (it always holds at least one event), well inside the 4 MiB
# that grpc clients accept by default, whatever the events' properties hold.
MAX_BATCH_BYTES = 1 << 20
# The key of SubscribeResponse.batch (field 5, length-delimited) on the wire.
_BATCH_KEY = b"\x2a"
# The key of ListSystemEventsResponse.next_page_token (field 2, length-delimited).
_NEXT_PAGE_TOKEN_KEY = b"\x12"
# Keys of Delivery.delivery_id (1, length-delimited), .attempt (2, varint), .event (3, length-
# delimited); of Deliveries.deliveries and ConsumeResponse.deliveries (both 1, length-delimited).
_DELIVERY_ID_KEY = b"\x0a"
_ATTEMPT_KEY = b"\x10"
_DELIVERY_EVENT_KEY = b"\x1a"
_DELIVERIES_KEY = b"\x0a"
# The methods whose handlers return their responses already serialized.
_PRESERIALIZED = ("Subscribe", "ListSystemEvents")


def encode(event: SystemEvent) -> bytes:
    """The serialized SubscribeResponse carrying `event`: what storage keeps and replays send.

    The writer calls it once per event, in the transaction that stores the event; every
    subscriber, live or replaying, is sent these bytes.
    """
    return pb.SubscribeResponse(event=convert.system_event(event)).SerializeToString()


def _varint_of(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# The varints of what lengths and attempts nearly always are (two bytes or fewer), made once:
# encoding them at every delivery was a tenth of a busy group's event loop.
_SMALL_VARINTS = tuple(_varint_of(value) for value in range(1 << 14))


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 0x4000 else _varint_of(value)


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


def _delivery_entry(delivery: Delivery) -> tuple[list[bytes | memoryview], int]:
    """One Deliveries.deliveries entry (key, length, Delivery) as pieces to join; its size."""
    delivery_id = delivery.delivery_id.encode()
    id_length = _varint(len(delivery_id))
    attempt = _varint(delivery.attempt)
    # The stored bytes are SubscribeResponse.event (field 1): the same event as Delivery.event
    # (field 3) once the key's byte says 3, so the length that follows it stays as it is.
    stored = delivery.encoded
    size = 2 + len(id_length) + len(delivery_id) + len(attempt) + len(stored)
    size_varint = _varint(size)
    pieces: list[bytes | memoryview] = [
        _DELIVERIES_KEY,
        size_varint,
        _DELIVERY_ID_KEY,
        id_length,
        delivery_id,
        _ATTEMPT_KEY,
        attempt,
        _DELIVERY_EVENT_KEY,
        memoryview(stored)[1:],
    ]
    return pieces, 1 + len(size_varint) + size


def deliveries(batch: Sequence[Delivery]) -> Iterator[bytes]:
    """The ConsumeResponse messages carrying `batch`, each at most about MAX_BATCH_BYTES.

    Made from each event's stored bytes, as batch_message does: nothing is decoded.
    """
    pieces: list[bytes | memoryview] = []
    size = 0
    for delivery in batch:
        entry, length = _delivery_entry(delivery)
        if pieces and size + length > MAX_BATCH_BYTES:
            yield _length_delimited(_DELIVERIES_KEY, b"".join(pieces))
            pieces, size = [], 0
        pieces += entry
        size += length
    if pieces:
        yield _length_delimited(_DELIVERIES_KEY, b"".join(pieces))


def settled(value: Settled) -> bytes:
    """The ConsumeResponse naming settled (and ignored) deliveries."""
    return pb.ConsumeResponse(
        settled=pb.Settled(delivery_ids=value.delivery_ids, ignored_delivery_ids=value.ignored)
    ).SerializeToString()


class _Registrar:
    """Collects the method handlers a generated add_*_to_server function registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, _handlers: Any) -> None:
        """Ignored: the same handlers arrive through add_registered_method_handlers."""

    def add_registered_method_handlers(self, _service: str, handlers: dict[str, Any]) -> None:
        """Keep the handlers."""
        self.handlers = handlers


def add_consumer_group_service(servicer: pb.ConsumerGroupServiceServicer, server: Any) -> None:
    """Register ConsumerGroupService with Consume sending the bytes it yields as they are."""
    _add(
        pb.add_ConsumerGroupServiceServicer_to_server,
        servicer,
        server,
        pb.consumer_group_service_pb2.DESCRIPTOR.services_by_name["ConsumerGroupService"],
        ("Consume",),
    )


def _add(add: Any, servicer: Any, server: Any, service: Any, preserialized: Sequence[str]) -> None:
    registrar = _Registrar()
    # The generated function only calls the two methods _Registrar has.
    add(servicer, cast(Any, registrar))
    handlers = dict(registrar.handlers)
    for name in preserialized:
        handlers[name] = handlers[name]._replace(response_serializer=None)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


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
