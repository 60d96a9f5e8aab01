"""`journey serve` logs, text and JSON, at DEBUG: the call fields, and never a key or password."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.empty_pb2 import Empty
from sqlalchemy.engine import make_url

from journey.auth import digest
from journey_client import pb
from tests.clients.server_process import free_port
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES, _reset_postgres
from tests.faults.process import CLEAN_ENV, start_server
from tests.faults.proxy import Proxy
from tests.integration.harness import status_of

pytestmark = pytest.mark.slow

# Trust auth takes any password, so the server connects with it and still has it to leak.
# `@`, `:` and `/` must be percent-encoded in the URL: both spellings are looked for.
PASSWORD = f"Pw:{secrets.token_hex(6)}@/x"
GOOD_KEY = f"jk_good_{secrets.token_hex(12)}"
BAD_KEYS = [f"jk_bad_{secrets.token_hex(12)}" for _ in range(3)]
TRACE_ID = secrets.token_hex(16)
TRACEPARENT = f"00-{TRACE_ID}-{secrets.token_hex(8)}-01"
TRACK = "/journey.v1.TrackerService/Track"


def forbidden() -> list[str]:
    """Every secret of the run, in each spelling a log could use."""
    url = make_url(POSTGRES_URL).set(password=PASSWORD).render_as_string(hide_password=False)
    encoded = url.split("://", 1)[1].split("@127.0.0.1")[0].split(":", 1)[1]
    assert encoded != PASSWORD  # the URL spells it percent-encoded
    return [PASSWORD, encoded, GOOD_KEY, *BAD_KEYS]


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """The run's PostgreSQL, wiped, behind a proxy that can cut it (a storage error)."""
    problem = await _reset_postgres()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(problem)
        pytest.skip(problem)
    url = make_url(POSTGRES_URL)
    running = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await running.start()
    try:
        yield running
    finally:
        await running.close()


def config_text(log_format: str, port: int) -> str:
    url = make_url(POSTGRES_URL).set(host="127.0.0.1", port=port, password=PASSWORD)
    return (
        f'listen = "127.0.0.1:0"\n'
        f'database_url = "{url.render_as_string(hide_password=False)}"\n'
        f'log_level = "DEBUG"\nlog_format = "{log_format}"\n'
        f'[[api_keys]]\nsha256 = "{digest(GOOD_KEY)}"\nroles = ["admin"]\n'
    )


async def make_calls(target: str, proxy: Proxy) -> None:
    """Calls with the good key, with bad ones, and one while the database is down."""
    good = (("authorization", f"Bearer {GOOD_KEY}"), ("traceparent", TRACEPARENT))
    bad = [
        (("authorization", f"Bearer {BAD_KEYS[0]}"),),
        (("authorization", f"bearer   {BAD_KEYS[1]}"),),
        (("authorization", BAD_KEYS[2]),),  # no scheme at all
    ]
    request = pb.TrackRequest(source_id="web", events=[pb.TrackedEvent(type="page-view")])
    async with grpc.aio.insecure_channel(target) as channel:
        tracker = pb.TrackerServiceStub(channel)
        events = pb.SystemEventServiceStub(channel)
        assert await status_of(tracker.Track(request, metadata=good)) == grpc.StatusCode.OK
        for metadata in bad:
            code = await status_of(tracker.Track(request, metadata=metadata))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        invalid = pb.TrackRequest(source_id="web")
        code = await status_of(tracker.Track(invalid, metadata=good))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        stream = events.Subscribe(pb.SubscribeRequest(beginning=Empty()), metadata=good)
        assert (await stream.read()) is not None
        stream.cancel()
        proxy.cut()
        try:
            code = await status_of(tracker.Track(request, metadata=good))
            assert code == grpc.StatusCode.UNAVAILABLE
        finally:
            proxy.restore()


async def serve_and_call(tmp_path: Path, log_format: str, proxy: Proxy) -> list[str]:
    """Run `journey serve`, make the calls, stop it; every line it wrote to stderr."""
    config = tmp_path / "journey.toml"
    config.write_text(config_text(log_format, proxy.port))
    server = await start_server(config)
    try:
        await make_calls(server.target, proxy)
    finally:
        server.terminate()
        assert await server.wait() == 0, "".join(server.output)
    return server.output


async def failed_start(tmp_path: Path, log_format: str) -> str:
    """`journey serve` against a port where no database listens: its whole output."""
    config = tmp_path / "down.toml"
    config.write_text(config_text(log_format, free_port()))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "journey.cli",
        "serve",
        "--config",
        str(config),
        env=CLEAN_ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode == 1, output.decode()
    return output.decode()


def call_lines(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["logger"] == "journey.rpc" and "code" in e]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_logs_carry_no_key_and_no_password(
    tmp_path: Path, proxy: Proxy, log_format: str
) -> None:
    lines = await serve_and_call(tmp_path, log_format, proxy)
    startup_failure = await failed_start(tmp_path, log_format)
    everything = "".join(lines) + startup_failure
    assert "cannot open the database" in startup_failure
    assert "postgres:***@127.0.0.1" in everything  # the URL is shown, masked
    assert "UNAUTHENTICATED" in everything
    assert "UNAVAILABLE" in everything  # the storage error was logged
    for secret in forbidden():
        assert secret not in everything
    if log_format == "text":
        assert any(f"{TRACK} OK " in line for line in lines)
        return
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        assert entry["time"].endswith("Z")
        assert datetime.fromisoformat(entry["time"]).utcoffset() is not None
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    calls = call_lines(entries)
    for entry in calls:
        assert entry["method"].startswith("/journey.v1.")
        assert isinstance(entry["duration_ms"], float | int)
        assert entry["duration_ms"] >= 0
    by_code = {(e["method"], e["code"]): e for e in calls}
    assert by_code[TRACK, "OK"]["trace_id"] == TRACE_ID
    assert by_code[TRACK, "UNAUTHENTICATED"].get("trace_id") is None
    assert by_code[TRACK, "INVALID_ARGUMENT"]["trace_id"] == TRACE_ID
    assert by_code[TRACK, "UNAVAILABLE"]["trace_id"] == TRACE_ID
    assert by_code["/journey.v1.SystemEventService/Subscribe", "CANCELLED"]["trace_id"] == TRACE_ID
