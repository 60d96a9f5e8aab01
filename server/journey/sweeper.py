"""The sweeper: ends visits and closes sessions when their timeouts run out, clients or not."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from journey.clock import Clock
from journey.domain.errors import Unavailable
from journey.domain.model import NO_TRACE_CONTEXT, SystemEvent
from journey.domain.policy import Policy
from journey.journal import Journal
from journey.storage.failures import FAILURES
from journey.storage.queries import Queries

log = logging.getLogger(__name__)

# Sessions expired per transaction: each costs a few statements and a commit whatever its
# size, so 50,000 visits ending at once take ten commits, not a hundred.
BATCH = 5000
# A storage failure, seen directly or as the writer's Unavailable: logged in one line.
RETRYABLE: tuple[type[BaseException], ...] = (*FAILURES, Unavailable)
# Sessions opened while the sweeper sleeps may time out sooner than the deadline it
# slept toward; waking at least this often keeps every timeout within a second.
MAX_IDLE_SECONDS = 0.5
# Told of each expiry's committed events and the time it committed (for metrics).
OnExpired = Callable[[Sequence[SystemEvent], datetime], None]
# How long stop() lets a sweep under way finish before cancelling it.
STOP_GRACE_SECONDS = 2.0


class SweepSpan(Protocol):
    """A traced sweep: the trace context its events carry; told how many it emitted."""

    trace_context: Mapping[str, str]

    def emitted(self, count: int) -> None:
        """Count events the sweep committed."""


class _Untraced:
    trace_context = NO_TRACE_CONTEXT

    def emitted(self, count: int) -> None:
        """Nothing to count."""


# Opens a span around one sweep that has work; None: sweeps are not traced.
TraceSweep = Callable[[], AbstractContextManager[SweepSpan]]


class Sweeper:
    """Finds due sessions through the (state, last_activity_time) index and expires them.

    With several processes on one PostgreSQL database every one of them sweeps: the expiry
    runs in the writer's unit of work, which reads each session again under the lock that
    serializes every process's commits, so a session another process has just expired (or a
    call has just ended or renewed) is left alone. No leader to elect, and none to lose: when
    a process dies, the others' next sweep (within MAX_IDLE_SECONDS) ends what is due.
    """

    def __init__(
        self,
        journal: Journal,
        queries: Queries,
        policy: Policy,
        clock: Clock,
        on_expired: OnExpired | None = None,
        trace_sweep: TraceSweep | None = None,
    ) -> None:
        self._journal = journal
        self._on_expired = on_expired
        self._trace_sweep = trace_sweep
        self._queries = queries
        self._policy = policy
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sweeping = False

    def start(self) -> None:
        """Start sweeping in the background."""
        self._task = asyncio.create_task(self._run(), name="journey-sweeper")

    async def stop(self) -> None:
        """Stop sweeping: let a sweep under way finish (within a bound), then end the task."""
        if self._task is None:
            return
        self._stopping = True
        if self._sweeping:
            # Cancelled mid-query, a read can leave its connection outside the pool, where
            # closing the database does not reach it; a sweep takes milliseconds unless the
            # database is down, and then it is not worth waiting for.
            await asyncio.wait([self._task], timeout=STOP_GRACE_SECONDS)
        self._task.cancel()
        # wait() does not raise the task's CancelledError, yet still lets our own through.
        await asyncio.wait([self._task])

    async def sweep_once(self) -> int:
        """Expire every session that is due now; returns how many were examined.

        Traced, a sweep that finds sessions due is one span, the root of its own trace, and
        the events it emits carry its context; a sweep that finds nothing leaves no trace.
        """
        due = await self._queries.due_sessions(self._clock.now(), self._policy, BATCH)
        if not due:
            return 0
        total = 0
        traced = self._trace_sweep() if self._trace_sweep else contextlib.nullcontext(_Untraced())
        with traced as span:
            while due:
                events = await self._journal.expire(due, span.trace_context)
                span.emitted(len(events))
                if self._on_expired is not None and events:
                    self._on_expired(events, self._clock.now())
                total += len(due)
                due = await self._queries.due_sessions(self._clock.now(), self._policy, BATCH)
        return total

    async def _run(self) -> None:
        while True:
            self._sweeping = True
            try:
                # The earliest deadline first: a sweep's queries find sessions due exactly
                # when it has passed, so a poll that finds nothing due costs two queries,
                # not four (the sweeper polls twice a second under any load).
                deadline = await self._queries.next_deadline(self._policy)
                if deadline is not None and deadline <= self._clock.now():
                    await self.sweep_once()
                    deadline = await self._queries.next_deadline(self._policy)
            except RETRYABLE as error:
                # A database that is down must not end timeouts for good: try again soon.
                log.warning("sweep failed, retrying: %r", error)
                deadline = None
            except Exception:
                log.exception("sweep failed")
                deadline = None
            finally:
                self._sweeping = False
            if self._stopping:
                return
            wait = MAX_IDLE_SECONDS
            if deadline is not None:
                wait = min(wait, (deadline - self._clock.now()).total_seconds())
            await self._clock.sleep(max(wait, 0.0))
