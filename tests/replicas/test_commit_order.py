"""Two replicas commit at once for a minute: positions contiguous, commit order = position order.

The same checker, run with the test-only switch that numbers positions from a sequence
outside the lock (the skipped-position bug of event stores on SQL), must find violations:
that shows it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from journey.storage.writer import UNSAFE_POSITIONS_ENV
from journey_client import pb
from tests.faults.load import SOURCE, Subscriber, all_events
from tests.faults.process import CLEAN_ENV, Stubs, write_config
from tests.replicas.cluster import replicas, stop, wiped_postgres

pytestmark = pytest.mark.slow

REPLICAS, WRITERS_PER_REPLICA = 2, 3
MAX_EVENTS_PER_CALL, MAX_PAUSE_SECONDS = 30, 0.03


@dataclass
class Checker:
    """What a reader of the table and each subscriber saw that breaks commit order."""

    violations: list[str] = field(default_factory=list)
    # Positions the table reader saw visible, contiguous from 1.
    watermark: int = 0

    async def read_table(self, database_url: str, stopping: asyncio.Event) -> None:
        """Poll the rows after the watermark: a hole means p+1 committed before p."""
        engine = create_async_engine(database_url)
        query = text("SELECT position FROM system_events WHERE position > :w ORDER BY position")
        try:
            async with engine.connect() as connection:
                while not stopping.is_set():
                    found = (await connection.execute(query, {"w": self.watermark})).scalars()
                    for position in found:
                        if position != self.watermark + 1:
                            hole = f"table: {position} visible while {self.watermark + 1} is not"
                            if hole not in self.violations[-1:]:
                                self.violations.append(hole)
                            break
                        self.watermark = position
                    await connection.commit()  # a fresh snapshot for the next poll
                    await asyncio.sleep(0.002)
        finally:
            await engine.dispose()

    def check_subscriber(self, name: str, subscriber: Subscriber, log: list[int]) -> None:
        """Every position once, in order, with none skipped: exactly the log."""
        seen = [e.position for e in subscriber.events]
        for before, after in itertools.pairwise(seen):
            if after != before + 1:
                self.violations.append(f"{name}: {after} after {before}")
                break
        if seen != log:
            self.violations.append(f"{name}: got {len(seen)} events, the log has {len(log)}")


async def write_randomly(stubs: Stubs, name: str, until: float, rng: random.Random) -> int:
    """Track batches of random sizes with random pauses until `until`; how many calls."""
    calls = 0
    while time.monotonic() < until:
        size = rng.randint(1, MAX_EVENTS_PER_CALL)
        request = pb.TrackRequest(
            source_id=SOURCE,
            session_id=f"{name}-{calls}",
            events=[pb.TrackedEvent(type="page-view") for _ in range(size)],
        )
        await stubs.tracker.Track(request, timeout=20)
        calls += 1
        await asyncio.sleep(rng.uniform(0, MAX_PAUSE_SECONDS))
    return calls


async def run_checked(tmp_path: Path, seconds: float, env: dict[str, str]) -> Checker:
    """Replicas under random concurrent load for `seconds`, watched by the checker."""
    database_url = await wiped_postgres()
    config = write_config(tmp_path, database_url)
    checker = Checker()
    subscribers = [Subscriber(max_batch_size=1000) for _ in range(REPLICAS)]
    rng = random.Random(12)
    async with replicas(config, REPLICAS, env) as (_, stubs):
        following = [asyncio.create_task(s.follow(stubs[i])) for i, s in enumerate(subscribers)]
        async with asyncio.timeout(20):
            await asyncio.gather(*(s.caught_up.wait() for s in subscribers))
        stopping = asyncio.Event()
        reading = asyncio.create_task(checker.read_table(database_url, stopping))
        until = time.monotonic() + seconds
        calls = await asyncio.gather(
            *(
                write_randomly(stubs[i % REPLICAS], f"w{i}", until, random.Random(rng.random()))
                for i in range(REPLICAS * WRITERS_PER_REPLICA)
            )
        )
        stopping.set()
        await reading
        log = [e.position for e in await all_events(stubs[0])]
        if log != list(range(1, len(log) + 1)):
            checker.violations.append("the log is not contiguous")
        # Give the subscribers time to receive the end of the load, whatever they do with it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while any(len(s.events) < len(log) for s in subscribers):
                    await asyncio.sleep(0.05)
        await stop(following)
    for i, subscriber in enumerate(subscribers):
        checker.check_subscriber(f"subscriber {i}", subscriber, log)
    print(f"{sum(calls)} calls, {len(log)} positions, {len(checker.violations)} violations")
    return checker


@pytest.mark.timeout(240)
async def test_positions_are_contiguous_and_in_commit_order_across_replicas(
    tmp_path: Path,
) -> None:
    checker = await run_checked(tmp_path, 60, CLEAN_ENV)
    assert checker.violations == []
    assert checker.watermark > 0


@pytest.mark.timeout(120)
async def test_the_checker_catches_positions_from_a_sequence(tmp_path: Path) -> None:
    checker = await run_checked(tmp_path, 10, {**CLEAN_ENV, UNSAFE_POSITIONS_ENV: "1"})
    print("\n".join(checker.violations[:10]))
    assert any(v.startswith("table:") for v in checker.violations)
