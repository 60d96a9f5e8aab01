"""The serving process's interpreter settings: set by `journey serve`, and what they set."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Iterator

import pytest

from journey import cli, runtime
from journey.config import Settings


@pytest.fixture
def restored() -> Iterator[None]:
    """Put this test process's interpreter settings back afterwards."""
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    yield
    sys.setswitchinterval(interval)
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_tune_sets_the_switch_interval_and_the_collector_thresholds(restored: None) -> None:
    sys.setswitchinterval(0.005)
    gc.set_threshold(700, 10, 10)
    runtime.tune()
    assert sys.getswitchinterval() == pytest.approx(runtime.GIL_SWITCH_INTERVAL_S)
    assert gc.get_threshold() == runtime.GC_THRESHOLDS
    # Fewer young collections, not none: cycles must still be collected.
    assert 700 < runtime.GC_THRESHOLDS[0] <= 100_000


def test_settle_heap_hides_what_is_alive_from_the_collector(restored: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    runtime.settle_heap()
    assert gc.get_freeze_count() > 0


def test_journey_serve_tunes_the_interpreter_before_it_serves(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[float, tuple[int, int, int]]] = []

    async def serve(settings: Settings) -> None:
        seen.append((sys.getswitchinterval(), gc.get_threshold()))

    monkeypatch.setattr(cli, "serve", serve)
    monkeypatch.setattr(cli, "_log_to_stderr", lambda settings: str)
    sys.setswitchinterval(0.005)
    gc.set_threshold(700, 10, 10)
    assert cli.run_serve(argparse.Namespace(config=None, workers=None)) == 0
    ((interval, thresholds),) = seen
    assert interval == pytest.approx(runtime.GIL_SWITCH_INTERVAL_S)
    assert thresholds == runtime.GC_THRESHOLDS
