"""Group commit: calls that share a transaction see each other, and one bad call sinks no other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event

from journey.api.encoding import encode
from journey.domain.errors import FailedPrecondition, Unavailable
from journey.domain.model import (
    EncodedEvent,
    SystemEvent,
    SystemEventDraft,
    SystemEventFilter,
    SystemEventType,
    TrackedEvent,
)
from journey.domain.rules import Outcome
from journey.storage.database import Database, open_database
from journey.storage.queries import Queries
from journey.storage.unit_of_work import Keys, UnitOfWork
from journey.storage.waiting_cache import INFO_KEY as WAITING_INFO_KEY
from journey.storage.waiting_cache import WaitingCache
from journey.storage.writer import Writer
from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import serving, stored_system_events
from tests.unit.test_rules import make_profile, make_session

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def one_event(session_id: str) -> Outcome:
    draft = SystemEventDraft(SystemEventType.VISIT_STARTED, NOW, "p", session_id, "web")
    return Outcome(profile_id="p", session_id=session_id, system_events=(draft,))


@pytest_asyncio.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await open_database(database_url)
    try:
        yield db
    finally:
        await db.close()


async def test_a_refused_or_failing_call_leaves_the_rest_of_its_batch_committed(
    database: Database,
) -> None:
    published: list[SystemEvent] = []
    published_encoded: list[EncodedEvent] = []

    def on_commit(events: Sequence[SystemEvent], encoded: Sequence[EncodedEvent]) -> None:
        published.extend(events)
        published_encoded.extend(encoded)

    writer = Writer(database, on_commit, encode)
    await writer.start()

    def good(uow: UnitOfWork) -> tuple[SystemEvent, ...]:
        return uow.apply(one_event("good"))

    def refused(uow: UnitOfWork) -> None:
        raise FailedPrecondition("no")

    def broken(uow: UnitOfWork) -> None:
        uow.apply(one_event("broken"))
        raise RuntimeError("a bug after staging")

    try:
        results = await asyncio.gather(
            writer.submit(good),
            writer.submit(refused),
            writer.submit(broken),
            writer.submit(good),
            return_exceptions=True,
        )
    finally:
        await writer.close()

    assert isinstance(results[1], FailedPrecondition)
    assert isinstance(results[2], RuntimeError)
    first, second = results[0], results[3]
    assert isinstance(first, tuple)
    assert isinstance(second, tuple)
    # Positions stay contiguous: the failed call gave its number back.
    assert [e.position for e in first + second] == [1, 2]
    stored = await stored_system_events(database, 10)
    assert [(e.position, e.session_id) for e in stored] == [(1, "good"), (2, "good")]
    assert [e.position for e in published] == [1, 2]
    # Each stored event is kept encoded, as its subscribers are sent it, and published so.
    replayed = await Queries(database).encoded_system_events(SystemEventFilter(), 0, 10)
    assert replayed == published_encoded == [EncodedEvent(e.position, encode(e)) for e in stored]


async def test_concurrent_calls_on_one_new_session_open_it_once(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        responses = await asyncio.gather(
            *(h.track("page-view", profile_id="p", session_id="s") for _ in range(20))
        )
        opened = [
            e
            for r in responses
            for e in r.system_events
            if e.type == pb.SystemEventType.SYSTEM_EVENT_TYPE_SESSION_OPENED
        ]
        assert len(opened) == 1
        session = await h.sessions.GetSession(pb.GetSessionRequest(session_id="s"))
        assert session.session.event_count == 20
        assert len(await h.all_events()) == 3


async def test_concurrent_retries_of_one_event_store_it_once(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        responses = await asyncio.gather(
            *(h.track("page-view", session_id="s", ids=["e-1"]) for _ in range(10))
        )
        assert {tuple(r.event_ids) for r in responses} == {("e-1",)}
        assert {(r.profile_id, r.session_id) for r in responses} == {(responses[0].profile_id, "s")}
        assert sum(len(r.system_events) for r in responses) == 3
        session = await h.sessions.GetSession(pb.GetSessionRequest(session_id="s"))
        assert session.session.event_count == 1


async def test_a_session_is_read_as_committed_never_as_a_failed_batch_left_it(
    database: Database,
) -> None:
    """On SQLite the writer keeps what it committed instead of reading it back; on PostgreSQL
    other replicas write too, so it reads. Either way a failed transaction leaves no trace."""
    session, profile = make_session(), make_profile()  # s-1 of p-1, with 7 events
    tracked = TrackedEvent("e1", "web", "page-view", b"", NOW, NOW, profile.id, session.id)
    keys = Keys(sessions=(session.id,), profiles=(profile.id,))
    session_reads: list[str] = []

    def count(statement: str) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM sessions" in statement:
            session_reads.append(statement)

    def count_session_reads(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        count(statement)

    def trace_checked_out(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_trace_callback(count)

    # The engine the writer's transactions run on. On SQLite the writer's lookups run on the
    # driver's own connection (storage/driver.py), out of SQLAlchemy's events: sqlite3's
    # trace callback sees them.
    engine = database.writer_engine or database.engine.sync_engine
    listener: tuple[str, Any] = (
        ("checkout", trace_checked_out)
        if database.writer_engine is not None
        else ("before_cursor_execute", count_session_reads)
    )
    event.listen(engine, *listener)

    def create(uow: UnitOfWork) -> None:
        outcome = Outcome(
            profile.id,
            session.id,
            new_profile=profile,
            new_session=session,
            tracked_events=(tracked,),
        )
        uow.apply(outcome)

    def update_then_fail(uow: UnitOfWork) -> None:
        stored = uow.session(session.id)
        assert stored is not None
        # The same client event id again: the unique index fails the flush, after staging.
        changed = stored._replace(event_count=99)
        uow.apply(
            Outcome(profile.id, session.id, updated_session=changed, tracked_events=(tracked,))
        )

    def read(uow: UnitOfWork) -> int:
        stored = uow.session(session.id)
        assert stored is not None
        return stored.event_count

    writer = Writer(database, lambda *_: None, encode)
    await writer.start()
    try:
        await writer.submit(create, keys)
        session_reads.clear()
        with pytest.raises(Unavailable):
            await writer.submit(update_then_fail, keys)
        assert await writer.submit(read, keys) == 7
        assert await writer.submit(read, keys) == 7
    finally:
        await writer.close()
        event.remove(engine, *listener)
    if database.is_sqlite:
        # Read once after the failure (which emptied the cache), then taken from the cache.
        assert len(session_reads) == 1
    else:
        assert len(session_reads) == 3


async def test_the_waiting_cache_is_the_lone_writers_and_a_failed_transaction_empties_it(
    database: Database,
) -> None:
    def cache_of(uow: UnitOfWork) -> WaitingCache | None:
        cache: WaitingCache | None = uow.connection.info.get(WAITING_INFO_KEY)
        return cache

    def hold_then_fail(uow: UnitOfWork) -> None:
        cache = cache_of(uow)
        assert cache is not None
        cache.start("g", "k")
        cache.add("g", "k", (1, 0, b""))
        raise RuntimeError("after the cache changed, before the commit")

    def held(uow: UnitOfWork) -> tuple[bool, int] | None:
        cache = cache_of(uow)
        return None if cache is None else (cache.holds("g", "k"), len(cache))

    writer = Writer(database, lambda *_: None, encode)
    await writer.start()
    try:
        if not database.is_sqlite:
            # Other replicas change the same groups: nothing may be trusted between rounds.
            assert await writer.submit(held) is None
            return
        with pytest.raises(RuntimeError):
            await writer.submit(hold_then_fail)
        assert await writer.submit(held) == (False, 0)
    finally:
        await writer.close()
