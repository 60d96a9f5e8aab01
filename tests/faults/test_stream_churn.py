"""Fault test 4: 500 subscriptions opened and cancelled leave tasks and memory where they were.

A server-streaming handler that swallows CancelledError leaks per stream (grpc/grpc#43360);
so would a live buffer that is never unregistered. Memory is measured with tracemalloc, which
sees every Python allocation and none of the allocator's noise, after a warm-up so that
caches and pools filled once are not counted as growth.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import Harness, serving

pytestmark = pytest.mark.slow

EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
CHURN = 500
WARM_UP = 50
# A leak of even 1 KiB per stream would show as 500 KiB; what legitimately remains (interned
# strings, grpc's per-channel state) is far below.
ALLOWED_GROWTH = 256 * 1024


async def open_and_cancel(h: Harness, request: pb.SubscribeRequest) -> None:
    stream = h.events.Subscribe(request)
    message = await stream.read()  # the server is now inside the handler
    assert message is not EOF
    stream.cancel()


async def settle(h: Harness, tasks: int) -> int:
    """Wait until no subscription is left on the server and the task count is back."""
    async with asyncio.timeout(20):
        while h.server.broker.subscriber_count or len(asyncio.all_tasks()) > tasks:
            await asyncio.sleep(0.02)
    gc.collect()
    return len(asyncio.all_tasks())


async def test_stream_churn_leaks_no_tasks_and_no_memory(make_settings: SettingsFactory) -> None:
    async with serving(make_settings()) as h:
        for i in range(20):  # some log to replay
            await h.track("page-view", session_id=f"s{i}")
        requests = [
            pb.SubscribeRequest(beginning=Empty()),
            pb.SubscribeRequest(end=Empty()),
            pb.SubscribeRequest(after_position=10),
        ]
        for i in range(WARM_UP):
            await open_and_cancel(h, requests[i % len(requests)])
        tasks_before = await settle(h, len(asyncio.all_tasks()))
        tracemalloc.start()
        try:
            memory_before = tracemalloc.get_traced_memory()[0]
            for i in range(CHURN):
                await open_and_cancel(h, requests[i % len(requests)])
                if i % 100 == 0:
                    await h.track("page-view", session_id=f"churn{i}")  # live events too
            tasks_after = await settle(h, tasks_before)
            memory_after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert tasks_after <= tasks_before
        assert memory_after - memory_before < ALLOWED_GROWTH, memory_after - memory_before
        # And the server still serves subscriptions.
        await open_and_cancel(h, requests[0])
