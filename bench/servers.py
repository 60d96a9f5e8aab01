"""Start and stop the servers under test as subprocesses: `journey serve` and the baseline."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STARTUP_SECONDS = 60.0
PORT_LINE = re.compile(rb"listening on port (\d+)")
METRICS_LINE = re.compile(rb"metrics on http://\S+:(\d+)/metrics")


@dataclass(frozen=True)
class Running:
    """A server process and the port it bound."""

    pid: int
    port: int
    # Where Journey serves /metrics, when it does.
    metrics_port: int | None = None

    @property
    def target(self) -> str:
        """The address a client dials."""
        return f"127.0.0.1:{self.port}"


def rss_mb(pid: int) -> float:
    """The resident memory of a process and all its descendants (workers), in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            own = int(line.split()[1]) / 1024
            return own + sum(rss_mb(child) for child in children(pid))
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system, all threads) a process has used so far (from /proc)."""
    # The command name, field 2, may hold spaces: count fields after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux's /proc/PID/task/TID/children, every thread's)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue  # the thread has ended
    return found


@contextmanager
def _process(
    argv: Sequence[str], workdir: Path, env: Mapping[str, str], name: str
) -> Iterator[Running]:
    """Run `argv`, wait for its "listening on port N" line on stderr, stop it afterwards."""
    log_path = workdir / f"{name}.log"
    # Journey rejects any JOURNEY_* variable it does not know, and the benchmark's own
    # settings (JOURNEY_BENCH_*) are none of its business.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEY_BENCH_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv), cwd=workdir, env={**inherited, **env}, stdout=log, stderr=log
        )
    try:
        port = _wait_for_port(process, log_path)
        # Logged before the gRPC port, so it is there by now if at all.
        metrics = METRICS_LINE.search(log_path.read_bytes())
        yield Running(process.pid, port, int(metrics.group(1)) if metrics else None)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_port(process: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        match = PORT_LINE.search(log_path.read_bytes())
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{log_path.stem} did not start (exit {process.poll()}):\n{tail}")


def _toml(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


@contextmanager
def journey(
    workdir: Path,
    database_url: str,
    config: Mapping[str, object],
    *,
    checkout: Path | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "journey",
) -> Iterator[Running]:
    """`journey serve` on a free port and the database at `database_url` (SQLAlchemy URL).

    `checkout` runs the server code of another working tree (for before/after comparisons);
    `env` adds JOURNEY_* overrides.
    """
    settings = {
        "listen": "127.0.0.1:0",
        "database_url": database_url,
        # INFO logs the bound port and failed calls only (DEBUG would log every call).
        "log_level": "INFO",
        **config,
    }
    config_path = workdir / f"{name}.toml"
    config_path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in settings.items()))
    extra = dict(env or {})
    if checkout is not None:
        # Ahead of the editable install of this checkout on sys.path.
        paths = [str(checkout / "server"), str(checkout / "clients" / "python")]
        extra["PYTHONPATH"] = os.pathsep.join(paths)
    # journey.cli rather than the `journey` script, so that PYTHONPATH picks the code.
    argv = [sys.executable, "-m", "journey.cli", "serve", "--config", str(config_path)]
    with _process(argv, workdir, extra, name) as running:
        yield running


@contextmanager
def baseline(workdir: Path, replay_events: int = 0) -> Iterator[Running]:
    """The storage-free baseline on a free port."""
    argv = [sys.executable, "-m", "bench.baseline", "--replay-events", str(replay_events)]
    root = Path(__file__).resolve().parent.parent
    with _process(argv, workdir, {"PYTHONPATH": str(root)}, "baseline") as running:
        yield running
