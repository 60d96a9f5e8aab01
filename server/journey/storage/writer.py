"""The writer: runs units of work in group commits and assigns positions in commit order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from journey.domain.errors import JourneyError, Unavailable
from journey.domain.model import Encode, EncodedEvent, Profile, Session, SystemEvent
from journey.storage.database import Database
from journey.storage.failures import FAILURES, OnFailure, failure_kind, is_outage, unavailable
from journey.storage.listen import CHANNEL
from journey.storage.row_cache import RowCache
from journey.storage.schema import SystemEventRow
from journey.storage.unit_of_work import Keys, UnitOfWork
from journey.storage.waiting_cache import INFO_KEY as WAITING_INFO_KEY
from journey.storage.waiting_cache import WaitingCache

log = logging.getLogger(__name__)

T = TypeVar("T")
# Synchronous: it may run on the writer's thread, so it must not touch the event loop.
Work = Callable[[UnitOfWork], T]
# Called with a commit's system events and the same events encoded.
OnCommit = Callable[[Sequence[SystemEvent], Sequence[EncodedEvent]], None]
# Told after each group commit (for metrics): how many calls it held, how many seconds its
# transaction took, its system events, and its tracked events counted by source id.
OnStats = Callable[[int, float, Sequence[SystemEvent], Mapping[str, int]], None]

MAX_BATCH = 256
NO_KEYS = Keys()

# On PostgreSQL every group commit of every process holds this transaction-level advisory lock
# from before its first read until its commit ("journey" in ASCII: any constant would do).
POSITIONS_LOCK = 29958897753023865
_LOCK = text(f"SELECT pg_advisory_xact_lock({POSITIONS_LOCK})")
_HEAD = select(func.max(SystemEventRow.position))
_NOTIFY = text("SELECT pg_notify(:channel, :head)")

# TEST ONLY, never in production: "1" makes PostgreSQL positions come from a sequence outside
# the lock, the skipped-position bug of event stores on SQL, so that the replica tests can
# show they catch it (tests/replicas/test_commit_order.py). Read here and nowhere else.
UNSAFE_POSITIONS_ENV = "TEST_JOURNEY_UNSAFE_SEQUENCE_POSITIONS"
_UNSAFE_SEQUENCE = "journey_test_unsafe_positions"
# In that mode, how long (at most) a transaction waits between its inserts and its commit:
# the window in which a later position can commit first, widened so the tests meet it.
_UNSAFE_DELAY_SECONDS = 0.02


class _Item(NamedTuple, Generic[T]):
    work: Work[T]
    keys: Keys
    future: asyncio.Future[T]


class Writer:
    """Every write of this process goes through here, one transaction at a time.

    Positions strictly increase in commit order, with no gap a reader could pass over. On
    SQLite one process writes (one writer, one transaction at a time), so the writer numbers
    the system events itself from the last position it committed. On PostgreSQL any number
    of processes write: each transaction first takes one advisory lock shared by all of them
    (POSITIONS_LOCK), then reads the head of the log and numbers after it, and the lock is
    released only once the commit is visible; so one transaction at a time, database-wide,
    assigns and commits positions, and every read a unit of work makes under the lock (a
    session, a profile, a client event id) sees what every earlier commit wrote. Each such
    commit sends its last position on storage.listen.CHANNEL, for the other processes.
    Calls that arrive while a transaction runs share the next one (group commit), so the
    cost of a commit, and of the lock, is paid once per batch, not once per call.

    A unit of work must do all its reads and raise any JourneyError before it stages its
    outcome; then a refused call leaves nothing behind and the others in its batch still commit.
    """

    def __init__(
        self,
        database: Database,
        on_commit: OnCommit,
        encode: Encode,
        queue_size: int = 1024,
        *,
        on_stats: OnStats | None = None,
        on_failure: OnFailure | None = None,
    ) -> None:
        self._database = database
        # Both None when metrics are off: then no commit is timed and nothing counted.
        self._on_stats = on_stats
        self._on_failure = on_failure
        # Each system event is encoded for its subscribers once, in the transaction that
        # stores it (on SQLite off the event loop).
        self._encode = encode
        # With a writer engine (SQLite) each group commit runs on this one thread in a single
        # hand-off; otherwise on the event loop through the async engine.
        self._thread: ThreadPoolExecutor | None = None
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Item[Any] | None] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._position = 0
        # Other processes may commit between two of ours (PostgreSQL): nothing read in one
        # transaction is trusted in the next.
        self._shared = database.engine.dialect.name == "postgresql"
        self._unsafe = self._shared and os.environ.get(UNSAFE_POSITIONS_ENV) == "1"
        # No other process writes SQLite (its lock file sees to that), so the sessions and
        # profiles this one committed are still the stored ones: a group commit takes them
        # from here rather than reading them back. Not so on PostgreSQL.
        self._cache = None if self._shared else RowCache()
        # Likewise the events its group rounds saw wait behind their keys (waiting_cache.py).
        self._waiting = None if self._shared else WaitingCache()
        # PostgreSQL: the writer's own connection between group commits (_on_held_connection),
        # and whether the current transaction has run a statement on it yet.
        self._held: AsyncConnection | None = None
        # SQLite: likewise, kept by (and only ever touched on) the writer's thread.
        self._thread_held: Connection | None = None
        self._statements_ran = False
        # After a failed transaction: the connection may have died during COMMIT, so whether
        # it committed is unknown; the next transaction reads the last position again.
        self._uncertain = False

    @property
    def last_position(self) -> int:
        """The last position this process committed or saw committed (0 when there is none)."""
        return self._position

    async def start(self) -> None:
        """Read the last position and start the writer task."""
        async with self._database.engine.connect() as connection:
            last = await connection.scalar(select(func.max(SystemEventRow.position)))
        self._position = int(last or 0)
        if self._unsafe:
            log.warning("%s=1: positions are NOT in commit order (test only)", UNSAFE_POSITIONS_ENV)
            async with self._database.engine.begin() as connection:
                await connection.execute(text(f"CREATE SEQUENCE IF NOT EXISTS {_UNSAFE_SEQUENCE}"))
                await connection.execute(
                    text(f"SELECT setval('{_UNSAFE_SEQUENCE}', :last + 1, false)"),
                    {"last": self._position},
                )
        if self._database.writer_engine is not None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="journey-writer")
        self._task = asyncio.create_task(self._run(), name="journey-writer")

    async def submit(self, work: Work[T], keys: Keys = NO_KEYS) -> T:
        """Run `work` in the next group commit and return its result once committed.

        `keys` names the rows `work` will read, so the batch loads them together.
        """
        if self._closing or self._task is None or self._task.done():
            raise Unavailable("the server is shutting down")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        item = _Item(work, keys, future)
        await self._queue.put(item)
        return await future

    async def close(self) -> None:
        """Commit what was submitted, then stop; later submissions get UNAVAILABLE."""
        self._closing = True
        if self._task is None:
            return
        await self._queue.put(None)
        try:
            await self._task
        finally:
            if self._held is not None:
                held, self._held = self._held, None
                with contextlib.suppress(Exception):
                    await held.close()
            if self._thread is not None:
                await self.let_go()
                # Off the loop: it waits for a transaction still running, if any.
                await asyncio.to_thread(self._thread.shutdown)

    async def let_go(self) -> None:
        """Close the connection kept between group commits (SQLite); the next opens another.

        Database.close() closes only the connections in its pools: whoever needs the file to
        itself for a while (a test that locks it) calls this too.
        """
        if self._thread is not None:
            loop = asyncio.get_running_loop()
            # On the writer's thread, after any transaction running there.
            await loop.run_in_executor(self._thread, self._release_thread_connection)

    async def _run(self) -> None:
        pending: list[_Item[Any]] = []
        try:
            while True:
                first = await self._queue.get()
                if first is None:
                    return
                pending = [first]
                stop = False
                while len(pending) < MAX_BATCH and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is None:
                        stop = True
                        break
                    pending.append(item)
                await self._commit(pending)
                pending = []
                if stop:
                    return
        finally:
            # Whatever way the task ends, no caller may wait forever.
            leftovers = pending + [i for i in _drain(self._queue) if i is not None]
            for item in leftovers:
                if not item.future.done():
                    item.future.set_exception(Unavailable("the server is shutting down"))

    async def _commit(self, batch: list[_Item[Any]]) -> None:
        failure = await self._attempt(batch)
        if failure is None or len(batch) == 1:
            return
        if is_outage(failure):
            # The database is down, locked or full: every call would fail the same way, one
            # connect or lock timeout each. Fail them all now; each is retryable.
            for item in batch:
                _settle(item, None, unavailable(failure))
            return
        # One bad call must not sink the others: retry each on its own.
        for item in batch:
            await self._attempt([item])

    async def _attempt(self, batch: list[_Item[Any]]) -> BaseException | None:
        """Run the batch in one transaction; None if it committed, else what failed it."""
        started = time.perf_counter() if self._on_stats is not None else 0.0
        try:
            if self._thread is not None:
                loop = asyncio.get_running_loop()
                done = await loop.run_in_executor(self._thread, self._in_thread, batch)
            else:
                done = await self._on_held_connection(batch)
        except asyncio.CancelledError:
            # The thread may still commit: whether it did is unknown.
            self._uncertain = True
            self._forget_rows()
            raise
        except Exception as failed:
            # It may have failed in COMMIT, having committed or not.
            self._forget_rows()
            storage_failed = isinstance(failed, FAILURES)
            if storage_failed and self._on_failure is not None:
                self._on_failure(failure_kind(failed))
            self._uncertain = self._uncertain or storage_failed
            if len(batch) == 1:
                log.warning("commit failed: %r", failed)
                _settle(batch[0], None, unavailable(failed) if storage_failed else failed)
            return failed
        self._position = done.last_position
        self._uncertain = False
        try:
            if done.appended:
                self._on_commit(done.appended, done.encoded)
            if self._on_stats is not None:
                seconds = time.perf_counter() - started
                self._on_stats(len(batch), seconds, done.appended, done.tracked)
        except Exception:
            # The commit stands and its callers must hear so; a bug in publishing must not
            # stop every later write as well.
            log.exception("publishing up to position %d failed", done.last_position)
        for item, result, refusal in done.results:
            _settle(item, result, refusal)
        return None

    async def _on_held_connection(self, batch: list[_Item[Any]]) -> _Committed:
        """The transaction on the writer's own connection (PostgreSQL), kept between batches.

        A checkout from the pool per group commit cost a round trip (the pool's pre-ping)
        and the pool's bookkeeping, all while the event loop served other calls in between.
        After any failure the connection is dropped and the next batch opens another; if the
        kept connection turns out to be dead before the transaction did anything (no
        statement ran: a database restart or pg_terminate_backend while idle), the batch is
        run once more on a new connection, as the pool's pre-ping would have done.
        """
        for attempt in range(2):
            connection = self._held
            fresh = connection is None
            if connection is None:
                connection = self._held = await self._database.engine.connect()
            self._statements_ran = False
            try:
                async with connection.begin():
                    return await connection.run_sync(self._transaction, batch)
            except BaseException as failed:
                self._held = None
                with contextlib.suppress(Exception):
                    await connection.invalidate()
                retry = (
                    attempt == 0
                    and not fresh
                    and not self._statements_ran
                    and isinstance(failed, DBAPIError)
                    and failed.connection_invalidated
                )
                if not retry:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _forget_rows(self) -> None:
        if self._cache is not None:
            self._cache.clear()
        if self._waiting is not None:
            self._waiting.clear()

    def _in_thread(self, batch: list[_Item[Any]]) -> _Committed:
        # The connection stays checked out between group commits: checking it in and out of
        # the pool cost each one a rollback (the pool's reset) and the pool's bookkeeping,
        # all holding the GIL the event loop needs. After a failure the next one starts anew.
        connection = self._thread_held
        if connection is None:
            assert self._database.writer_engine is not None
            connection = self._thread_held = self._database.writer_engine.connect()
            connection.info[WAITING_INFO_KEY] = self._waiting
        try:
            with connection.begin():
                done = self._transaction(connection, batch)
        except BaseException:
            self._release_thread_connection()
            raise
        # Committed: from now on these rows are the stored ones.
        if self._cache is not None:
            self._cache.remember(done.sessions, done.profiles)
        return done

    def _release_thread_connection(self) -> None:
        connection, self._thread_held = self._thread_held, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def _transaction(self, connection: Connection, batch: list[_Item[Any]]) -> _Committed:
        """The batch's reads, rules and writes, inside `connection`'s transaction.

        It runs off the event loop on SQLite, so it reads the writer's state but never changes
        it, and leaves the items' futures alone; _attempt applies the outcome once committed.
        """
        last = self._position
        if self._shared:
            if not self._unsafe:
                # Before anything is read: see the class's docstring.
                connection.execute(_LOCK)
            self._statements_ran = True
            # A new statement, so a new snapshot (READ COMMITTED), taken once the lock is ours.
            last = int(connection.scalar(_HEAD) or 0)
        elif self._uncertain:
            last = int(connection.scalar(_HEAD) or 0)
        allocate = _unsafe_positions if self._unsafe else None
        uow = UnitOfWork(connection, last, self._encode, allocate, self._cache)
        uow.preload(Keys.union(i.keys for i in batch))
        results: list[tuple[_Item[Any], Any, BaseException | None]] = []
        for item in batch:
            writes = uow.writes
            try:
                results.append((item, item.work(uow), None))
            except JourneyError as refused:
                if uow.writes != writes:
                    raise
                results.append((item, None, refused))
        uow.flush()
        if self._shared and uow.appended:
            # Delivered at commit, in commit order, to every process listening.
            connection.execute(_NOTIFY, {"channel": CHANNEL, "head": str(uow.last_position)})
        if self._unsafe:
            time.sleep(random.uniform(0, _UNSAFE_DELAY_SECONDS))
        tracked = uow.tracked_by_source() if self._on_stats is not None else {}
        sessions, profiles = uow.rows_now() if self._cache is not None else ([], [])
        return _Committed(
            results, uow.appended, uow.encoded, uow.last_position, tracked, sessions, profiles
        )


@dataclass(frozen=True)
class _Committed:
    """What a committed transaction did: each call's result or refusal, the events it added."""

    results: list[tuple[_Item[Any], Any, BaseException | None]]
    appended: list[SystemEvent]
    encoded: list[EncodedEvent]
    last_position: int
    # Tracked events stored, by source id (only counted for metrics).
    tracked: dict[str, int]
    # The sessions and profiles it read or wrote, as committed (only kept for the row cache).
    sessions: list[Session]
    profiles: list[Profile]


def _unsafe_positions(connection: Connection, count: int) -> list[int]:
    # The test-only mode's positions: handed out at insert time, visible at commit time.
    return list(
        connection.scalars(
            text(f"SELECT nextval('{_UNSAFE_SEQUENCE}') FROM generate_series(1, :n)"),
            {"n": count},
        )
    )


def _settle(item: _Item[Any], result: Any, error: BaseException | None) -> None:
    if item.future.done():  # the caller gave up; the work is committed all the same
        return
    if error is not None:
        item.future.set_exception(error)
    else:
        item.future.set_result(result)


def _drain(queue: asyncio.Queue[_Item[Any] | None]) -> list[_Item[Any] | None]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
