"""The interceptor chain on a real grpc server: each method wrapped once, bidi streams included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from journey.api.interceptors import (
    AdmissionInterceptor,
    AuthInterceptor,
    Context,
    ErrorInterceptor,
    LoggingInterceptor,
    MethodInterceptor,
    MetricsInterceptor,
    SubscriberLimitInterceptor,
    ValidationInterceptor,
)
from journey.auth import KeyRing, digest
from journey.config import ApiKey
from journey.domain.errors import NotFound
from journey_client._gen.journey.v1 import consumer_group_service_pb2 as pb
from tests.integration.test_api_contract import violated_fields

SERVICE = "journey.v1.TestService"
ECHO = f"/{SERVICE}/Echo"  # bidi: answers each request's ids, in order
UNARY = f"/{SERVICE}/Once"
KEY = "admin-key"
ADMIN = (("authorization", f"Bearer {KEY}"),)


class CountingHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Serves Echo and Once, and counts how often grpc asks it for a handler."""

    def __init__(self) -> None:
        self.lookups = 0
        self.fail_with: Exception | None = None

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        self.lookups += 1
        if details.method == ECHO:
            return grpc.stream_stream_rpc_method_handler(
                self.echo, pb.Ack.FromString, pb.Settled.SerializeToString
            )
        if details.method == UNARY:
            return grpc.unary_unary_rpc_method_handler(
                self.once, pb.Ack.FromString, pb.Settled.SerializeToString
            )
        return None

    async def echo(
        self, requests: AsyncIterator[pb.Ack], context: Context
    ) -> AsyncIterator[pb.Settled]:
        async for request in requests:
            if self.fail_with is not None:
                raise self.fail_with
            yield pb.Settled(delivery_ids=request.delivery_ids)

    async def once(self, request: pb.Ack, context: Context) -> pb.Settled:
        return pb.Settled(delivery_ids=request.delivery_ids)


@asynccontextmanager
async def serving(
    chain: list[MethodInterceptor], handler: CountingHandler
) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=chain)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


def journey_chain(
    registry: CollectorRegistry, admission: AdmissionInterceptor
) -> list[MethodInterceptor]:
    """The order app.py uses, with metrics and auth on, and no room for subscriptions."""
    from journey.observability.metrics import RpcMetrics

    keys = KeyRing([ApiKey(digest(KEY), frozenset({"admin"}))])
    return [
        MetricsInterceptor(RpcMetrics(registry)),
        LoggingInterceptor(),
        ErrorInterceptor(),
        AuthInterceptor(keys),
        admission,
        SubscriberLimitInterceptor(0),
        ValidationInterceptor(),
    ]


def echo(channel: grpc.aio.Channel) -> Callable[..., Any]:
    return channel.stream_stream(
        ECHO, request_serializer=lambda b: b, response_deserializer=pb.Settled.FromString
    )


def acks(*ids: str) -> Iterator[bytes]:
    for i in ids:
        yield pb.Ack(delivery_ids=[i]).SerializeToString()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(
        name, {"grpc_type": "bidi_stream", "grpc_service": SERVICE, "grpc_method": "Echo", **labels}
    )
    return 0.0 if value is None else value


async def test_a_bidi_stream_passes_every_layer_and_is_counted() -> None:
    registry, handler = CollectorRegistry(), CountingHandler()
    async with serving(journey_chain(registry, AdmissionInterceptor()), handler) as channel:
        call = echo(channel)(acks("a", "b", "c"), metadata=ADMIN)
        answers = [m.delivery_ids[0] async for m in call]
    assert answers == ["a", "b", "c"]
    # The limit of 0 subscriptions refuses server streams only; a bidi stream is no subscription.
    assert sample(registry, "grpc_server_started_total") == 1
    assert sample(registry, "grpc_server_msg_received_total") == 3
    assert sample(registry, "grpc_server_msg_sent_total") == 3
    assert sample(registry, "grpc_server_handled_total", grpc_code="OK") == 1


async def test_a_bidi_stream_needs_a_key() -> None:
    registry, handler = CollectorRegistry(), CountingHandler()
    async with serving(journey_chain(registry, AdmissionInterceptor()), handler) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [m async for m in echo(channel)(acks("a"))]
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert sample(registry, "grpc_server_handled_total", grpc_code="Unauthenticated") == 1


async def test_an_undecodable_message_mid_stream_is_invalid_argument() -> None:
    registry, handler = CollectorRegistry(), CountingHandler()
    # Field 1 as a length-delimited string whose length runs past the end: not a message.
    requests = [*acks("a"), b"\x0a\x10ab"]
    async with serving(journey_chain(registry, AdmissionInterceptor()), handler) as channel:
        received: list[str] = []

        async def read_all() -> None:
            async for message in echo(channel)(iter(requests), metadata=ADMIN):
                received.append(message.delivery_ids[0])

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read_all()
    assert received == ["a"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["request"]


async def test_a_domain_error_in_a_bidi_stream_gets_its_status() -> None:
    registry, handler = CollectorRegistry(), CountingHandler()
    handler.fail_with = NotFound("no such group")
    async with serving(journey_chain(registry, AdmissionInterceptor()), handler) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [m async for m in echo(channel)(acks("a"), metadata=ADMIN)]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such group"


async def test_a_closed_server_refuses_bidi_streams() -> None:
    registry, handler, admission = CollectorRegistry(), CountingHandler(), AdmissionInterceptor()
    admission.close()
    async with serving(journey_chain(registry, admission), handler) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [m async for m in echo(channel)(acks("a"), metadata=ADMIN)]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_each_method_is_looked_up_and_wrapped_once() -> None:
    registry, handler = CollectorRegistry(), CountingHandler()
    chain = journey_chain(registry, AdmissionInterceptor())
    async with serving(chain, handler) as channel:
        once = channel.unary_unary(
            UNARY, request_serializer=lambda b: b, response_deserializer=pb.Settled.FromString
        )
        for i in range(5):
            reply = await once(next(acks(str(i))), metadata=ADMIN)
            assert list(reply.delivery_ids) == [str(i)]
        for _ in range(2):
            assert [m async for m in echo(channel)(acks("x"), metadata=ADMIN)]
        unknown = channel.unary_unary(
            f"/{SERVICE}/Missing", request_serializer=lambda b: b, response_deserializer=None
        )
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await unknown(b"", metadata=ADMIN)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # Once per known method; an unknown method is asked about each time and never remembered.
    assert handler.lookups == 2 + 3
    assert sorted(chain[0]._wrapped) == [ECHO, UNARY]
    assert sample(registry, "grpc_server_started_total") == 2
