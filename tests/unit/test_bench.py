"""The benchmark's own checks: batches checked event by event, the baseline's batches, NATS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from bench import baseline, nats_workloads, report, runner
from bench.scenarios import QUICK, SCENARIOS
from bench.workloads import Subscriber, WorkloadError, check_events
from journey_client import pb

Batch = pb.system_event_pb2.SystemEventBatch


def _event(position: int, event_id: str | None = None) -> pb.SystemEvent:
    return pb.SystemEvent(position=position, id=event_id or f"e{position}")


def _batch(*positions: int) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(batch=Batch(events=[_event(p) for p in positions]))


def test_check_events_takes_a_batch_in_order() -> None:
    received: dict[str, float] = {}
    last = check_events([_event(1), _event(2)], received, 0, True, 1.0)
    last = check_events([_event(3)], received, last, True, 2.0)
    assert last == 3
    assert received == {"e1": 1.0, "e2": 1.0, "e3": 2.0}


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([_event(4), _event(6)], "position 6 after 4"),
        ([_event(4), _event(4, "other")], "delivered twice"),
        ([_event(4), _event(3)], "delivered twice"),
        ([_event(2)], "delivered twice"),
    ],
)
def test_check_events_catches_a_gap_or_repeat_inside_a_batch(
    events: list[pb.SystemEvent], message: str
) -> None:
    with pytest.raises(WorkloadError, match=message):
        check_events(events, {"e1": 0.0, "e2": 0.0, "e3": 0.0}, 3, True, 1.0)


def test_check_events_allows_gaps_when_filtered_but_not_repeats() -> None:
    received: dict[str, float] = {}
    assert check_events([_event(2), _event(9)], received, 0, False, 1.0) == 9
    with pytest.raises(WorkloadError, match="twice"):
        check_events([_event(10, "e2")], received, 9, False, 1.0)


class _Stream:
    """A Subscribe stub that plays back fixed messages, then waits."""

    def __init__(self, messages: list[pb.SubscribeResponse]) -> None:
        self.messages = messages
        # Set once the reader asked for more than the last message: it handled them all.
        self.played = asyncio.Event()

    async def _play(self) -> AsyncIterator[pb.SubscribeResponse]:
        for m in self.messages:
            yield m
        self.played.set()
        await asyncio.Event().wait()

    def Subscribe(self, request: pb.SubscribeRequest) -> AsyncIterator[pb.SubscribeResponse]:
        return self._play()


async def _subscriber(messages: list[pb.SubscribeResponse]) -> Subscriber:
    """A subscriber that has read every message, or stopped on one it refused."""
    stream = _Stream(messages)
    subscriber = Subscriber(
        cast("pb.SystemEventServiceAsyncStub", stream),
        pb.SubscribeRequest(end=Empty(), max_batch_size=1000),
    )
    subscriber.start()
    assert subscriber.task is not None
    played = asyncio.ensure_future(stream.played.wait())
    async with asyncio.timeout(5):
        await asyncio.wait([played, subscriber.task], return_when=asyncio.FIRST_COMPLETED)
    played.cancel()
    return subscriber


async def test_a_subscriber_takes_single_events_and_batches_alike() -> None:
    caught_up = pb.SubscribeResponse(caught_up=pb.CaughtUp(position=0))
    s = await _subscriber([caught_up, _batch(1, 2), pb.SubscribeResponse(event=_event(3))])
    assert s.caught_up.is_set()
    assert list(s.received) == ["e1", "e2", "e3"]
    assert s.last_position == 3
    await s.stop()


async def test_a_subscriber_fails_on_a_gap_inside_a_batch() -> None:
    s = await _subscriber([_batch(1, 2), _batch(3, 5, 6)])
    with pytest.raises(WorkloadError, match="position 5 after 3"):
        await s.stop()


async def _baseline(replay: int) -> tuple[grpc.aio.Server, baseline.Hub, str]:
    hub = baseline.Hub()
    server = grpc.aio.server()
    events = baseline.Events(hub, baseline.synthetic_log(replay))
    pb.add_SystemEventServiceServicer_to_server(events, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, hub, f"127.0.0.1:{port}"


async def test_the_baseline_replays_in_batches_of_the_limit_then_batches_what_is_queued() -> None:
    server, hub, target = await _baseline(12)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb.SystemEventServiceStub(channel)
            call = stub.Subscribe(pb.SubscribeRequest(beginning=Empty(), max_batch_size=5))
            sizes = []
            while True:
                message = await call.read()
                assert isinstance(message, pb.SubscribeResponse)
                if message.WhichOneof("content") == "caught_up":
                    break
                sizes.append(len(message.batch.events))
            assert sizes == [5, 5, 2]
            hub.publish([_event(13), _event(14), _event(15)])
            message = await call.read()
            assert isinstance(message, pb.SubscribeResponse)
            assert [e.position for e in message.batch.events] == [13, 14, 15]
            call.cancel()
    finally:
        await server.stop(None)


@pytest.mark.parametrize("limit", [0, 1])
async def test_the_baseline_sends_single_events_without_batches(limit: int) -> None:
    server, _, target = await _baseline(3)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb.SystemEventServiceStub(channel)
            request = pb.SubscribeRequest(beginning=Empty(), max_batch_size=limit)
            kinds = []
            async for message in stub.Subscribe(request):
                kinds.append(message.WhichOneof("content"))
                if kinds[-1] == "caught_up":
                    break
            assert kinds == ["event", "event", "event", "caught_up"]
    finally:
        await server.stop(None)


def test_the_nats_follower_catches_a_gap_or_repeat() -> None:
    follower = nats_workloads.Follower()
    follower.take(1, 0.0)
    follower.take(2, 0.0)
    with pytest.raises(WorkloadError, match="3"):
        follower.take(4, 0.0)
    with pytest.raises(WorkloadError, match="again"):
        follower.take(2, 0.0)
    with pytest.raises(WorkloadError, match="expected 1"):
        nats_workloads.Follower().take(2, 0.0)


def _refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"nats://127.0.0.1:{port}"


async def test_the_nats_probe_says_why_it_cannot_connect() -> None:
    reason = await nats_workloads.probe(_refused_url(), seconds=2.0)
    assert reason is not None
    assert "ConnectionRefused" in reason


def test_an_unreachable_nats_leaves_its_column_out_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _refused_url()
    monkeypatch.setenv("JOURNEY_BENCH_NATS_URL", url)
    status = runner.nats_status(list(SCENARIOS), no_nats=False)
    assert status["url"] == url
    assert status["skipped"]
    out = capsys.readouterr().out
    assert f"NATS JetStream not reachable at {url.removeprefix('nats://')}" in out
    assert "the nats column is skipped" in out
    assert runner.nats_status(list(SCENARIOS), no_nats=True)["skipped"] == "--no-nats"
    doc = report.document(list(SCENARIOS[:2]), {"1": {}, "2": {}}, ["journey"], True, 0.0, status)
    assert doc["versus_nats"]["rows"] == []
    assert "Journey against NATS JetStream: not run" in report.markdown(doc)


def test_the_nats_table_compares_like_figures() -> None:
    results: dict[str, dict[str, dict[str, Any]]] = {
        "2": {"journey": {"events_per_s": 30.0}, "nats": {"events_per_s": 20.0}},
        "4": {
            "journey": {"p99_ms": 1.0, "p99_from_send_ms": 4.0},
            "nats": {"p99_ms": 0.0, "p99_from_send_ms": 2.0},
        },
    }
    versus = report.versus_nats(results, {"url": "nats://x", "skipped": None})
    ingest, latency = versus["rows"]
    assert (ingest["ratio_journey_to_nats"], ingest["met"]) == (1.5, True)
    assert (latency["ratio_journey_to_nats"], latency["met"]) == (2.0, False)


async def test_a_nats_replay_when_jetstream_is_here() -> None:
    url = runner.nats_url()
    reason = await nats_workloads.probe(url, seconds=2.0)
    if reason is not None:
        pytest.skip(f"no NATS JetStream at {url}: {reason}")
    result = await nats_workloads.nats_replay(url, 500)
    assert result["events"] == 500


def test_the_metrics_overhead_compares_track_calls_with_metrics_on_and_off() -> None:
    results: dict[str, dict[str, dict[str, Any]]] = {
        "1": {
            "journey": {"calls_per_s": 1000.0, "server_cpu_ms_per_call": 0.5},
            "journey+metrics": {"calls_per_s": 960.0, "server_cpu_ms_per_call": 0.52},
        },
        "2": {"journey": {"calls_per_s": 500.0}, "journey+metrics": {"calls_per_s": 450.0}},
        "3": {"journey": {"delivered_per_s": 9.0}, "journey+metrics": {"skipped": "Track only"}},
    }
    rows = report.metrics_overhead(results)
    assert [(r["scenario"], r["ratio_on_to_off"], r["met"]) for r in rows] == [
        ("1", 0.96, True),
        ("2", 0.9, False),
    ]
    assert rows[0]["cpu_per_call_on_to_off"] == pytest.approx(1.04)
    assert rows[1]["cpu_per_call_on_to_off"] is None
    doc = report.document(list(SCENARIOS[:3]), results, ["journey", "journey+metrics"], True, 0.0)
    text = report.markdown(doc)
    assert "### Metrics overhead" in text
    assert "| 1 | 1,000 | 960 | 0.960 | >= 0.95 | yes | 1.040 |" in text
    assert "| 2 | 500 | 450 | 0.900 | >= 0.95 | no | n/a |" in text


def test_the_metrics_column_runs_only_the_track_scenarios(tmp_path: Path) -> None:
    server = runner.Server(runner.METRICS, env=runner.METRICS_ENV)
    overhead = [s for s in SCENARIOS if s.metrics_overhead]
    assert [s.key for s in overhead] == ["1", "2"]
    fan_out = next(s for s in SCENARIOS if s.key == "3")
    result = runner.run_one(fan_out, QUICK, server, tmp_path)
    assert "skipped" in result
