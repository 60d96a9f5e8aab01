"""The SQL of the hot paths, built by functions so that tests can EXPLAIN exactly what runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    String,
    Table,
    any_,
    bindparam,
    func,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY

from journey.domain.model import Profile, Session, SystemEventFilter
from journey.storage.records import field_names
from journey.storage.schema import ProfileRow, SessionRow, SystemEventRow, TrackedEventRow

profiles = cast(Table, ProfileRow.__table__)
sessions = cast(Table, SessionRow.__table__)
tracked_events = cast(Table, TrackedEventRow.__table__)
system_events = cast(Table, SystemEventRow.__table__)


def session_by_id(session_id: str) -> Select[Any]:
    """One session (primary key)."""
    return select(sessions).where(sessions.c.id == session_id)


def _among(
    column: ColumnElement[Any], size: int | None, keys: Sequence[str]
) -> ColumnElement[bool]:
    # The keys as parameters named for storage.lookup: `size` of them (`IN`), or on PostgreSQL
    # (size None) one array, so that a batch of any size is one statement for asyncpg to
    # prepare (`IN (...)` made every batch size a statement text of its own, a round trip).
    if size is None:
        return column == any_(bindparam("keys", list(keys) or None, type_=ARRAY(String)))
    return column.in_(
        [bindparam(f"keys_{i}", keys[i] if i < len(keys) else None) for i in range(size)]
    )


def _fields(table: Table, cls: type) -> list[ColumnElement[Any]]:
    # In the domain record's field order, so that a row builds the record (records.from_values).
    return [table.c[name] for name in field_names(cls)]


def sessions_by_ids(size: int | None, keys: Sequence[str] = ()) -> Select[Any]:
    """Several sessions (primary key), fields in Session's order; `keys` only for EXPLAIN."""
    return select(*_fields(sessions, Session)).where(_among(sessions.c.id, size, keys))


def profile_by_id(profile_id: str) -> Select[Any]:
    """One profile (primary key)."""
    return select(profiles).where(profiles.c.id == profile_id)


def profiles_by_ids(size: int | None, keys: Sequence[str] = ()) -> Select[Any]:
    """Several profiles (primary key), fields in Profile's order; `keys` only for EXPLAIN."""
    return select(*_fields(profiles, Profile)).where(_among(profiles.c.id, size, keys))


def stored_events(
    size: int | None, keys: Sequence[str] = (), source_id: str | None = None
) -> Select[Any]:
    """Which client event ids (`keys`) a source already stored (the idempotency index).

    Columns: event_id, profile_id, session_id. `keys` and `source_id` only for EXPLAIN; else
    bound at run time (storage.lookup).
    """
    c = tracked_events.c
    source: BindParameter[str | None] = bindparam("source_id", source_id)
    if size is not None:
        return select(c.event_id, c.profile_id, c.session_id).where(
            c.source_id == source, _among(c.event_id, size, keys)
        )
    # One index probe per id, whatever the planner believes. With `event_id IN (...)` (or
    # `= ANY`), on a table not yet analysed (the first minute of a database, or after a
    # burst) it estimated a source's rows at a few dozen and scanned all of them, filtering
    # on the ids: 65 ms a group commit with 37,000 rows of one source, growing with the table
    # (docs/performance.md). The LIMIT keeps the lateral subquery from being flattened into a
    # join that the planner would again serve with such a scan.
    ids = (
        func.unnest(bindparam("keys", list(keys) or None, type_=ARRAY(String)))
        .table_valued("id")
        .render_derived()
    )
    probe = (
        select(c.event_id, c.profile_id, c.session_id)
        .where(c.source_id == source, c.event_id == ids.c.id)
        .limit(1)
        .lateral()
    )
    return select(probe.c.event_id, probe.c.profile_id, probe.c.session_id).select_from(
        ids.join(probe, true())
    )


def due_sessions(state: int, cutoff: datetime, limit: int) -> Select[Any]:
    """Sessions in `state` idle since `cutoff` or longer, oldest first (state/activity index)."""
    c = sessions.c
    return (
        select(c.id)
        .where(c.state == state, c.last_activity_time <= cutoff)
        .order_by(c.last_activity_time)
        .limit(limit)
    )


def oldest_activity(state: int) -> Select[Any]:
    """The oldest last activity among sessions in `state` (state/activity index)."""
    return select(func.min(sessions.c.last_activity_time)).where(sessions.c.state == state)


def head() -> Select[Any]:
    """The last position committed (primary key, backward)."""
    return select(func.max(system_events.c.position))


def committed_after(after: int, limit: int) -> Select[Any]:
    """Whole events, encoded form included, after `after` in position order (primary key)."""
    c = system_events.c
    return select(system_events).where(c.position > after).order_by(c.position).limit(limit)


# What a listing reads: everything but the encoded form, which only subscriptions send.
_EVENT_COLUMNS = tuple(c for c in system_events.c if c.name != "encoded")


def system_events_page(
    event_filter: SystemEventFilter,
    after: int | ColumnElement[int],
    limit: int | ColumnElement[int],
    up_to: int | ColumnElement[int] | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    *,
    encoded: bool = False,
) -> Select[Any]:
    """A page of the log in position order, every filter pushed into SQL.

    `encoded`: only each event's position and encoded form, for a subscription's replay.
    `after`, `limit` and `up_to` may be bind parameters (a statement built once, reused).
    """
    c = system_events.c
    columns = (c.position, c.encoded) if encoded else _EVENT_COLUMNS
    query = select(*columns).where(c.position > after)
    if up_to is not None:
        query = query.where(c.position <= up_to)
    if event_filter.types:
        query = query.where(c.type.in_(sorted(int(t) for t in event_filter.types)))
    if event_filter.profile_id:
        query = query.where(c.profile_id == event_filter.profile_id)
    if event_filter.session_id:
        query = query.where(c.session_id == event_filter.session_id)
    if event_filter.source_id:
        query = query.where(c.source_id == event_filter.source_id)
    if start_time is not None:
        query = query.where(c.occur_time >= start_time)
    if end_time is not None:
        query = query.where(c.occur_time < end_time)
    return query.order_by(c.position).limit(limit)
