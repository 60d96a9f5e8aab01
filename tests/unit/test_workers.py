"""The workers' supervisor: how a dead worker's restart is delayed, and how its end is told."""

from __future__ import annotations

import pytest

from journey import workers
from journey.workers import Supervisor, _Slot


def noop(number: int, listen: str, ready: object) -> None:
    """Never started here."""


def test_a_worker_that_keeps_dying_is_restarted_ever_later_up_to_a_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 1000.0
    monkeypatch.setattr("journey.workers.time.monotonic", lambda: now)
    supervisor = Supervisor(1, noop, "127.0.0.1:1", 1.0)
    slot = _Slot(1, started=now)
    delays = []
    for _ in range(9):
        supervisor._schedule_restart(slot, 123, 1)
        assert slot.restart_at is not None
        delays.append(slot.restart_at - now)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    # One that served for a while before dying starts the count afresh.
    slot.started = now - workers.STABLE
    supervisor._schedule_restart(slot, 123, -9)
    assert slot.restart_at == now + 0.5


@pytest.mark.parametrize(
    ("code", "told"),
    [
        (-9, "was killed by signal SIGKILL"),
        (-15, "was killed by signal SIGTERM"),
        (1, "exited with code 1"),
        (0, "exited with code 0"),
        (None, "ended"),
    ],
)
def test_how_a_worker_ended_is_told_by_code_or_signal(code: int | None, told: str) -> None:
    assert workers._how(code) == told


@pytest.mark.parametrize(
    ("configured", "number", "expected"),
    [
        ("127.0.0.1:9464", 1, "127.0.0.1:9464"),
        ("127.0.0.1:9464", 3, "127.0.0.1:9466"),
        ("[::1]:9464", 2, "[::1]:9465"),
        ("127.0.0.1:0", 2, "127.0.0.1:0"),
        ("", 2, ""),
    ],
)
def test_each_worker_serves_its_metrics_on_a_port_of_its_own(
    configured: str, number: int, expected: str
) -> None:
    assert workers.metrics_listen_for(configured, number) == expected
