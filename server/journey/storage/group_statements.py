"""Consumer groups' round statements, built once with bind parameters and reused by every round.

A round runs a dozen statements, at every ack and every commit. Built anew each time, each cost
SQLAlchemy a construction and a cache key (a millisecond a round together, more than the SQL of
a small round). Each is built once, compiled once per dialect and run on the driver
(storage/prepared.py). The lists they take are one parameter each (`among`), so their text never
changes either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Delete,
    Select,
    String,
    Table,
    Update,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY

from journey.domain.groups import EntryState, Ordering
from journey.domain.model import SystemEventFilter
from journey.storage import statements
from journey.storage.prepared import Prepared
from journey.storage.schema import ConsumerGroupEntryRow, ConsumerGroupRow

groups = cast(Table, ConsumerGroupRow.__table__)
entries = cast(Table, ConsumerGroupEntryRow.__table__)
system_events = statements.system_events

PENDING, IN_FLIGHT, DEAD, BLOCKED = (int(s) for s in EntryState)
UNSETTLED = (PENDING, IN_FLIGHT, BLOCKED)


def among(
    postgres: bool, column: Any, name: str | None, values: Iterable[Any] | None = None
) -> ColumnElement[bool]:
    """`column IN` a list, as one parameter: one statement text whatever the list's length.

    The list is bound as `name` at run time (see `listed`), or given here as `values`.
    PostgreSQL: `= ANY(array)`; asyncpg prepares each statement text it has not seen, and an
    IN list of another length is another text. SQLite: `IN (SELECT value FROM json_each(list))`:
    an IN list of hundreds was compiled again at each round, and ran slower; this is still a
    probe of the index per value.
    """
    value = None if values is None else listed(postgres, values)
    if postgres:
        array = bindparam(name, value, type_=ARRAY(column.type))
        return cast(ColumnElement[bool], column == any_(array))
    listed_values = func.json_each(bindparam(name, value, type_=String)).table_valued("value")
    return cast(ColumnElement[bool], column.in_(select(listed_values.c.value)))


def listed(postgres: bool, values: Iterable[Any]) -> Any:
    """What to bind for an `among` parameter."""
    return list(values) if postgres else json.dumps(list(values))


def raw(column: Any) -> Any:
    """A UtcMicros column read as stored (integer microseconds), to be written back as is."""
    return type_coerce(column, BigInteger)


@dataclass(frozen=True)
class RoundStatements:
    """One dialect's statements; parameter names in each one's comment."""

    # group_id (Core: the group's row is read by column name, once a round)
    by_id: Select[Any]
    # (none): the last position committed
    head: Prepared[Select[Any]]
    # g, positions: (delivery_id, position, attempt, key, state, tail) of these entries
    at_positions: Prepared[Select[Any]]
    # g, positions
    delete_at: Prepared[Delete]
    # g, positions, now: these entries become pending, due now
    pending_at: Prepared[Update]
    # g, keys: (key, position, attempt, encoded) of each key's first blocked entry (unordered)
    next_blocked: Prepared[Select[Any]]
    # g, now, limit: (position, attempt, encoded) of pending entries due, in position order
    due: Prepared[Select[Any]]
    # g, keys: (key, 1 if one is its tail else 0) of these keys with an unsettled entry
    headed: Prepared[Select[Any]]
    # g, read
    set_read: Prepared[Update]
    # positions: (position, occur_time as stored, encoded) of these log events
    events_at: Prepared[Select[Any]]
    # g, now: the first pending entry's time after now
    next_visible: Prepared[Select[Any]]
    # g: the first lease to run out
    next_lease: Prepared[Select[Any]]


@lru_cache(maxsize=2)
def round_statements(postgres: bool) -> RoundStatements:
    """The statements for PostgreSQL (True) or SQLite (False)."""
    e = entries.c
    c = system_events.c
    g = bindparam("g", type_=String)
    now = bindparam("now", type_=e.visible_at.type)
    if postgres:
        # One probe per position whatever the planner believes: on a table not analysed yet it
        # took a group's rows for a few and read them all, filtering on the positions (as the
        # idempotency lookup did, statements.stored_events). The LIMIT keeps the lateral
        # subquery from being flattened into a join served the same way.
        wanted = (
            func.unnest(bindparam("positions", type_=ARRAY(BigInteger)))
            .table_valued("position")
            .render_derived()
        )
        probe = (
            select(e.delivery_id, e.position, e.attempt, e.key, e.state, e.tail)
            .where(e.group_id == g, e.position == wanted.c.position)
            .limit(1)
        ).lateral()
        at_positions = select(*probe.c).select_from(wanted.join(probe, true()))
    else:
        at_positions = select(e.delivery_id, e.position, e.attempt, e.key, e.state, e.tail).where(
            e.group_id == g, among(False, e.position, "positions")
        )
    heads = (
        select(func.min(e.position))
        .where(e.group_id == g, e.state == BLOCKED, among(postgres, e.key, "keys"))
        .group_by(e.key)
    )
    return RoundStatements(
        by_id=select(groups).where(groups.c.id == bindparam("group_id", type_=String)),
        head=Prepared(statements.head()),
        at_positions=Prepared(at_positions),
        delete_at=Prepared(
            entries.delete().where(e.group_id == g, among(postgres, e.position, "positions"))
        ),
        pending_at=Prepared(
            entries.update()
            .where(e.group_id == g, among(postgres, e.position, "positions"))
            .values(state=PENDING, visible_at=now)
        ),
        next_blocked=Prepared(
            select(e.key, e.position, e.attempt, system_events.c.encoded)
            .join(system_events, system_events.c.position == e.position)
            .where(e.group_id == g, e.position.in_(heads.scalar_subquery()))
        ),
        due=Prepared(
            select(e.position, e.attempt, system_events.c.encoded)
            .join(system_events, system_events.c.position == e.position)
            .where(e.group_id == g, e.state == PENDING, e.visible_at <= now)
            .order_by(e.position)
            .limit(bindparam("limit", type_=BigInteger))
        ),
        # The states spelled out: `state IN (list)` is an expanding parameter, compiled at
        # each run; SQLite turns these ORs on one column into an IN that the index serves.
        headed=Prepared(
            select(e.key, func.max(e.tail))
            .where(
                e.group_id == g,
                among(postgres, e.key, "keys"),
                or_(*(e.state == state for state in UNSETTLED)),
            )
            .group_by(e.key)
        ),
        set_read=Prepared(
            groups.update()
            .where(groups.c.id == g)
            .values(read_position=bindparam("read", type_=BigInteger))
        ),
        events_at=Prepared(
            select(c.position, raw(c.occur_time), c.encoded).where(
                among(postgres, c.position, "positions")
            )
        ),
        next_visible=Prepared(
            select(func.min(e.visible_at)).where(
                e.group_id == g, e.state == PENDING, e.visible_at > now
            )
        ),
        next_lease=Prepared(
            select(func.min(e.lease_until)).where(e.group_id == g, e.state == IN_FLIGHT)
        ),
    )


@lru_cache(maxsize=256)
def log_page(event_filter: SystemEventFilter) -> Prepared[Select[Any]]:
    """A group's next events (after, up_to, limit), as entries copy them: the time as stored."""
    c = system_events.c
    page = statements.system_events_page(
        event_filter,
        bindparam("after", type_=BigInteger),
        bindparam("limit", type_=BigInteger),
        up_to=bindparam("up_to", type_=BigInteger),
    )
    return Prepared(
        page.with_only_columns(c.position, c.session_id, c.profile_id, raw(c.occur_time), c.encoded)
    )


