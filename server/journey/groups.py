"""Consumer groups' application core: admin operations, members joining and leaving, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection

from journey.clock import Clock
from journey.domain.errors import NotFound, Unavailable
from journey.domain.groups import DeadLetter, GroupSettings, GroupState, Start
from journey.domain.model import SystemEvent
from journey.storage import groups as storage
from journey.storage.database import Database
from journey.storage.failures import as_unavailable
from journey.storage.listen import ListenText, text_listener
from journey.storage.unit_of_work import UnitOfWork
from journey.storage.writer import Writer
from journey.streaming.broker import Broker
from journey.streaming.dispatch import Dispatcher, Member, RunRound

log = logging.getLogger(__name__)

# Each replica refreshes its members' heartbeats this often...
HEARTBEAT_SECONDS = 1.0
# ...and any replica takes back the work of members not heard of for this long (a replica
# that was killed, or cut off from the database).
STALE_AFTER = timedelta(seconds=5)


T = TypeVar("T")


# Delivery ids: a random prefix per process and a counter, shaped like a UUID. A uuid4 per
# delivery cost a getrandom call each, 8% of a busy dispatcher's time; the prefix's 80 random
# bits keep processes and restarts apart, and the counter keeps one process's ids apart. It
# counts from 16**11, so that hex() gives its 12 digits (for 15 * 16**11 ids) without a format
# spec, which cost twice as much.
_ID_PREFIX = str(uuid.uuid4())[:24]
_ID_COUNTER = itertools.count(16**11)


def next_id() -> str:
    """A new id for a group, a member or a delivery: this process's prefix and next count."""
    return _ID_PREFIX + hex(next(_ID_COUNTER))[2:]


def _new_id_prefix() -> None:
    # A forked child must not repeat its parent's ids (workers are spawned; this is a guard).
    global _ID_PREFIX
    _ID_PREFIX = str(uuid.uuid4())[:24]


os.register_at_fork(after_in_child=_new_id_prefix)


