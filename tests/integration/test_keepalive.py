"""A client pinging every 10 s keeps its idle connection and its quiet stream for a minute."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from grpc_health.v1 import health_pb2, health_pb2_grpc

from journey.config import Settings
from journey_client import pb
from tests.integration.harness import serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

# A common client setting (grpc-go's keepalive.ClientParameters{Time: 10s,
# PermitWithoutStream: true}); max_pings_without_data=0 stops grpc core's client from
# giving up pinging after two pings with no data, as grpc-go never does.
PINGING_EVERY_10S = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A connection of its own: channels with equal options would otherwise share one, and the
    # idle one would not be idle.
    ("grpc.use_local_subchannel_pool", 1),
]
# Past the fourth ping: grpc's defaults refuse it (two strikes pass, the third is GOAWAY).
WATCH = 65.0
READY = grpc.ChannelConnectivity.READY


@asynccontextmanager
async def server_port(tmp_path: Path, **overrides: object) -> AsyncIterator[int]:
    """A server whose Subscribe stays quiet for the watch: no checkpoint in two minutes."""
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}",
        "heartbeat_interval": timedelta(minutes=2),
        **overrides,
    }
    async with serving(Settings(**values)) as harness:  # type: ignore[arg-type]
        yield harness.port


async def idle_connection_states(port: int) -> list[grpc.ChannelConnectivity]:
    """Connect, then make no call: every connectivity state the channel goes through."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=PINGING_EVERY_10S) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        states = [channel.get_state()]
        loop = asyncio.get_running_loop()
        until = loop.time() + WATCH
        # A GOAWAY takes a channel out of READY (to IDLE, or on to CONNECTING).
        while (left := until - loop.time()) > 0 and states[-1] == READY:
            try:
                async with asyncio.timeout(left):
                    await channel.wait_for_state_change(states[-1])
            except TimeoutError:
                break
            states.append(channel.get_state())
        return states


async def quiet_stream_outcome(port: int) -> str:
    """Subscribe, read CaughtUp, then wait: "quiet" if nothing came and nothing broke."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=PINGING_EVERY_10S) as channel:
        stream = pb.SystemEventServiceStub(channel).Subscribe(
            pb.SubscribeRequest(beginning=Empty())
        )
        try:
            first: pb.SubscribeResponse = await stream.read()  # type: ignore[assignment]
            assert first.HasField("caught_up"), first
            try:
                async with asyncio.timeout(WATCH):
                    message = await stream.read()
            except TimeoutError:
                return "quiet"
            except grpc.aio.AioRpcError as error:
                return f"{error.code().name}: {error.details()}"
            return f"a message: {message}"
        finally:
            stream.cancel()


async def test_pings_every_10s_are_welcome_on_idle_connections_and_quiet_streams(
    tmp_path: Path,
) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "strict").mkdir()
    async with (
        server_port(tmp_path / "default") as default,
        # The control: a server that wants pings 5 minutes apart, as grpc's default does.
        server_port(
            tmp_path / "strict", keepalive_min_ping_interval=timedelta(minutes=5)
        ) as strict,
    ):
        idle, stream, strict_idle, strict_stream = await asyncio.gather(
            idle_connection_states(default),
            quiet_stream_outcome(default),
            idle_connection_states(strict),
            quiet_stream_outcome(strict),
        )
    # Without the setting, the pings do come and cost the client its connection and stream.
    assert strict_idle[0] == READY, strict_idle
    assert strict_idle[-1] != READY, strict_idle
    assert strict_stream.startswith("UNAVAILABLE"), strict_stream
    assert (idle, stream) == ([READY], "quiet")
