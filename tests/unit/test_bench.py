"""The benchmark's own checks: batches checked event by event, the baseline's batches, NATS."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.empty_pb2 import Empty
from sqlalchemy.ext.asyncio import create_async_engine

from bench import baseline, interleaved, nats_workloads, postgres, report, runner, seed, servers
from bench.scenarios import FULL, QUICK, SCENARIOS, chosen_scenarios
from bench.workloads import (
    Subscriber,
    WorkloadError,
    _finish,
    check_events,
    shortfall,
    track_request,
)
from journey.config import Settings
from journey.storage.database import open_database
from journey_client import pb
from tests.conftest import ADMIN_URL, REQUIRE_POSTGRES

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
    assert (ingest["ratio_best_to_nats"], ingest["met"]) == (1.5, True)
    assert (latency["ratio_best_to_nats"], latency["met"]) == (2.0, False)


async def test_a_nats_replay_when_jetstream_is_here() -> None:
    url = runner.nats_url()
    reason = await nats_workloads.probe(url, seconds=2.0)
    if reason is not None:
        pytest.skip(f"no NATS JetStream at {url}: {reason}")
    result = await nats_workloads.nats_replay(url, 500)
    assert result["events"] == 500


def test_a_realistic_page_view_carries_the_same_fields_to_journey_and_to_nats() -> None:
    request = track_request(3, 7, "", 20, with_properties=True)
    assert len(request.events) == 20
    ids = [e.id for e in request.events]
    assert len(set(ids)) == 20
    urls = set()
    for event in request.events:
        fields = json_format.MessageToDict(event.properties)
        assert set(fields) == {"url", "referrer", "load_ms"}
        assert fields["url"].startswith("https://shop.example.com/products/")
        assert isinstance(fields["load_ms"], float)
        urls.add(fields["url"])
        assert event.type == "page-view"
    assert len(urls) == 20  # not one repeated page
    # The NATS side's n-th message: the same event as JSON, an id of its own per message.
    first = json.loads(nats_workloads.page_view_json(5, 140))
    assert first == {
        "type": "page-view",
        "id": "5-140",
        "properties": json_format.MessageToDict(request.events[0].properties),
    }
    assert json.loads(nats_workloads.page_view_json(5, 141))["id"] == "5-141"


def test_the_old_ingest_scenarios_track_events_without_properties() -> None:
    request = track_request(3, 7, "session", 20)
    assert all(not e.HasField("properties") for e in request.events)
    assert [e.id for e in request.events][:2] == ["3-7-0", "3-7-1"]


def test_the_realistic_scenario_and_its_nats_run_ask_for_page_views() -> None:
    realistic = next(s for s in SCENARIOS if s.key == "8")
    plan = realistic.plan(QUICK)
    assert plan.workload == "track"
    assert plan.args | {"seconds": 0} == {
        "callers": 32,
        "events": 20,
        "seconds": 0,
        "with_properties": True,
    }
    assert realistic.nats is not None
    assert realistic.nats(QUICK).args["with_properties"] is True
    assert realistic.postgres_in_quick
    assert any(v.scenario == "8" for v in report.VERSUS)


def test_the_scenarios_in_table_order_and_the_cross_replica_ones() -> None:
    default = [s.key for s in chosen_scenarios(None)]
    assert default[:3] == ["1", "2", "8"]
    # Replicas see each other's events in this version, so the default run includes them.
    assert {"9", "10"} <= set(default)
    assert [s.key for s in chosen_scenarios("10,1,9")] == ["1", "9", "10"]
    with pytest.raises(SystemExit, match="no scenario 99"):
        chosen_scenarios("1,99")
    for key in ("9", "10"):
        plan = next(s for s in SCENARIOS if s.key == key).plan(QUICK)
        assert plan.replicas == 2
        assert plan.baseline_replay is None


def test_the_postgres_columns_and_where_each_runs() -> None:
    pg = runner.pg_column(1)
    assert (pg.name, pg.postgres, pg.config, pg.candidate) == ("journey-pg", True, {}, True)
    w2 = runner.pg_column(2)
    assert (w2.name, w2.postgres, w2.config) == ("journey-pg-w2", True, {"workers": 2})
    # An error column until `journey serve` knows `workers`, a real one after.
    has_workers = "workers" in {f.name for f in dataclasses.fields(Settings)}
    assert (w2.unavailable is None) == has_workers
    sqlite = runner.Server("journey", candidate=True)
    by_key = {s.key: s for s in SCENARIOS}
    cross = by_key["9"].plan(FULL)
    assert runner.not_run(by_key["9"], cross, sqlite, quick=False) == {
        "skipped": "n/a: replicas share a PostgreSQL database; SQLite is one process"
    }
    assert runner.not_run(by_key["9"], cross, pg, quick=False) is None
    # The quick run takes PostgreSQL only where it exercises a path of its own.
    assert runner.not_run(by_key["3"], by_key["3"].plan(QUICK), pg, quick=True) == {
        "skipped": "not in the quick run"
    }
    assert runner.not_run(by_key["3"], by_key["3"].plan(FULL), pg, quick=False) is None
    assert runner.not_run(by_key["1"], by_key["1"].plan(QUICK), pg, quick=True) is None
    w2_ready = dataclasses.replace(w2, unavailable=None)
    assert runner.not_run(by_key["1"], by_key["1"].plan(QUICK), w2_ready, quick=True) == {
        "skipped": "not in the quick run"
    }
    assert runner.not_run(by_key["1"], by_key["1"].plan(FULL), w2_ready, quick=False) is None
    broken = runner.Server("journey-pg-w2", postgres=True, unavailable="not merged")
    assert runner.not_run(by_key["1"], by_key["1"].plan(QUICK), broken, quick=True) == {
        "error": "not merged"
    }


@pytest.mark.parametrize(("text", "counts"), [("1", [1]), ("1,2", [1, 2]), ("2, 4", [2, 4])])
def test_worker_counts(text: str, counts: list[int]) -> None:
    assert postgres.worker_counts(text) == counts


@pytest.mark.parametrize("text", ["", "0", "1,1", "two", "-1"])
def test_bad_worker_counts(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        postgres.worker_counts(text)


def test_postgres_database_names_are_safe_unique_and_keep_the_run() -> None:
    name = postgres.database_name("123_abcdef", "8", "journey-pg-w2")
    assert name == "journey_bench_8_journey_pg_w2_123_abcdef"
    assert postgres.database_name("123_abcdef", "8", "journey-pg") != name
    assert postgres.database_name("123_abcdef", "1", "journey-pg-w2") != name
    long = postgres.database_name("99999_ffffff", "10", "journey+metrics-" + "x" * 80)
    assert len(long) <= 63
    assert long.endswith("_99999_ffffff")
    assert re.fullmatch(r"[a-z0-9_]+", long)
    assert postgres.create_statement(name) == f'CREATE DATABASE "{name}"'
    assert postgres.drop_statement(name) == f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


def test_the_postgres_url_is_configurable_and_always_asyncpg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JOURNEY_BENCH_POSTGRES_URL", raising=False)
    default = postgres.admin_url()
    assert (default.drivername, default.host, default.port) == (
        "postgresql+asyncpg",
        "127.0.0.1",
        5432,
    )
    assert default.username == "postgres"
    monkeypatch.setenv("JOURNEY_BENCH_POSTGRES_URL", "postgresql://bench:s3cret@db.local:6543/x")
    admin = postgres.admin_url()
    assert admin.drivername == "postgresql+asyncpg"
    assert postgres.url_of(admin, "journey_bench_1") == (
        "postgresql+asyncpg://bench:s3cret@db.local:6543/journey_bench_1"
    )
    monkeypatch.setenv("JOURNEY_BENCH_POSTGRES_URL", "sqlite:///x.db")
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        postgres.admin_url()


def test_an_unreachable_postgres_leaves_its_columns_out_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _refused_url().rsplit(":", 1)[1]
    monkeypatch.setenv("JOURNEY_BENCH_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:{port}/x")
    status = postgres.status(wanted=True, no_postgres=False)
    assert status["skipped"]
    assert "the PostgreSQL columns are skipped" in capsys.readouterr().out
    assert postgres.status(wanted=True, no_postgres=True)["skipped"] == "--no-postgres"
    doc = report.document(list(SCENARIOS[:1]), {"1": {}}, ["journey"], True, 0.0, postgres=status)
    assert "PostgreSQL columns not run" in report.markdown(doc)


def test_the_best_configuration_meets_the_targets() -> None:
    by_key = {s.key: s for s in SCENARIOS}
    results: dict[str, dict[str, dict[str, Any]]] = {
        "1": {
            "baseline": {"calls_per_s": 100.0},
            "journey": {"calls_per_s": 50.0},
            "journey-pg": {"error": "boom"},
            "journey-pg-w2": {"calls_per_s": 70.0},
            "before": {"calls_per_s": 90.0},  # another checkout: never the best
        },
        "4": {
            "baseline": {"p99_ms": 1.0},
            "journey": {"p99_ms": 3.0},
            "journey-pg": {"p99_ms": 2.0},
        },
        "8": {
            "journey": {"events_per_s": 30.0},
            "journey-pg": {"events_per_s": 45.0},
            "nats": {"events_per_s": 40.0},
        },
    }
    candidates = ["journey", "journey-pg", "journey-pg-w2"]
    columns = ["baseline", *candidates, "before", "nats"]
    doc = report.document(
        [by_key["1"], by_key["4"], by_key["8"]],
        results,
        columns,
        False,
        0.0,
        {"url": "nats://x", "skipped": None},
        candidates=candidates,
    )
    track, latency, realistic = doc["rows"]
    assert (track["best"], track["ratio_to_baseline"], track["met"]) == ("journey-pg-w2", 0.7, True)
    assert (latency["best"], latency["ratio_to_baseline"]) == ("journey-pg", 2.0)
    assert realistic["best"] == "journey-pg"
    versus = next(r for r in doc["versus_nats"]["rows"] if r["scenario"] == "8")
    assert versus["comparison"] == 5
    assert versus["journey"] == {"journey": 30.0, "journey-pg": 45.0, "journey-pg-w2": None}
    assert (versus["best"], versus["ratio_best_to_nats"], versus["met"]) == (
        "journey-pg",
        1.125,
        True,
    )
    assert versus["target"] == ">= 1.0 x NATS"
    text = report.markdown(doc)
    assert "| 0.70 (journey-pg-w2) | >= 0.6 x baseline | yes |" in text
    assert "| 30.0 | 45.0 | n/a | 40.0 | 1.12, journey-pg | >= 1.0 x NATS | yes |" in text
    assert "ERROR" in text


def _delivering(ids: list[str]) -> list[pb.SubscribeResponse]:
    return [
        pb.SubscribeResponse(caught_up=pb.CaughtUp(position=0)),
        pb.SubscribeResponse(batch=Batch(events=[_event(i + 1, e) for i, e in enumerate(ids)])),
    ]


async def test_a_drain_that_times_out_says_how_many_events_were_lost() -> None:
    whole = await _subscriber(_delivering(["a", "b", "c"]))
    short = await _subscriber(_delivering(["a"]))
    with pytest.raises(
        WorkloadError, match=r"1 of 2 subscribers lost events \(the worst got 1 of 3\)"
    ):
        await _finish([whole, short], {"a", "b", "c"}, drain_seconds=0.2)
    await whole.stop()
    await short.stop()


def test_shortfall_counts_unexpected_events() -> None:
    text = shortfall([{"a", "b", "x"}, {"a", "b"}], {"a", "b"})
    assert (
        text
        == "0 of 2 subscribers lost events (the worst got 2 of 2), 1 unexpected events received"
    )


async def _one_row(url: str, sql: str) -> tuple[Any, ...]:
    database = await open_database(url)
    try:
        async with database.engine.connect() as connection:
            return tuple((await connection.exec_driver_sql(sql)).one())
    finally:
        await database.close()


async def test_the_seed_fills_sqlite_and_postgresql_alike(database_url: str) -> None:
    now = datetime.now(UTC)
    await asyncio.to_thread(seed.system_events, database_url, 2_500, now)
    await asyncio.to_thread(seed.active_sessions, database_url, 1_200, now)
    events = "SELECT count(*), max(position) FROM system_events WHERE encoded IS NOT NULL"
    assert await _one_row(database_url, events) == (2_500, 2_500)
    sessions = "SELECT count(*), count(DISTINCT profile_id) FROM sessions"
    assert await _one_row(database_url, sessions) == (1_200, 1_200)


def test_a_fresh_postgres_database_is_created_and_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEY_BENCH_POSTGRES_URL", ADMIN_URL)
    admin = postgres.admin_url()
    reason = postgres.unreachable(admin)
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    name = postgres.database_name(runner.RUN_ID, "t", "journey-pg")

    def exists() -> bool:
        async def ask() -> bool:
            engine = create_async_engine(admin)
            try:
                async with engine.connect() as connection:
                    sql = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"
                    return (await connection.exec_driver_sql(sql)).first() is not None
            finally:
                await engine.dispose()

        return asyncio.run(ask())

    with postgres.fresh_database(admin, name) as url:
        assert url.endswith(f"/{name}")
        assert exists()
        seed.system_events(url, 10, datetime.now(UTC))
    assert not exists()


@dataclasses.dataclass
class _Started:
    """What run_one asked the fake servers and load generator for."""

    servers: list[tuple[str, str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    loads: list[tuple[str, str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    seeded: list[str] = dataclasses.field(default_factory=list)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> _Started:
    """run_one with servers that only record how they were started, and a recording load."""
    seen = _Started()
    ports = iter(range(40001, 40100))

    @contextlib.contextmanager
    def journey(
        workdir: Path, url: str, config: dict[str, Any], **kwargs: Any
    ) -> Iterator[servers.Running]:
        seen.servers.append((kwargs["name"], url, dict(config)))
        yield servers.Running(pid=1000 + len(seen.servers), port=next(ports))

    @contextlib.contextmanager
    def baseline(workdir: Path, replay: int = 0) -> Iterator[servers.Running]:
        seen.servers.append(("baseline", "", {"replay": replay}))
        yield servers.Running(pid=999, port=next(ports))

    def run_load(plan: Any, target: str, extra: dict[str, Any]) -> dict[str, Any]:
        seen.loads.append((plan.workload, target, extra))
        return {"ok": 1.0}

    monkeypatch.setattr(servers, "journey", journey)
    monkeypatch.setattr(servers, "baseline", baseline)
    monkeypatch.setattr(runner, "run_load", run_load)
    return seen


def test_run_one_gives_the_memory_scenario_the_server_pid_on_every_column(
    started: _Started, tmp_path: Path
) -> None:
    memory = next(s for s in SCENARIOS if s.key == "6")
    assert runner.run_one(memory, QUICK, runner.Server("baseline"), tmp_path) == {"ok": 1.0}
    assert runner.run_one(memory, QUICK, runner.Server("journey"), tmp_path) == {"ok": 1.0}
    assert [extra["pid"] for _, _, extra in started.loads] == [999, 1002]
    assert started.servers[1][1] == f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}"


def test_run_one_starts_two_replicas_on_one_database_for_cross_replica(
    started: _Started, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []

    @contextlib.contextmanager
    def fresh(admin: Any, name: str) -> Iterator[str]:
        made.append(name)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"

    monkeypatch.setattr(postgres, "fresh_database", fresh)
    cross = next(s for s in SCENARIOS if s.key == "10")
    column = runner.Server("journey-pg-w2", postgres=True, config={"workers": 2})
    assert runner.run_one(cross, QUICK, column, tmp_path) == {"ok": 1.0}
    assert made == [postgres.database_name(runner.RUN_ID, "10", "journey-pg-w2")]
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{made[0]}"
    assert started.servers == [
        ("journey-pg-w2", url, {"workers": 2}),
        ("journey-pg-w2-replica2", url, {"workers": 2}),
    ]
    ((workload, target, extra),) = started.loads
    assert (workload, target) == ("latency", "127.0.0.1:40001")
    assert extra == {"subscriber_target": "127.0.0.1:40002"}


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
    chosen = [s for s in SCENARIOS if s.key in results]
    doc = report.document(chosen, results, ["journey", "journey+metrics"], True, 0.0)
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


def test_the_interleaved_comparison_takes_medians_of_rounds_and_of_their_ratios() -> None:
    def side(calls: float, cpu: float) -> dict[str, float]:
        return {"calls_per_s": calls, "server_cpu_ms_per_call": cpu}

    rounds = [
        {"off": side(1000, 0.5), "on": side(900, 0.6), "ratio": 0.9},
        {"off": side(2000, 0.4), "on": side(1900, 0.5), "ratio": 0.95},
        {"off": side(500, 0.7), "on": side(600, 0.4), "ratio": 1.2},
    ]
    found = interleaved.summary("off", "on", rounds)
    assert found["calls_per_s"] == {"off": 1000, "on": 900}
    assert found["server_cpu_ms_per_call"] == {"off": 0.5, "on": 0.5}
    assert found["median_ratio"] == 0.95
    doc = report.document([], {}, [], False, 0.0, interleaved=found)
    assert doc["metrics_overhead_interleaved"]["met"] is True
    assert "ratios **0.950** (target >= 0.95, met: yes)" in report.markdown(doc)
    slower = interleaved.summary("off", "on", rounds[:2])
    assert (
        report.document([], {}, [], False, 0.0, interleaved=slower)["metrics_overhead_interleaved"][
            "met"
        ]
        is False
    )


def test_track_of_one_is_judged_against_the_baseline_on_interleaved_rounds() -> None:
    def side(calls: float) -> dict[str, float]:
        return {"calls_per_s": calls, "server_cpu_ms_per_call": 1000 / calls}

    rounds = [
        {"baseline": side(3000), "journey": side(1500), "ratio": 0.5},
        {"baseline": side(2000), "journey": side(1300), "ratio": 0.65},
        {"baseline": side(2500), "journey": side(1550), "ratio": 0.62},
    ]
    met = interleaved.summary("baseline", "journey", rounds)
    doc = report.document([], {}, [], False, 0.0, against_baseline=met)
    judged = doc["track_against_baseline_interleaved"]
    assert (judged["median_ratio"], judged["target"], judged["met"]) == (0.62, ">= 0.6", True)
    text = report.markdown(doc)
    assert "### Track of 1 against the baseline, interleaved" in text
    assert "journey / baseline ratios **0.620** (target >= 0.6, met: yes)" in text
    assert "each round's ratio 0.50, 0.65, 0.62" in text
    short = interleaved.summary("baseline", "journey", [*rounds[:2], rounds[0]])
    assert (
        report.document([], {}, [], False, 0.0, against_baseline=short)[
            "track_against_baseline_interleaved"
        ]["met"]
        is False
    )


def test_interleaved_rounds_run_the_baseline_beside_journey() -> None:
    found = interleaved.measure(
        runner.Server("baseline"), runner.Server("journey"), rounds=1, seconds=0.5, events=1
    )
    assert (found["a"], found["b"], found["rounds"]) == ("baseline", "journey", 1)
    assert found["calls_per_s"]["baseline"] > 0
    assert found["calls_per_s"]["journey"] > 0
    ratio = found["calls_per_s"]["journey"] / found["calls_per_s"]["baseline"]
    assert found["median_ratio"] == pytest.approx(ratio)


def test_group_rounds_settles_every_event_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The harness fails (SystemExit) unless each event's ack was settled exactly once.
    from bench import group_rounds

    monkeypatch.setattr("sys.argv", ["group_rounds", "1000", "session"])
    group_rounds.main()
    out = capsys.readouterr().out
    assert re.fullmatch(r"SESSION, FULL: [\d,]+ events/s, \d+ rounds, [\d.]+ ms per round\n", out)


def test_consumer_groups_are_judged_against_nats_on_the_median_of_interleaved_rounds() -> None:
    from bench import nats_interleaved

    rounds = [
        {"none": 1200.0, "session": 900.0, "nats": 1000.0},
        {"none": 2600.0, "session": 2200.0, "nats": 2000.0},
        {"none": 1500.0, "session": 1300.0, "nats": 1600.0},
    ]
    for r in rounds:
        r |= {f"{o}_ratio": r[o] / r["nats"] for o in ("none", "session")}
    found = nats_interleaved.summary(rounds, ("none", "session"))
    assert found["events_per_s"] == {"none": 1500, "session": 1300, "nats": 1600}
    # Medians of the ratios (1.2, 1.3, 0.94 and 0.9, 1.1, 0.81), not ratios of the medians.
    assert found["none"]["median_ratio"] == pytest.approx(1.2)
    assert found["session"]["median_ratio"] == pytest.approx(0.9)
    doc = report.document([], {}, [], False, 0.0, groups_against_nats=found)
    judged = doc["groups_against_nats_interleaved"]
    assert (judged["none"]["met"], judged["session"]["met"]) == (True, False)
    text = report.markdown(doc)
    assert "### Consumer groups against NATS JetStream, interleaved" in text
    assert "| NONE | **1.20** | 1.20, 1.30, 0.94 | >= 1.0 x NATS | yes |" in text
    assert "| SESSION | **0.90** | 0.90, 1.10, 0.81 | >= 1.0 x NATS | no |" in text


@pytest.mark.parametrize(
    ("argument", "key", "title"),
    [
        ("groups_against_nats", "groups_against_nats_interleaved", "Consumer groups"),
        ("ingest_against_nats", "ingest_against_nats_interleaved", "Page-view ingest"),
    ],
)
def test_a_failed_round_against_nats_is_reported_not_judged(
    argument: str, key: str, title: str
) -> None:
    failed = {"error": "round 1, nats: down"}
    measured: dict[str, Any] = {argument: failed}
    doc = report.document([], {}, [], False, 0.0, **measured)
    assert doc[key] == failed
    text = report.markdown(doc)
    assert (
        f"### {title} against NATS JetStream, interleaved\n\nNot measured: round 1, nats: down"
        in text
    )


async def test_a_group_round_runs_journey_in_both_orderings_beside_nats() -> None:
    from bench import nats_interleaved

    url = runner.nats_url()
    reason = await nats_workloads.probe(url, seconds=2.0)
    if reason is not None:
        pytest.skip(f"no NATS JetStream at {url}: {reason}")
    by_key = {s.key: s for s in SCENARIOS}
    small = dataclasses.replace(QUICK, group_events=300)
    # The runs start their own event loops (subprocesses): not on this test's.
    journey = runner.Server("journey")
    sides = {"none": (by_key["11"], journey), "session": (by_key["12"], journey)}
    found = await asyncio.to_thread(
        nats_interleaved.measure, sides, by_key["11"], small, rounds=1, seed=7
    )
    assert found["rounds"] == 1
    rates = found["events_per_s"]
    assert min(rates.values()) > 0
    assert found["session"]["median_ratio"] == pytest.approx(rates["session"] / rates["nats"])
    assert found["none"]["ratios"] == [round(rates["none"] / rates["nats"], 3)]


def test_page_view_ingest_is_judged_against_nats_on_the_median_of_interleaved_rounds() -> None:
    from bench import nats_interleaved

    rounds = [
        {"journey": 9000.0, "nats": 10000.0},
        {"journey": 20000.0, "nats": 12500.0},
        {"journey": 15000.0, "nats": 14000.0},
    ]
    for r in rounds:
        r["journey_ratio"] = r["journey"] / r["nats"]
    found = nats_interleaved.summary(rounds, ("journey",))
    # The median of 0.9, 1.6 and 1.07, not 15,000 / 12,500.
    assert found["journey"]["median_ratio"] == pytest.approx(15000 / 14000)
    ingest = found | {"configuration": "journey-pg", "seconds": 4.0}
    doc = report.document([], {}, [], False, 0.0, ingest_against_nats=ingest)
    judged = doc["ingest_against_nats_interleaved"]
    assert judged["journey"]["met"] is True
    text = report.markdown(doc)
    assert "### Page-view ingest against NATS JetStream, interleaved" in text
    assert "3 rounds of scenario 8 (4 s of load per run), Journey (journey-pg, the best" in text
    assert "median events/s 15,000 Journey, 12,500 NATS" in text
    assert "**1.07** (target >= 1.0 x NATS, met: yes); each round's ratio 0.90, 1.60, 1.07." in text
    rounds[2]["journey_ratio"] = 0.95
    doc = report.document(
        [],
        {},
        [],
        False,
        0.0,
        ingest_against_nats=ingest | nats_interleaved.summary(rounds, ("journey",)),
    )
    assert doc["ingest_against_nats_interleaved"]["journey"]["met"] is False
    assert "met: no" in report.markdown(doc)


def test_the_interleaved_ingest_runs_the_best_candidate_column() -> None:
    sqlite = runner.Server("journey", candidate=True)
    pg = runner.Server("journey-pg", postgres=True, candidate=True)
    other = runner.Server("before", checkout=Path("/elsewhere"))
    columns = [runner.Server("baseline"), sqlite, pg, other, runner.Server(runner.NATS)]
    by_column: dict[str, dict[str, Any]] = {
        "baseline": {"events_per_s": 90.0},
        "journey": {"events_per_s": 30.0},
        "journey-pg": {"events_per_s": 45.0},
        "before": {"events_per_s": 80.0},
        "nats": {"events_per_s": 70.0},
    }
    assert runner.best_column(by_column, columns, "events_per_s") is pg
    by_column["journey-pg"] = {"error": "down"}
    assert runner.best_column(by_column, columns, "events_per_s") is sqlite
    assert runner.best_column({"journey": {"error": "down"}}, columns, "events_per_s") is None


async def test_an_ingest_round_runs_journey_beside_nats() -> None:
    from bench import nats_interleaved

    url = runner.nats_url()
    reason = await nats_workloads.probe(url, seconds=2.0)
    if reason is not None:
        pytest.skip(f"no NATS JetStream at {url}: {reason}")
    scenario = next(s for s in SCENARIOS if s.key == "8")
    short = dataclasses.replace(QUICK, seconds=1.0)
    sides = {"journey": (scenario, runner.Server("journey", candidate=True))}
    found = await asyncio.to_thread(nats_interleaved.measure, sides, scenario, short, 2, 3)
    assert found["rounds"] == 2
    ratios = found["journey"]["ratios"]
    assert len(ratios) == 2
    assert min(ratios) > 0
    assert found["journey"]["median_ratio"] == pytest.approx(sum(ratios) / 2, abs=1e-3)
