"""The `journey serve` process: configuration errors, the startup log line, graceful signals."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from journey_client import pb

pytestmark = pytest.mark.slow


# Only what the command needs: a stray JOURNEY_* variable from the caller would change the run.
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}


async def run_cli(*args: str, env: dict[str, str] = CLEAN_ENV) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "journey.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('listen = "127.0.0.1:0"\nvisit_timeot = "5s"\n', "visit_timeot"),
        ('visit_timeout = "5 parsecs"\n', "visit_timeout"),
        ("[system_events]\nvisit-ended = 1\n", "system_events.visit-ended"),
        ('[[sources]]\nid = "web"\nenabled = "yes"\n', "sources[0].enabled"),
        ("listen = [", "journey.toml"),
    ],
)
async def test_a_bad_config_file_stops_serve_with_the_key_named(
    tmp_path: Path, text: str, named: str
) -> None:
    config = tmp_path / "journey.toml"
    config.write_text(text)
    code, output = await run_cli("serve", "--config", str(config))
    assert code == 2
    assert named in output
    assert "listening" not in output


async def test_a_bad_environment_variable_stops_serve_with_the_variable_named(
    tmp_path: Path,
) -> None:
    env = {**CLEAN_ENV, "JOURNEY_HEARTBEAT_INTERVAL": "often"}
    code, output = await run_cli("serve", env=env)
    assert code == 2
    assert "JOURNEY_HEARTBEAT_INTERVAL" in output


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_serve_logs_its_config_serves_and_exits_0_on_a_signal(
    tmp_path: Path, database_url: str, stop_signal: signal.Signals
) -> None:
    config = tmp_path / "journey.toml"
    config.write_text(f'listen = "127.0.0.1:0"\ndatabase_url = "{database_url}"\n')
    # The environment wins over the file.
    env = {**CLEAN_ENV, "JOURNEY_VISIT_TIMEOUT": "90s"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "journey.cli",
        "serve",
        "--config",
        str(config),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not (port := re.search(r"listening on port (\d+)", lines[-1] if lines else "")):
                lines.append((await process.stderr.readline()).decode())
                assert lines[-1], "".join(lines)
        config_lines = [line for line in lines if "configuration:" in line]
        assert len(config_lines) == 1
        effective = json.loads(config_lines[0].split("configuration: ", 1)[1])
        assert effective["visit_timeout"] == "90s"
        assert effective["listen"] == "127.0.0.1:0"

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port.group(1)}") as channel:
            check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            response = await pb.TrackerServiceStub(channel).Track(
                pb.TrackRequest(source_id="web", events=[pb.TrackedEvent(type="page-view")])
            )
            assert len(response.system_events) == 3
    finally:
        if process.returncode is None:
            process.send_signal(stop_signal)
        async with asyncio.timeout(30):
            rest = (await process.stderr.read()).decode()
            code = await process.wait()
    assert code == 0, rest
    assert "stopped" in rest


async def test_a_taken_port_stops_serve_with_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        host, port = taken.getsockname()
        env = {
            **CLEAN_ENV,
            "JOURNEY_LISTEN": f"{host}:{port}",
            "JOURNEY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'j.db'}",
        }
        code, output = await run_cli("serve", env=env)
    assert code == 1
    assert f"journey: cannot listen on {host}:{port}" in output
    assert "Traceback" not in output


async def test_an_unreachable_database_stops_serve_without_showing_its_password() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        url = f"postgresql+asyncpg://journey:s3cret@127.0.0.1:{port}/journey"
        code, output = await run_cli("serve", env={**CLEAN_ENV, "JOURNEY_DATABASE_URL": url})
    assert code == 1
    assert (
        f"journey: cannot open the database postgresql+asyncpg://journey:***@127.0.0.1:{port}"
        in output
    )
    assert "s3cret" not in output
    assert "Traceback" not in output
