"""`journey serve --workers N`: the parent that starts, restarts and stops the worker processes.

Each worker is a full Journey server (app.create_server) on the same address with
SO_REUSEPORT on, so the kernel spreads connections over them. gRPC must not exist in a
process that forks, so workers are started with the `spawn` method: each is a fresh
interpreter that creates its own server. The parent never creates a gRPC object.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger("journey.workers")

# A worker that dies is started again after a delay that doubles with each death in a row,
# so a crash loop does not spin; one that lived STABLE seconds starts the count afresh.
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
STABLE = 60.0
# After the shutdown grace, how long workers get to exit before they are killed.
EXIT_MARGIN = 10.0
_PR_SET_PDEATHSIG = 1


class WorkersError(Exception):
    """The workers cannot start; `exit_code` is what `journey serve` exits with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# The worker's entry point: (worker number, concrete listen address, ready pipe) -> None. It
# must be a module-level function, since `spawn` sends it to the child by name.
Target = Callable[[int, str, Connection], None]


class PortReservation:
    """The port the workers share, held by the parent for as long as it runs.

    The parent binds the address itself with SO_REUSEPORT (bound, never listening, so the
    kernel sends it no connections): with port 0 this chooses the one concrete port that every
    worker, and every restarted worker, then binds; and while the parent lives no other
    server can take the port from a worker being restarted. A lock named after the port (an
    abstract Unix socket, gone with the process) keeps a second `journey serve --workers`
    from joining the group, which SO_REUSEPORT alone would allow.
    """

    def __init__(self, listen: str) -> None:
        host, _, port_text = listen.rpartition(":")
        self.host = host
        bare = host.strip("[]")
        family = socket.AF_INET6 if ":" in bare else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                self._socket.bind((bare, int(port_text)))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise WorkersError(f"cannot listen on {listen}: address in use", 2) from None
                raise WorkersError(f"cannot listen on {listen}: {error.strerror}") from None
            self.port: int = self._socket.getsockname()[1]
            try:
                self._lock.bind(f"\0journey-workers-port-{self.port}")
            except OSError:
                raise WorkersError(
                    f"cannot listen on {listen}: address in use (by another journey serve "
                    "--workers)",
                    2,
                ) from None
        except BaseException:
            self.close()
            raise

    @property
    def listen(self) -> str:
        """The address every worker binds: the configured host and the concrete port."""
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        """Let the port go."""
        self._socket.close()
        self._lock.close()


@dataclass
class _Slot:
    """One worker position: the process in it now, and its restart history."""

    number: int
    process: BaseProcess | None = None
    ready: Connection | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    serving: bool = False