def _key_is(ordering: Ordering, key: Any) -> list[ColumnElement[bool]]:
    """The log's events of one ordering key, as one condition per index that finds them.

    As domain.groups.ordering_key: SESSION keys an event by its session, or by its profile when
    it has none; PROFILE by its profile. Each condition is served by the index on its column
    and the position.
    """
    c = system_events.c
    if ordering == Ordering.PROFILE:
        return [c.profile_id == key]
    return [c.session_id == key, and_(c.session_id == "", c.profile_id == key)]


@lru_cache(maxsize=256)
def next_waiting(
    postgres: bool, ordering: Ordering, event_filter: SystemEventFilter
) -> Prepared[Select[Any]]:
    """Per (key, after) pair: the key's first matching event after `after`, up to `up_to`.

    Rows of (key, position or NULL per condition of `_key_is`): the answer is the smallest.
    Bound as `keys` and `afters` (PostgreSQL) or `pairs`, a JSON list of [key, after]
    (SQLite), and `up_to`. One index probe per pair and condition, in one statement.
    """
    if postgres:
        pairs: Any = (
            func.unnest(
                bindparam("keys", type_=ARRAY(String)), bindparam("afters", type_=ARRAY(BigInteger))
            )
            .table_valued("k", "a")
            .render_derived()
        )
    else:
        listed_pairs = func.json_each(bindparam("pairs", type_=String)).table_valued("value")
        pairs = select(
            func.json_extract(listed_pairs.c.value, "$[0]").label("k"),
            func.json_extract(listed_pairs.c.value, "$[1]").label("a"),
        ).subquery("w")
    firsts = [
        statements.system_events_page(event_filter, pairs.c.a, 1, up_to=bindparam("up_to"))
        .with_only_columns(system_events.c.position)
        .where(condition)
        .scalar_subquery()
        for condition in _key_is(ordering, pairs.c.k)
    ]
    return Prepared(select(pairs.c.k, *firsts).select_from(pairs))


@lru_cache(maxsize=256)
def all_waiting(ordering: Ordering, event_filter: SystemEventFilter) -> tuple[Select[Any], ...]:
    """One key's matching events after `after`, up to `up_to`: one statement per condition.

    Rows of (position, occur_time as stored), in position order: what a blocked entry copies,
    and what the counts need. For the rare paths (a tail settled while its key has blocked
    entries; the counts), not for rounds.
    """
    c = system_events.c
    return tuple(
        statements.system_events_page(
            event_filter,
            bindparam("after", type_=BigInteger),
            2**62,
            up_to=bindparam("up_to", type_=BigInteger),
        )
        .with_only_columns(c.position, raw(c.occur_time))
        .where(condition)
        for condition in _key_is(ordering, bindparam("key", type_=String))
    )
