"""The `journey` command: serve (config errors, startup line, signals) and the client commands."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from journey_client import JourneyClient, pb
from tests.clients.server_process import journey_serve
from tests.conftest import SettingsFactory
from tests.faults.process import start_server
from tests.integration.harness import serving

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
    server = await start_server(config, env={**CLEAN_ENV, "JOURNEY_VISIT_TIMEOUT": "90s"})
    try:
        config_lines = [line for line in server.output if "configuration:" in line]
        assert len(config_lines) == 1
        effective = json.loads(config_lines[0].split("configuration: ", 1)[1])
        assert effective["visit_timeout"] == "90s"
        assert effective["listen"] == "127.0.0.1:0"

        async with grpc.aio.insecure_channel(server.target) as channel:
            check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            response = await pb.TrackerServiceStub(channel).Track(
                pb.TrackRequest(source_id="web", events=[pb.TrackedEvent(type="page-view")])
            )
            assert len(response.system_events) == 3
    finally:
        if server.process.returncode is None:
            server.process.send_signal(stop_signal)
        code = await server.wait()
    assert code == 0, "".join(server.output)
    assert "stopped" in "".join(server.output)


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
    assert code == 2
    assert f"journey: cannot listen on {host}:{port}: address in use" in output
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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://journey:s3cret@127.0.0.1:notaport/journey",
            "postgresql+asyncpg://journey:***@127.0.0.1:notaport/journey",
        ),
        (
            "postgresql+asyncpg://journey:s3cret@127.0.0.1:5432/journey?bogus_option=1",
            "postgresql+asyncpg://journey:***@127.0.0.1:5432/journey?bogus_option=1",
        ),
    ],
)
async def test_a_database_url_the_driver_refuses_stops_serve_with_exit_1(
    url: str, shown: str
) -> None:
    code, output = await run_cli("serve", env={**CLEAN_ENV, "JOURNEY_DATABASE_URL": url})
    assert code == 1, output
    assert f"journey: cannot open the database {shown}: " in output
    assert "s3cret" not in output
    assert "Traceback" not in output


# The client commands, against an in-process server (or a real `journey serve` to restart).


async def client_cli(port: int, *args: str) -> tuple[int, str, str]:
    """Run a client command against 127.0.0.1:port; returns the exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "journey.cli", *args, "--server", f"127.0.0.1:{port}",
        env=CLEAN_ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_client_commands_print_json(make_settings: SettingsFactory) -> None:
    async with serving(make_settings()) as harness:
        port = harness.port
        code, out, err = await client_cli(
            port, "track", "--source", "web", "--profile", "alice", "--type", "page-view",
            "--type", "click", "--properties", '{"url": "/pricing"}',
        )  # fmt: skip
        assert code == 0, err
        tracked = json.loads(out)
        assert tracked["profileId"] == "alice"
        assert len(tracked["eventIds"]) == 2
        session_id = tracked["sessionId"]

        code, out, _ = await client_cli(port, "session", "get", session_id)
        assert (code, json.loads(out)["eventCount"]) == (0, "2")
        code, out, _ = await client_cli(port, "profile", "get", "alice")
        assert (code, json.loads(out)["visitCount"]) == (0, 1)
        code, out, _ = await client_cli(port, "settings")
        assert "SYSTEM_EVENT_TYPE_VISIT_ENDED" in json.loads(out)["enabledTypes"]
        code, out, _ = await client_cli(port, "session", "end", session_id, "--reason", "bye")
        assert code == 0
        closed = json.loads(out)["systemEvents"][-1]
        assert closed["properties"] == {"reason": "bye"}

        code, out, _ = await client_cli(port, "events", "list", "--page-size", "2")
        lines = [json.loads(line) for line in out.splitlines()]
        assert [e["position"] for e in lines] == ["1", "2", "3", "4", "5"]
        code, out, _ = await client_cli(
            port, "events", "list", "--type", "visit-ended", "--type", "session-closed"
        )
        types = [json.loads(line)["type"] for line in out.splitlines()]
        assert types == ["SYSTEM_EVENT_TYPE_VISIT_ENDED", "SYSTEM_EVENT_TYPE_SESSION_CLOSED"]


async def test_client_commands_fail_with_one_line_and_an_exit_code(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as harness:
        port = harness.port
        code, out, err = await client_cli(port, "session", "get", "nope")
        assert (code, out) == (1, "")
        assert err == f"journey: 127.0.0.1:{port}: NOT_FOUND: session 'nope' does not exist\n"
        code, _, err = await client_cli(port, "track", "--source", "", "--type", "x")
        assert code == 1
        assert err.startswith(f"journey: 127.0.0.1:{port}: INVALID_ARGUMENT: source_id")
        code, _, err = await client_cli(
            port, "track", "--source", "web", "--type", "x", "--properties", "{nope"
        )
        assert code == 2
        assert err.startswith("journey: --properties is not JSON")
        code, _, err = await client_cli(port, "subscribe", "--from", "yesterday")
        assert code == 2
        assert "start must be beginning, end or a position" in err
        code, _, err = await client_cli(port, "subscribe", "--max-batch-size", "-1")
        assert code == 2
        assert "--max-batch-size: expected a whole number >= 0, not '-1'" in err
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        code, _, err = await client_cli(closed.getsockname()[1], "settings")
    assert code == 1
    assert len(err.splitlines()) == 1
    assert ": UNAVAILABLE: " in err


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_subscribe_prints_json_lines_and_exits_0_on_a_signal(
    make_settings: SettingsFactory, stop_signal: signal.Signals
) -> None:
    async with serving(make_settings()) as harness:
        first = await harness.track(profile_id="alice")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "journey.cli", "subscribe", "--server",
            f"127.0.0.1:{harness.port}", "--type", "visit-started", "--from", "beginning",
            env=CLEAN_ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        assert process.stderr is not None
        async with asyncio.timeout(30):
            line = json.loads(await process.stdout.readline())
            assert line["sessionId"] == first.session_id
            second = await harness.track(profile_id="bob")
            line = json.loads(await process.stdout.readline())
            assert line["sessionId"] == second.session_id
            assert line["properties"]["trigger_event_types"] == ["page-view"]
            process.send_signal(stop_signal)
            rest, err = await process.communicate()
    assert process.returncode == 0
    assert rest == b""
    assert b"Traceback" not in err


async def test_subscribe_resumes_across_a_server_restart(database_url: str, tmp_path: Path) -> None:
    async with journey_serve(database_url, tmp_path, heartbeat_interval="200ms") as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "journey.cli", "subscribe", "--server", server.address,
            "--from", "beginning", env=CLEAN_ENV, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        async with JourneyClient(server.address) as client, asyncio.timeout(60):
            await client.track("web", ["page-view"], profile_id="alice")
            before = [json.loads(await process.stdout.readline()) for _ in range(3)]
            assert await server.stop() == 0
            await server.start()
            await client.track("web", ["page-view"], profile_id="bob")
            after = [json.loads(await process.stdout.readline()) for _ in range(3)]
            process.send_signal(signal.SIGINT)
            rest, err = await process.communicate()
    assert process.returncode == 0
    assert rest == b""
    assert [int(e["position"]) for e in before + after] == [1, 2, 3, 4, 5, 6]
    assert b"resuming after position 3" in err
