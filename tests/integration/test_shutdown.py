"""Graceful stop under load: running Tracks finish and are stored; refused ones are not stored."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import serving

# UNAVAILABLE: refused by the closed gate or the closed port. CANCELLED: in transit at the very
# moment the port closed, so never started. Neither may have stored anything.
NOT_STARTED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


async def test_stop_under_load_stores_exactly_the_tracks_that_succeeded(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    outcomes: dict[str, grpc.StatusCode] = {}
    async with serving(settings) as h:
        first_ok = asyncio.Event()

        async def track(i: int) -> None:
            try:
                await h.track("page-view", session_id=f"s-{i}", ids=[f"e-{i}"])
                outcomes[f"s-{i}"] = grpc.StatusCode.OK
                first_ok.set()
            except grpc.aio.AioRpcError as error:
                outcomes[f"s-{i}"] = error.code()

        calls = [asyncio.create_task(track(i)) for i in range(300)]
        async with asyncio.timeout(10):
            await first_ok.wait()  # calls are flowing: some done, some running, some queued
        stopping = asyncio.create_task(h.server.stop(5.0))
        async with asyncio.timeout(10):
            while h.server.admission.open:
                await asyncio.sleep(0)
        check = await h.server.health.Check(health_pb2.HealthCheckRequest(service=""), None)
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await asyncio.gather(*calls)
        await stopping

    codes = set(outcomes.values())
    assert codes <= {grpc.StatusCode.OK} | NOT_STARTED, codes
    assert grpc.StatusCode.OK in codes

    async with serving(settings) as h:
        for session_id, code in outcomes.items():
            request = pb.GetSessionRequest(session_id=session_id)
            if code == grpc.StatusCode.OK:
                session = await h.sessions.GetSession(request)
                assert session.session.event_count == 1
            else:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await h.sessions.GetSession(request)
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND, session_id
