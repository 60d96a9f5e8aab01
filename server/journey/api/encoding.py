"""Serialise each system event once: the SubscribeResponse bytes that every subscriber is sent."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import grpc

from journey.api import convert
from journey.domain.model import SystemEvent
from journey_client import pb

# Enough for every live subscriber to be sent an event before its bytes are dropped; one that
# lags further behind costs one more encoding, never a wrong message.
CACHE_SIZE = 8192
# A batch stops growing at this size (it always holds at least one event), well inside the 4 MiB
# that grpc clients accept by default, whatever the events' properties hold.
MAX_BATCH_BYTES = 1 << 20
# The key of SubscribeResponse.batch (field 5, length-delimited) on the wire.
_BATCH_KEY = b"\x2a"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def batch_message(entries: Sequence[bytes]) -> bytes:
    """The SubscribeResponse carrying a SystemEventBatch of already encoded events.

    SubscribeResponse.event and SystemEventBatch.events are both field 1 and length-delimited,
    so an event's SubscribeResponse bytes are, byte for byte, its entry in a batch; and a
    repeated field is its entries one after another. A batch is thus a concatenation, with no
    event decoded or encoded again (tests/unit/test_encoding.py checks that protobuf parses it as
    the batch it would have built).
    """
    body = b"".join(entries)
    return _BATCH_KEY + _varint(len(body)) + body


class EncodedEvents:
    """SubscribeResponse bytes by position, for the most recently encoded events.

    A position names one immutable event for the life of the log, so bytes made for one
    subscriber are right for every other.
    """

    def __init__(self, capacity: int = CACHE_SIZE) -> None:
        self._capacity = capacity
        self._bytes: dict[int, bytes] = {}
        self.encoded = 0

    def event(self, event: SystemEvent) -> bytes:
        """The serialized SubscribeResponse carrying `event`."""
        data = self._bytes.get(event.position)
        if data is None:
            message = pb.SubscribeResponse(event=convert.system_event(event))
            data = self._bytes[event.position] = message.SerializeToString()
            self.encoded += 1
            if len(self._bytes) > self._capacity:
                # Dicts keep insertion order: this drops the oldest entry.
                del self._bytes[next(iter(self._bytes))]
        return data

    def messages(self, events: Sequence[SystemEvent], max_batch_size: int) -> Iterator[bytes]:
        """The messages that carry `events` in order: one each, or batches of at most that many.

        A batch also stops at MAX_BATCH_BYTES. `max_batch_size` <= 1 means one event each.
        """
        if max_batch_size <= 1:
            for event in events:
                yield self.event(event)
            return
        entries: list[bytes] = []
        size = 0
        for event in events:
            entry = self.event(event)
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
    """Register SystemEventService with Subscribe sending the bytes its servicer writes as they are.

    The generated code registers every method (so a method added to the contract is not
    missed); only Subscribe's serializer is replaced: grpc sends a response as it is when the
    handler has no serializer.
    """
    registrar = _Registrar()
    # The generated function only calls the two methods _Registrar has.
    pb.add_SystemEventServiceServicer_to_server(servicer, cast(Any, registrar))
    handlers = dict(registrar.handlers)
    handlers["Subscribe"] = handlers["Subscribe"]._replace(response_serializer=None)
    service = pb.system_event_service_pb2.DESCRIPTOR.services_by_name["SystemEventService"]
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
