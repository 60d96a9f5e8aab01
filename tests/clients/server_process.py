"""A real `journey serve` subprocess on a chosen free port, that tests can kill and restart."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path


def free_port() -> int:
    """A port nobody listens on right now (the server binds it again on each restart)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """`journey serve` with JOURNEY_* settings, its log in a file; start, kill, start again."""

    def __init__(self, database_url: str, log_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "JOURNEY_LISTEN": self.address,
            "JOURNEY_DATABASE_URL": database_url,
            **{f"JOURNEY_{key.upper()}": value for key, value in settings.items()},
        }
        self.log_dir = log_dir
        self.starts = 0
        self.process: asyncio.subprocess.Process | None = None

    @property
    def log(self) -> Path:
        """The current run's log file."""
        return self.log_dir / f"serve-{self.starts}.log"

    async def start(self) -> None:
        """Start the server and wait until it listens."""
        self.starts += 1
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "journey.cli", "serve", env=self.env, stderr=log
            )
        async with asyncio.timeout(30):
            while "listening on port" not in self.log.read_text():
                assert self.process.returncode is None, self.log.read_text()
                await asyncio.sleep(0.05)

    async def stop(self, how: signal.Signals = signal.SIGTERM) -> int:
        """Send a signal (SIGTERM: graceful; SIGKILL: a crash) and wait for the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(how)
        async with asyncio.timeout(30):
            return await self.process.wait()


@asynccontextmanager
async def journey_serve(
    database_url: str, log_dir: Path, env: Mapping[str, str] | None = None, **settings: str
) -> AsyncIterator[ServerProcess]:
    """A started server, stopped (SIGKILL if it hangs) when the block ends."""
    server = ServerProcess(database_url, log_dir, **settings)
    if env:
        server.env.update(env)
    await server.start()
    try:
        yield server
    finally:
        assert server.process is not None
        if server.process.returncode is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await server.process.wait()
            except TimeoutError:
                server.process.kill()
                await server.process.wait()