class ConsumerGroups:
    """Every consumer group as this replica serves it; the state itself lives in the database."""

    def __init__(
        self,
        database: Database,
        writer: Writer,
        broker: Broker,
        clock: Clock,
        new_id: Callable[[], str] = next_id,
    ) -> None:
        self._database = database
        self._writer = writer
        self._clock = clock
        self._new_id = new_id
        self.replica_id = new_id()
        self._dispatchers: dict[str, Dispatcher] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._listen: ListenText | None = text_listener(database, storage.CHANNEL)
        self._closed = False
        broker.watch(self._published)

    # --- admin ---------------------------------------------------------------------------

    async def create(self, name: str, settings: GroupSettings, start: Start) -> GroupState:
        """Create a group (or return the same one); AlreadyExists, OutOfRange."""

        def work(uow: UnitOfWork) -> storage.GroupRecord:
            return storage.create(
                uow.connection, self._new_id(), name, settings, start, self._clock.now()
            )

        record = await self._writer.submit(work)
        return await self._read(lambda c: storage.state(c, record, self._fresh_since()))

    async def get(self, name: str) -> GroupState:
        """A group and its counts; NotFound."""

        def read(connection: Connection) -> GroupState:
            record = storage.find(connection, name)
            if record is None:
                raise NotFound(f"consumer group {name!r} does not exist")
            return storage.state(connection, record, self._fresh_since())

        return await self._read(read)

    async def page(self, after_name: str, limit: int) -> list[GroupState]:
        """Up to `limit` groups after `after_name`, in name order."""
        since = self._fresh_since()
        return await self._read(
            lambda c: [storage.state(c, r, since) for r in storage.page(c, after_name, limit)]
        )

    async def delete(self, name: str) -> None:
        """Delete a group; its members here end with NOT_FOUND (elsewhere at their next round)."""
        group_id = await self._writer.submit(lambda uow: storage.remove(uow.connection, name))
        dispatcher = self._dispatchers.get(group_id)
        if dispatcher is not None:
            dispatcher.end_all(NotFound(f"consumer group {name!r} was deleted"))

    async def dead_letters(self, name: str, after: int, limit: int) -> list[DeadLetter]:
        """A page of a group's dead letters; NotFound."""

        def read(connection: Connection) -> list[DeadLetter]:
            record = storage.find(connection, name)
            if record is None:
                raise NotFound(f"consumer group {name!r} does not exist")
            return storage.dead_letters(connection, record.id, after, limit)

        return await self._read(read)

    async def redrive(self, name: str) -> int:
        """Put a group's dead letters back; how many. NotFound."""

        def work(uow: UnitOfWork) -> tuple[str, int]:
            record = storage.find(uow.connection, name)
            if record is None:
                raise NotFound(f"consumer group {name!r} does not exist")
            return record.id, storage.redrive(uow.connection, record.id, self._clock.now())

        group_id, count = await self._writer.submit(work)
        self._wake(group_id)
        return count

    def states_from_thread(
        self, loop: asyncio.AbstractEventLoop, timeout: float = 2.0
    ) -> tuple[list[GroupState], datetime]:
        """Every group's state, read on `loop` from another thread (a metrics scrape).

        Nothing when it cannot be read in `timeout` seconds (storage down, shutting down).
        """
        now = self._clock.now()
        try:
            future = asyncio.run_coroutine_threadsafe(self.page("", 1000), loop)
            return future.result(timeout), now
        except Exception as error:
            log.warning("reading the consumer groups for metrics failed: %r", error)
            return [], now

    # --- members -------------------------------------------------------------------------

    async def join(self, name: str, max_in_flight: int) -> Member:
        """A new member of the group `name`; NotFound."""
        if self._closed:
            raise Unavailable("the server is shutting down")
        member_id = self._new_id()

        def work(uow: UnitOfWork) -> str:
            record = storage.find(uow.connection, name)
            if record is None:
                raise NotFound(f"consumer group {name!r} does not exist")
            storage.join(uow.connection, member_id, record.id, self.replica_id, self._clock.now())
            return record.id

        group_id = await self._writer.submit(work)
        member = Member(member_id, group_id, max_in_flight)
        dispatcher = self._dispatchers.get(group_id)
        if dispatcher is None or dispatcher.finished:
            dispatcher = self._dispatchers[group_id] = Dispatcher(
                group_id, self._round_runner(group_id), self._clock
            )
            dispatcher.members[member.id] = member
            dispatcher.start()
        else:
            dispatcher.members[member.id] = member
            dispatcher.wake()
        return member

    async def leave(self, member: Member) -> None:
        """The member's stream ended: what it held goes to the others at once."""
        dispatcher = self._dispatchers.get(member.group_id)
        if dispatcher is not None:
            dispatcher.members.pop(member.id, None)
        member.ended = True
        now = self._clock.now()
        try:
            await self._writer.submit(lambda uow: storage.leave(uow.connection, [member.id], now))
        except Exception as error:
            # Its heartbeat stops with it: another round takes its work back when it is stale.
            log.warning("releasing consumer group member %s failed: %r", member.id, error)
        self._wake(member.group_id)

    def wake(self, member: Member) -> None:
        """The member asked for something: run its group's round soon."""
        self._wake(member.group_id)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Take back what an earlier process left (SQLite), then heartbeat and listen."""
        # Read first: a server that never had a group commits nothing for them.
        if self._database.is_sqlite and await self._read(storage.anything_held):
            now = self._clock.now()
            await self._writer.submit(
                lambda uow: storage.leave_other_replicas(uow.connection, self.replica_id, now)
            )
        self._tasks.append(asyncio.create_task(self._heartbeats(), name="journey-group-beats"))
        if self._listen is not None:
            self._tasks.append(
                asyncio.create_task(self._listen_loop(self._listen), name="journey-group-listen")
            )

    def close(self) -> None:
        """End every member's stream with UNAVAILABLE (shutting down) and refuse new ones."""
        self._closed = True
        for dispatcher in self._dispatchers.values():
            dispatcher.end_all(Unavailable("the server is shutting down"))

    async def stop(self) -> None:
        """Stop the heartbeats, the listener and the dispatchers."""
        self.close()
        tasks = [*self._tasks, *(d.task for d in self._dispatchers.values() if d.task)]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._tasks = []

    # --- internals -----------------------------------------------------------------------

    def _fresh_since(self) -> datetime:
        return self._clock.now() - STALE_AFTER

    async def _read(self, read: Callable[[Connection], T]) -> T:
        with as_unavailable():
            async with self._database.engine.connect() as connection:
                return await connection.run_sync(read)

    def _wake(self, group_id: str) -> None:
        dispatcher = self._dispatchers.get(group_id)
        if dispatcher is not None:
            dispatcher.wake()

    def _published(self, events: Sequence[SystemEvent]) -> None:
        # Cheap: a round that finds nothing new costs one query; filters are checked there.
        for dispatcher in self._dispatchers.values():
            dispatcher.wake()

    def _round_runner(self, group_id: str) -> RunRound:
        async def run(
            ops: Mapping[str, storage.MemberOps],
            rooms: Mapping[str, int],
            now: datetime,
            expire: bool,
        ) -> storage.Round:
            return await self._writer.submit(
                lambda uow: storage.dispatch(
                    uow.connection, group_id, now, ops, rooms, next_id, expire=expire
                )
            )

        return run

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                if not any(d.members for d in self._dispatchers.values()):
                    # No member here to keep alive: commit only to take back stale ones.
                    stale_before = self._clock.now() - STALE_AFTER
                    stale = functools.partial(storage.any_stale, stale_before=stale_before)
                    if not await self._read(stale):
                        continue
                touched = await self._writer.submit(self._beat)
            except Exception as error:
                log.warning("consumer group heartbeat failed: %r", error)
                continue
            for group_id in touched:
                self._wake(group_id)

    def _beat(self, uow: UnitOfWork) -> set[str]:
        now = self._clock.now()
        return storage.heartbeat(uow.connection, self.replica_id, now, now - STALE_AFTER)

    async def _listen_loop(self, listen: ListenText) -> None:
        failures = 0
        while True:
            lost = asyncio.Event()
            try:
                connection = await listen(self._wake, lost.set)
            except Exception as error:
                failures += 1
                if failures == 1:
                    log.warning("cannot listen for consumer group changes, retrying: %r", error)
                # The dispatchers poll meanwhile (dispatch.POLL_SECONDS).
                await asyncio.sleep(min(0.05 * 2 ** min(failures, 10), 1.0))
                continue
            failures = 0
            try:
                while not lost.is_set() and not connection.is_closed():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await lost.wait()
            finally:
                connection.terminate()