class Supervisor:
    """Starts `count` workers, restarts any that dies, and stops them all on SIGTERM or SIGINT."""

    def __init__(self, count: int, target: Target, listen: str, grace: float) -> None:
        self.count = count
        self.target = target
        self.listen = listen
        self.grace = grace
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(number) for number in range(1, count + 1)]
        self._signal: int | None = None

    def run(self) -> int:
        """Supervise until a signal (exit code 0) or a worker fails at the first start."""
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        previous_fd = signal.set_wakeup_fd(wake_write)
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        try:
            for slot in self._slots:
                self._start(slot)
            return self._supervise(wake_read)
        finally:
            self._stop_all()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_read)
            os.close(wake_write)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signal = signum

    def _stopping(self) -> bool:
        # A method, not the attribute: the signal handler changes it between any two lines.
        return self._signal is not None

    def _start(self, slot: _Slot) -> None:
        ready, ready_in_child = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=self.target,
            args=(slot.number, self.listen, ready_in_child),
            name=f"journey-worker-{slot.number}",
        )
        process.start()
        ready_in_child.close()
        slot.process, slot.ready, slot.started = process, ready, time.monotonic()
        slot.restart_at, slot.serving = None, False
        log.info("worker %d started (pid %d)", slot.number, process.pid)

    def _supervise(self, wake: int) -> int:
        announced = False
        while not self._stopping():
            readable = wait(self._waitables(wake), self._until_next_restart())
            if wake in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake, 512)
            for slot in self._slots:
                if slot.ready is not None and slot.ready in readable:
                    self._read_ready(slot)
                if slot.process is not None and slot.process.sentinel in readable:
                    pid, code = self._reap(slot)
                    if self._stopping():
                        break
                    if not announced:
                        # A worker that cannot start will not start on a retry either.
                        how = _how(code)
                        log.error("worker %d (pid %s) %s while starting", slot.number, pid, how)
                        return code if code is not None and code > 0 else 1
                    self._schedule_restart(slot, pid, code)
            now = time.monotonic()
            for slot in self._slots:
                if slot.restart_at is not None and slot.restart_at <= now and not self._stopping():
                    self._start(slot)
            if not announced and all(slot.serving for slot in self._slots):
                announced = True
                port = self.listen.rpartition(":")[2]
                log.info("listening on port %s (%d workers)", port, self.count)
        assert self._signal is not None
        log.info("shutting down (%s)", signal.Signals(self._signal).name)
        return 0

    def _waitables(self, wake: int) -> list[Any]:
        waitables: list[Any] = [wake]
        for slot in self._slots:
            if slot.process is not None:
                waitables.append(slot.process.sentinel)
            if slot.ready is not None:
                waitables.append(slot.ready)
        return waitables

    def _until_next_restart(self) -> float | None:
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _reap(self, slot: _Slot) -> tuple[int | None, int | None]:
        """Collect a worker that ended: its pid and exit code."""
        assert slot.process is not None
        slot.process.join()
        pid, code = slot.process.pid, slot.process.exitcode
        slot.process = None
        if slot.ready is not None:
            slot.ready.close()
            slot.ready = None
        return pid, code

    def _read_ready(self, slot: _Slot) -> None:
        assert slot.ready is not None
        try:
            slot.ready.recv()
            slot.serving = True
        except (EOFError, OSError):
            pass
        slot.ready.close()
        slot.ready = None

    def _schedule_restart(self, slot: _Slot, pid: int | None, code: int | None) -> None:
        if time.monotonic() - slot.started >= STABLE:
            slot.failures = 0
        delay = min(FIRST_DELAY * 2**slot.failures, MAX_DELAY)
        slot.failures += 1
        slot.restart_at = time.monotonic() + delay
        log.warning(
            "worker %d (pid %s) %s; restarting it in %.1f s", slot.number, pid, _how(code), delay
        )

    def _stop_all(self) -> None:
        live = [s.process for s in self._slots if s.process is not None]
        for process in live:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace + EXIT_MARGIN
        for process in live:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.warning("worker (pid %s) did not stop in time: killing it", process.pid)
                process.kill()
                process.join()
        for slot in self._slots:
            slot.process = None
            if slot.ready is not None:
                slot.ready.close()
                slot.ready = None


def _how(code: int | None) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code is None:
        return "ended"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by signal {name}"
    return f"exited with code {code}"


def die_with_parent() -> None:
    """In a worker: be sent SIGTERM if the parent dies, so no worker outlives a killed parent."""
    parent = multiprocessing.parent_process()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before the call above took effect.
    if parent is not None and os.getppid() != parent.pid:
        os.kill(os.getpid(), signal.SIGTERM)


def metrics_listen_for(address: str, number: int) -> str:
    """Where worker `number` (from 1) serves /metrics: the configured port plus number - 1.

    Each process counts only its own calls, so each needs an address Prometheus can scrape on
    its own; port 0 (any free port, logged by each worker) and "" (off) stay as they are.
    """
    if not address:
        return address
    host, _, port = address.rpartition(":")
    if int(port) == 0:
        return address
    return f"{host}:{int(port) + number - 1}"
