"""Sweeper.stop(): a sweep under way finishes instead of being cancelled mid-query."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import cast

from journey.clock import SystemClock
from journey.config import Settings
from journey.domain.policy import Policy
from journey.journal import Journal
from journey.storage.queries import Queries
from journey.sweeper import Sweeper


class BlockedReads:
    """Queries whose reads wait until released (a poll's first read is next_deadline)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = 0

    async def due_sessions(self, now: datetime, policy: Policy, limit: int) -> list[str]:
        await self._read()
        return []

    async def next_deadline(self, policy: Policy) -> datetime | None:
        await self._read()
        return None

    async def _read(self) -> None:
        self.started.set()
        await self.release.wait()
        self.finished += 1


def sweeper_over(reads: BlockedReads) -> Sweeper:
    # The journal is never reached: no session is due.
    journal = cast(Journal, None)
    return Sweeper(journal, cast(Queries, reads), Settings().policy(), SystemClock())


async def test_stop_waits_for_the_sweep_under_way() -> None:
    reads = BlockedReads()
    sweeper = sweeper_over(reads)
    sweeper.start()
    await reads.started.wait()
    stopping = asyncio.create_task(sweeper.stop())
    # One turn of the loop: stop() has decided, cancelling or waiting, before the read ends.
    await asyncio.sleep(0)
    reads.release.set()
    await stopping
    # A cancelled read would never have counted itself finished.
    assert reads.finished == 1
