"""A real `journey serve` subprocess on a free loopback port, to kill or stop with signals."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from journey_client import pb

# Only what the command needs: a stray JOURNEY_* variable from the caller would change the run.
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}
_LISTENING = re.compile(r"listening on port (\d+)")


@dataclass
class Stubs:
    """Typed stubs over one channel to the process."""

    channel: grpc.aio.Channel
    tracker: pb.TrackerServiceAsyncStub
    events: pb.SystemEventServiceAsyncStub
    sessions: pb.SessionServiceAsyncStub


@dataclass
class ServerProcess:
    """One `journey serve` run; its log is kept in `output`."""

    process: asyncio.subprocess.Process
    port: int
    output: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @property
    def target(self) -> str:
        """host:port to connect to."""
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as in a crash."""
        self.process.kill()

    def terminate(self) -> None:
        """SIGTERM: a graceful stop."""
        self.process.send_signal(signal.SIGTERM)

    async def wait(self, seconds: float = 30) -> int:
        """The exit code, once the process has ended and its log is read."""
        async with asyncio.timeout(seconds):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return code

    @asynccontextmanager
    async def stubs(self) -> AsyncIterator[Stubs]:
        """A channel to the process and stubs for it."""
        async with grpc.aio.insecure_channel(self.target) as channel:
            yield Stubs(
                channel,
                pb.TrackerServiceStub(channel),
                pb.SystemEventServiceStub(channel),
                pb.SessionServiceStub(channel),
            )


def write_config(directory: Path, database_url: str, extra: str = "") -> Path:
    """A config file for a test server on a free port."""
    config = directory / "journey.toml"
    config.write_text(f'listen = "127.0.0.1:0"\ndatabase_url = "{database_url}"\n{extra}')
    return config


async def start_server(
    config: Path, env: dict[str, str] = CLEAN_ENV, args: Sequence[str] = ()
) -> ServerProcess:
    """Start `journey serve --config CONFIG [ARGS]` and wait until it listens."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "journey.cli",
        "serve",
        "--config",
        str(config),
        *args,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "journey serve ended before listening:\n" + "".join(lines)
                lines.append(line)
                if found := _LISTENING.search(line):
                    break
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    server = ServerProcess(process, int(found.group(1)), lines)
    server._reader = asyncio.create_task(_keep_reading(process, lines))
    return server


async def _keep_reading(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    # A full pipe would block the server's logging, and the server with it.
    assert process.stderr is not None
    while line := await process.stderr.readline():
        lines.append(line.decode())


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[ServerProcess]:
    """A server process that is killed at the end if the test left it running."""
    server = await start_server(config)
    try:
        yield server
    finally:
        if server.process.returncode is None:
            server.kill()
        await server.wait()
