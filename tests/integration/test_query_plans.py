"""EXPLAIN the hot queries: each must be served by the index meant for it, with no sort."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from sqlalchemy import Select, select, text

from journey.domain.groups import EntryState, GroupSettings, Ordering
from journey.domain.model import SessionState, SystemEventFilter, SystemEventType
from journey.storage import group_statements, groups, statements
from journey.storage.database import Database, open_database

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACTIVE = int(SessionState.ACTIVE)
GROUP = groups.GroupRecord(
    "g", "g", GroupSettings(SystemEventFilter(), NOW - NOW, 5, Ordering.SESSION), NOW, 0
)

# A statement, or one built for the dialect (postgres=True or False).
Statement = Select[object] | Callable[[bool], Select[object]]

# (name, statement, index on SQLite, index on PostgreSQL)
CASES: list[tuple[str, Statement, str, str]] = [
    (
        "session by id",
        statements.session_by_id("s"),
        "sqlite_autoindex_sessions_1",
        "sessions_pkey",
    ),
    (
        "sessions by ids (a group commit's preload, a sweep's batch)",
        lambda postgres: statements.sessions_by_ids(None if postgres else 3, ["s1", "s2", "s3"]),
        "sqlite_autoindex_sessions_1",
        "sessions_pkey",
    ),
    (
        "profiles by ids (a group commit's preload)",
        lambda postgres: statements.profiles_by_ids(None if postgres else 2, ["p1", "p2"]),
        "sqlite_autoindex_profiles_1",
        "profiles_pkey",
    ),
    (
        "profile by id",
        statements.profile_by_id("p"),
        "sqlite_autoindex_profiles_1",
        "profiles_pkey",
    ),
    (
        "idempotency lookup",
        lambda postgres: statements.stored_events(None if postgres else 2, ["a", "b"], "web"),
        "ux_tracked_events_source_event",
        "ux_tracked_events_source_event",
    ),
    (
        # The sweeper's deadline lookup: deadline = last activity + the state's timeout, so
        # "deadline passed" is a range of this index, read oldest first with no sort.
        "due sessions",
        statements.due_sessions(ACTIVE, NOW, 500),
        "ix_sessions_state_activity",
        "ix_sessions_state_activity",
    ),
    (
        "next deadline",
        statements.oldest_activity(ACTIVE),
        "ix_sessions_state_activity",
        "ix_sessions_state_activity",
    ),
    (
        "replay page",
        statements.system_events_page(SystemEventFilter(), 10, 1000, up_to=900, encoded=True),
        "INTEGER PRIMARY KEY",
        "system_events_pkey",
    ),
    (
        "replay page by type and source",
        statements.system_events_page(
            SystemEventFilter(types=frozenset({SystemEventType.VISIT_ENDED}), source_id="web"),
            10,
            1000,
            encoded=True,
        ),
        "INTEGER PRIMARY KEY",
        "system_events_pkey",
    ),
    (
        "replay page by session",
        statements.system_events_page(SystemEventFilter(session_id="s"), 10, 1000, encoded=True),
        "ix_system_events_session_position",
        "ix_system_events_session_position",
    ),
    (
        "listing page by profile",
        statements.system_events_page(SystemEventFilter(profile_id="p"), 10, 500),
        "ix_system_events_profile_position",
        "ix_system_events_profile_position",
    ),
    (
        # A consumer group's dispatch: its pending entries due now, in position order.
        "consumer group dispatch",
        groups.eligible(GROUP, NOW, 100),
        "ix_consumer_group_entries_state",
        "ix_consumer_group_entries_state",
    ),
]


@pytest_asyncio.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await open_database(database_url)
    try:
        yield db
    finally:
        await db.close()


async def explain(database: Database, statement: Select[object], *, discourage: bool = True) -> str:
    sql = str(
        statement.compile(dialect=database.engine.dialect, compile_kwargs={"literal_binds": True})
    )
    async with database.engine.connect() as connection:
        if database.is_sqlite:
            rows = await connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
            return "\n".join(str(row[-1]) for row in rows)
        # The test tables are tiny and unanalysed, so the planner would rightly scan and sort;
        # discourage that to see whether an index can serve the query, in order, at all.
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort") if discourage else ():
            await connection.execute(text(f"SET {setting} = off"))
        rows = await connection.execute(text(f"EXPLAIN {sql}"))
        return "\n".join(str(row[0]) for row in rows)


@pytest.mark.parametrize(("name", "statement", "sqlite_index", "postgres_index"), CASES)
async def test_hot_query_uses_its_index(
    database: Database,
    name: str,
    statement: Statement,
    sqlite_index: str,
    postgres_index: str,
) -> None:
    if callable(statement):
        statement = statement(not database.is_sqlite)
    plan = await explain(database, statement)
    if database.is_sqlite:
        assert sqlite_index in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        assert not any(
            line.startswith("SCAN") and "USING" not in line for line in plan.splitlines()
        ), plan
    else:
        assert postgres_index in plan, plan
        assert "Sort" not in plan, plan
        assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_idempotency_lookup_probes_each_id_on_an_unanalysed_table(database: Database) -> None:
    # A fresh table holding one source's events, as in the first minute of any database: with
    # `event_id IN (...)` the planner guessed a few dozen rows for the source and filtered all
    # of them on the ids (65 ms a group commit at 37,000 rows). Each id must be an index probe.
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO tracked_events (event_id, source_id, type, properties, occur_time,"
            " receive_time, profile_id, session_id)"
            " SELECT 'e' || i, 'web', 'page-view', '', 0, 0, 'p', 's'"
            " FROM generate_series(1, 5000) AS i"
        )
    ids = [f"new-{i}" for i in range(300)]
    plan = await explain(database, statements.stored_events(None, ids, "web"), discourage=False)
    assert "ux_tracked_events_source_event" in plan, plan
    assert any("Index Cond" in line and "event_id" in line for line in plan.splitlines()), plan
    assert not any("Filter" in line and "event_id" in line for line in plan.splitlines()), plan


async def test_a_rounds_requests_probe_their_entries_by_primary_key(database: Database) -> None:
    # A group with a backlog of 5,000 pending entries, on a table not analysed yet. With the
    # group and the state in the condition, SQLite read every pending entry at each round
    # (quadratic in the backlog); the entries a round's acks name must be primary-key probes.
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)"
            " INSERT INTO consumer_group_entries (group_id, position, key, occur_time, state,"
            " attempt, visible_at) SELECT 'g', i, '', 0, 0, 0, 0 FROM n"
        )
    statement = groups.at_positions(not database.is_sqlite, "g", [3, 5, 4000])
    plan = await explain(database, statement, discourage=False)
    if database.is_sqlite:
        assert "sqlite_autoindex_consumer_group_entries_1 (group_id=? AND position=?)" in plan
    else:
        assert "consumer_group_entries_pkey" in plan, plan
        lines = plan.splitlines()
        assert any("Index Cond" in line and "position" in line for line in lines), plan
        assert not any("Filter" in line and "position" in line for line in lines), plan
    # A member that left: its group's in-flight entries (a short range), whoever holds them.
    e = group_statements.entries.c
    in_flight = int(EntryState.IN_FLIGHT)
    give_back = select(e.position).where(
        e.group_id == "g", e.state == in_flight, e.member_id.in_(["m"])
    )
    plan = await explain(database, give_back, discourage=False)
    if database.is_sqlite:
        assert "(group_id=? AND state=?)" in plan, plan
    else:
        lines = plan.splitlines()
        assert any("Index Cond" in line and "state" in line for line in lines), plan


async def test_a_settled_tails_next_waiting_event_is_an_index_probe_per_key(
    database: Database,
) -> None:
    # Its keys' events of a busy log, on a table not analysed yet: each settled tail's next
    # event must come from the session (or profile) index, never from reading the log.
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)"
            " INSERT INTO system_events (position, id, type, occur_time, profile_id,"
            " session_id, source_id, properties) SELECT i, 'e' || i, 3, 0, 'p' || (i % 50),"
            " 's' || (i % 500), 'web', '{}' FROM n"
        )
    postgres = not database.is_sqlite
    lookup = group_statements.next_waiting(postgres, Ordering.SESSION, SystemEventFilter())
    if postgres:
        bound = lookup.statement.params(keys=["s1", "s2"], afters=[1, 2], up_to=4000)
    else:
        bound = lookup.statement.params(pairs='[["s1", 1], ["s2", 2]]', up_to=4000)
    plan = await explain(database, bound, discourage=False)
    assert "ix_system_events_session_position" in plan, plan
    assert "ix_system_events_profile_position" in plan, plan
    if database.is_sqlite:
        assert not any(line.startswith("SCAN system_events") for line in plan.splitlines()), plan
    else:
        assert "Seq Scan on system_events" not in plan, plan
