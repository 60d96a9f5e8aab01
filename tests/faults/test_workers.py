"""`journey serve --workers 2` on PostgreSQL: one port, two processes, restarts, a clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.faults.process import ServerProcess, start_server, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """The current pid of each worker number, from the parent's log."""
    pids: dict[int, int] = {}
    for line in server.output:
        if found := _STARTED.search(line):
            pids[int(found.group(1))] = int(found.group(2))
    return pids


def connections_served_by(pid: int, port: int) -> int:
    """Established TCP connections on `port` whose server-side socket belongs to process `pid`."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                    count += 1
    return count


async def check_through(port: int, channels: int) -> list[grpc.aio.Channel]:
    """Open `channels` separate connections and make a health check on each; returns them open."""
    opened = []
    for _ in range(channels):
        # A subchannel pool of its own: otherwise grpc would reuse one connection for all.
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        opened.append(channel)
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return opened


async def wait_for_line(server: ServerProcess, pattern: str, seconds: float = 60) -> re.Match[str]:
    async with asyncio.timeout(seconds):
        while True:
            for line in server.output:
                if found := re.search(pattern, line):
                    return found
            await asyncio.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.mark.timeout(240)
async def test_workers_share_one_port_restart_when_killed_and_stop_on_sigterm(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url, 'shutdown_grace = "2s"\n')
    server = await start_server(config, args=["--workers", "2"])
    try:
        assert "(2 workers)" in server.output[-1]
        port = server.port
        first = worker_pids(server)
        assert sorted(first) == [1, 2]
        # Migrated once, by the parent, before the workers started.
        log = "".join(server.output)
        assert log.count("applied schema revision 0001_baseline") == 1
        assert log.index("applied schema revision") < log.index("worker 1 started")

        channels = await check_through(port, 16)
        served = {number: connections_served_by(pid, port) for number, pid in first.items()}
        for channel in channels:
            await channel.close(None)
        # The kernel spreads connections over both (all 16 on one: a chance of 2 in 65,536).
        assert sum(served.values()) == 16, served
        assert all(count > 0 for count in served.values()), served

        os.kill(first[1], signal.SIGKILL)
        found = await wait_for_line(
            server, r"worker 1 \(pid (\d+)\) was killed by signal SIGKILL; restarting it in"
        )
        assert int(found.group(1)) == first[1]
        restarted = await wait_for_line(server, rf"worker 1 started \(pid (?!{first[1]}\))(\d+)")
        new_pid = restarted.group(1)
        again = await wait_for_line(server, rf"worker 1 \(pid {new_pid}\) serving on port")
        assert again.string.rstrip().endswith(f"serving on port {port}")
        second = worker_pids(server)
        assert second == {1: int(restarted.group(1)), 2: first[2]}
        channels = await check_through(port, 16)
        served = {number: connections_served_by(pid, port) for number, pid in second.items()}
        for channel in channels:
            await channel.close(None)
        assert all(count > 0 for count in served.values()), served

        server.terminate()
        assert await server.wait(60) == 0, "".join(server.output)
    finally:
        if server.process.returncode is None:
            server.kill()
            await server.wait()
    assert "shutting down (SIGTERM)" in "".join(server.output)
    for pid in (*first.values(), *second.values()):
        assert gone(pid), pid


@pytest.mark.timeout(180)
async def test_sigint_to_the_parent_stops_every_worker_and_exits_0(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url, 'workers = 2\nshutdown_grace = "1s"\n')
    server = await start_server(config)
    try:
        pids = worker_pids(server)
        assert len(pids) == 2
        server.process.send_signal(signal.SIGINT)
        assert await server.wait(60) == 0, "".join(server.output)
    finally:
        if server.process.returncode is None:
            server.kill()
            await server.wait()
    assert all(gone(pid) for pid in pids.values())
    assert "".join(server.output).count("INFO journey: stopped") == 3
