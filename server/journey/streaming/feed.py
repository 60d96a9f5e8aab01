"""The broker's one input: committed events in position order, whoever committed them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from journey.domain.model import EncodedEvent, SystemEvent
from journey.storage.listen import Listen, Listening
from journey.streaming.broker import Broker

log = logging.getLogger(__name__)

# Events read from storage per query when catching up.
PAGE = 1000
# A notification can be missed (a connection that dies silently): storage is read this often
# all the same, so no event waits longer than this for its subscribers.
POLL_SECONDS = 1.0
# Waits between attempts to listen again, or to read again after a failed read.
MIN_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 1.0


class CommittedLog(Protocol):
    """The stored log (storage.queries.Queries in the server)."""

    async def committed_after(
        self, after: int, limit: int
    ) -> list[tuple[SystemEvent, EncodedEvent]]:
        """Up to `limit` events after `after` in position order, each also as it is sent."""
        ...


class Feed:
    """Publishes every committed event into the broker once, in position order, without gaps.

    With one process writing (SQLite) its commits are all there is, and each follows the
    broker's head. With several (PostgreSQL), the others' commits are read from storage: on
    each notification of a commit (storage.listen), on a slow poll in case one was missed,
    and after listening again, since whatever was notified meanwhile is lost. Positions are
    visible in commit order, so what is read after the head is the next events, complete.
    This process's own commits go straight to the broker when they follow its head;
    otherwise storage has what came between, and the read fills it in.
    """

    def __init__(
        self,
        broker: Broker,
        log: CommittedLog,
        listen: Listen | None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._broker = broker
        self._log = log
        self._listen = listen
        self._poll_seconds = poll_seconds
        # The highest position known to be committed, from notifications and own commits.
        self._known = 0
        # Read storage at the next wake even if nothing newer is known (a poll).
        self._poll_due = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def committed(self, events: Sequence[SystemEvent], encoded: Sequence[EncodedEvent]) -> None:
        """Take one of this process's commits (the writer's on_commit)."""
        if not events:
            return
        head = self._broker.head
        first, last = events[0].position, events[-1].position
        if first == head + 1 or self._listen is None:
            # With no other writer the broker checks (and reports) any gap itself.
            self._broker.publish(events, encoded)
        elif last <= head:
            return  # already read from storage
        elif first <= head:
            fresh = [i for i, e in enumerate(events) if e.position > head]
            self._broker.publish([events[i] for i in fresh], [encoded[i] for i in fresh])
        else:
            self.notified(last)

    def notified(self, position: int) -> None:
        """Everything up to `position` is committed: read what the broker has not seen."""
        if position > self._broker.head:
            self._known = max(self._known, position)
            self._wake.set()

    def poll(self) -> None:
        """Read storage after the head at once, whatever is known."""
        self._poll_due = True
        self._wake.set()

    def start(self) -> None:
        """Listen for other processes' commits and read them (PostgreSQL); else nothing."""
        if self._listen is None:
            return
        self._tasks = [
            asyncio.create_task(self._catch_up_loop(), name="journey-feed-read"),
            asyncio.create_task(self._listen_loop(self._listen), name="journey-feed-listen"),
        ]

    async def stop(self) -> None:
        """Stop listening and reading."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []

    async def catch_up(self) -> None:
        """Publish everything committed after the broker's head, a page at a time."""
        while True:
            page = await self._log.committed_after(self._broker.head, PAGE)
            # The head may have moved while the page was read: own commits.
            head = self._broker.head
            fresh = [(e, c) for e, c in page if e.position > head]
            if fresh:
                self._broker.publish([e for e, _ in fresh], [c for _, c in fresh])
            if len(page) < PAGE:
                return

    async def _catch_up_loop(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._poll_due and self._known <= self._broker.head:
                continue  # what was notified has been published meanwhile (own commits)
            self._poll_due = False
            try:
                await self.catch_up()
                failures = 0
            except Exception as error:
                # The database is down or restarting: read again soon, for as long as it takes.
                failures += 1
                if failures == 1:
                    log.warning("reading new commits failed, retrying: %r", error)
                await asyncio.sleep(_backoff(failures))
                self.poll()

    async def _listen_loop(self, listen: Listen) -> None:
        failures = 0
        while True:
            lost = asyncio.Event()
            try:
                connection = await listen(self.notified, lost.set)
            except Exception as error:
                failures += 1
                if failures == 1:
                    log.warning("cannot listen for commits, retrying: %r", error)
                self.poll()
                await asyncio.sleep(_backoff(failures))
                continue
            if failures:
                log.info("listening for commits again")
            failures = 0
            try:
                await self._hear(connection, lost)
            finally:
                connection.terminate()
            log.warning("lost the connection listening for commits; listening again")

    async def _hear(self, connection: Listening, lost: asyncio.Event) -> None:
        # Whatever was committed before LISTEN took effect was never notified.
        self.poll()
        while not lost.is_set() and not connection.is_closed():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await lost.wait()
            self.poll()


def _backoff(failures: int) -> float:
    return float(min(MIN_BACKOFF_SECONDS * 2 ** min(failures - 1, 10), MAX_BACKOFF_SECONDS))
