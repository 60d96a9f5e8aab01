"""Consumer groups' storage: synchronous steps on one connection, run inside the writer's commits.

Every change to a group runs as a unit of work of the writer (storage/writer.py), so it is
serialized with every other write, database-wide on PostgreSQL (the positions lock): a
dispatch reads entries no other replica is changing, and a scan reads the log up to a head
that no commit can pass meanwhile. Nothing here raises a JourneyError after writing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from journey.domain.errors import AlreadyExists, NotFound, OutOfRange
from journey.domain.groups import (
    BEGINNING,
    END,
    REASON_ACK_TIMEOUT,
    REASON_MAX_ATTEMPTS,
    DeadLetter,
    Delivery,
    GroupSettings,
    GroupState,
    Ordering,
    Start,
    assign,
    backoff,
    exhausted,
    ordering_key,
    same_settings,
)
from journey.domain.model import SystemEventFilter, SystemEventType
from journey.storage import statements
from journey.storage.bulk import Bulk
from journey.storage.group_statements import (
    BLOCKED,
    DEAD,
    IN_FLIGHT,
    PENDING,
    UNSETTLED,
    all_waiting,
    among,
    entries,
    groups,
    listed,
    log_page,
    next_waiting,
    round_statements,
    system_events,
)
from journey.storage.schema import (
    ConsumerGroupMemberRow,
    UtcMicros,
    to_micros,
)
from journey.storage.waiting_cache import INFO_KEY, UNKNOWN, WaitingCache

members = cast(Table, ConsumerGroupMemberRow.__table__)
T = TypeVar("T")

# With per-key ordering, log events read per round at most (some wait behind their keys).
SCAN_PAGE = 5000
# Other replicas hear of releases, nacks, redrives and deletes here (PostgreSQL).
CHANNEL = "journey_groups"
_NOTIFY = text("SELECT pg_notify(:channel, :group_id)")
# asyncpg prepares every statement, and after five runs PostgreSQL may plan one generically,
# without the group, state and ids it is given: entries churn too fast for that plan to fit.
# For the rest of the writer's transaction only.
_CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")
# A key with an entry in these states has its head: the rest of its entries wait.
_ACTIVE = (PENDING, IN_FLIGHT)


# A round's many-row writes, compiled once per dialect (see bulk.py): through Connection.execute
# with a dict per row, their parameters were a tenth of a busy dispatcher's time.
_NEW_ENTRIES = Bulk(
    insert(entries),
    (
        "group_id",
        "position",
        "key",
        "occur_time",
        "state",
        "attempt",
        "visible_at",
        "member_id",
        "delivery_id",
        "lease_until",
        "tail",
    ),
    # Given as stored: integer microseconds.
    raw=("occur_time", "visible_at", "lease_until", "tail"),
)


def _entry_update(*columns: str, raw: tuple[str, ...] = ()) -> Bulk:
    """An update of these columns of one entry (bound as `g`, `p`, then the columns), in bulk.

    `raw`: columns given as stored (see Bulk).
    """
    e = entries.c
    statement = (
        update(entries)
        .where(e.group_id == bindparam("g"), e.position == bindparam("p"))
        .values({column: bindparam(column) for column in columns})
    )
    return Bulk(statement, ("g", "p", *columns), raw=raw)


# The lease given as stored (integer microseconds): converted once a round, not once a row.
_HANDED_OUT = _entry_update(
    "state", "attempt", "member_id", "delivery_id", "lease_until", raw=("lease_until",)
)
_SETTLED = _entry_update(
    "state", "visible_at", "member_id", "lease_until", "reason", "dead_letter_time"
)


class Finished(NamedTuple):
    """An entry just acknowledged or dead-lettered: its key may go on."""

    key: str
    position: int
    # 1: it was its key's tail (the key's later events read so far wait in the log after it).
    tail: int


@dataclass(frozen=True)
class GroupRecord:
    """A group's row."""

    id: str
    name: str
    settings: GroupSettings
    create_time: datetime
    read_position: int


def _filter_json(event_filter: SystemEventFilter) -> dict[str, Any]:
    return {
        "types": sorted(int(t) for t in event_filter.types),
        "profile_id": event_filter.profile_id,
        "session_id": event_filter.session_id,
        "source_id": event_filter.source_id,
    }


def _filter_from_json(value: Mapping[str, Any]) -> SystemEventFilter:
    return SystemEventFilter(
        types=frozenset(SystemEventType(t) for t in value.get("types", ())),
        profile_id=value.get("profile_id", ""),
        session_id=value.get("session_id", ""),
        source_id=value.get("source_id", ""),
    )


def _record(row: Any) -> GroupRecord:
    return GroupRecord(
        id=row.id,
        name=row.name,
        settings=GroupSettings(
            event_filter=_filter_from_json(row.filter),
            ack_timeout=timedelta(microseconds=row.ack_timeout_us),
            max_attempts=row.max_attempts,
            ordering=Ordering(row.ordering),
        ),
        create_time=row.create_time,
        read_position=row.read_position,
    )


def _cache(connection: Connection) -> WaitingCache | None:
    """The writer's cache of waiting events, if it keeps one (SQLite: storage/waiting_cache.py)."""
    cache: WaitingCache | None = connection.info.get(INFO_KEY)
    return cache


def _forget(connection: Connection, group_id: str, key: str | None = None) -> None:
    cache = _cache(connection)
    if cache is not None:
        cache.forget(group_id, key)


def _among(connection: Connection, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """`column IN values`, as one statement text whatever the count (group_statements.among)."""
    return among(connection.dialect.name == "postgresql", column, None, values)


def _head(connection: Connection) -> int:
    # Under the writer's lock: every position up to here is committed (or this transaction's).
    return int(connection.scalar(statements.head()) or 0)


def notify(connection: Connection, group_id: str) -> None:
    """Wake the other replicas' dispatchers of this group when this transaction commits."""
    if connection.dialect.name == "postgresql":
        connection.execute(_NOTIFY, {"channel": CHANNEL, "group_id": group_id})


def find(connection: Connection, name: str) -> GroupRecord | None:
    """The group with this name, if any."""
    row = connection.execute(select(groups).where(groups.c.name == name)).first()
    return None if row is None else _record(row)


def by_id(connection: Connection, group_id: str) -> GroupRecord | None:
    """The group with this id, if it still exists."""
    row = connection.execute(select(groups).where(groups.c.id == group_id)).first()
    return None if row is None else _record(row)


def create(
    connection: Connection,
    group_id: str,
    name: str,
    settings: GroupSettings,
    start: Start,
    now: datetime,
) -> GroupRecord:
    """Create the group, or return the existing one with the same settings (AlreadyExists)."""
    existing = find(connection, name)
    if existing is not None:
        if not same_settings(existing.settings, settings):
            raise AlreadyExists(f"consumer group {name!r} exists with other settings")
        return existing
    head = _head(connection)
    if start == BEGINNING:
        scanned = 0
    elif start == END:
        scanned = head
    else:
        scanned = int(start)
        if scanned > head:
            raise OutOfRange(f"after_position {scanned} is beyond the last position, {head}")
    record = GroupRecord(group_id, name, settings, now, scanned)
    connection.execute(
        insert(groups).values(
            id=group_id,
            name=name,
            filter=_filter_json(settings.event_filter),
            ack_timeout_us=settings.ack_timeout // timedelta(microseconds=1),
            max_attempts=settings.max_attempts,
            ordering=int(settings.ordering),
            create_time=now,
            read_position=scanned,
        )
    )
    return record


def remove(connection: Connection, name: str) -> str:
    """Delete the group and everything it holds; its id, or NotFound."""
    record = find(connection, name)
    if record is None:
        raise NotFound(f"consumer group {name!r} does not exist")
    connection.execute(delete(entries).where(entries.c.group_id == record.id))
    connection.execute(delete(members).where(members.c.group_id == record.id))
    connection.execute(delete(groups).where(groups.c.id == record.id))
    _forget(connection, record.id)
    notify(connection, record.id)
    return record.id


def page(connection: Connection, after_name: str, limit: int) -> list[GroupRecord]:
    """Up to `limit` groups after `after_name`, in name order."""
    query = select(groups).where(groups.c.name > after_name).order_by(groups.c.name).limit(limit)
    return [_record(row) for row in connection.execute(query)]


def state(connection: Connection, record: GroupRecord, fresh_since: datetime) -> GroupState:
    """The group's counts; members count when their heartbeat is at or after `fresh_since`."""
    e = entries.c
    counts: dict[int, int] = dict(
        connection.execute(
            select(e.state, func.count()).where(e.group_id == record.id).group_by(e.state)
        ).all()
    )
    first_unsettled, oldest = connection.execute(
        select(func.min(e.position), func.min(e.occur_time)).where(
            e.group_id == record.id, e.state.in_(UNSETTLED)
        )
    ).one()
    # Events waiting in the log behind their key's tail are pending too.
    waiting = _all_waiting(connection, record, _tails(connection, record.id))
    if waiting:
        first_waiting = _as_time(min(occur for _, occur in waiting))
        oldest = first_waiting if oldest is None else min(_as_time(oldest), first_waiting)
    # So are the matching events the group has not read yet.
    c = system_events.c
    after_scan = statements.system_events_page(
        record.settings.event_filter, record.read_position, 2**62
    )
    first_unscanned = connection.execute(
        after_scan.with_only_columns(c.position, c.occur_time).limit(1)
    ).first()
    not_copied = 0
    if first_unscanned is not None:
        counted = after_scan.with_only_columns(c.position).order_by(None).limit(None).subquery()
        not_copied = int(connection.scalar(select(func.count()).select_from(counted)) or 0)
        if oldest is None:
            oldest = first_unscanned.occur_time
    if first_unsettled is not None:
        floor = int(first_unsettled) - 1
    elif first_unscanned is not None:
        floor = int(first_unscanned.position) - 1
    else:
        floor = max(record.read_position, 0)
    member_count = connection.scalar(
        select(func.count()).where(
            members.c.group_id == record.id, members.c.heartbeat_time >= fresh_since
        )
    )
    return GroupState(
        name=record.name,
        settings=record.settings,
        create_time=record.create_time,
        ack_floor=floor,
        pending_count=sum(counts.get(s, 0) for s in UNSETTLED) + len(waiting) + not_copied,
        in_flight_count=counts.get(IN_FLIGHT, 0),
        dead_letter_count=counts.get(DEAD, 0),
        member_count=int(member_count or 0),
        oldest_pending_time=None if oldest is None else _as_time(oldest),
    )


def dead_letters(connection: Connection, group_id: str, after: int, limit: int) -> list[DeadLetter]:
    """Up to `limit` dead letters after position `after`, in position order."""
    e = entries.c
    query = (
        select(e.position, system_events.c.encoded, e.attempt, e.reason, e.dead_letter_time)
        .join(system_events, system_events.c.position == e.position)
        .where(e.group_id == group_id, e.state == DEAD, e.position > after)
        .order_by(e.position)
        .limit(limit)
    )
    return [
        DeadLetter(row.position, row.encoded, row.attempt, row.reason or "", row.dead_letter_time)
        for row in connection.execute(query)
    ]


def redrive(connection: Connection, group_id: str, now: datetime) -> int:
    """Put every dead letter back to be delivered, attempts reset; how many."""
    e = entries.c
    result = connection.execute(
        update(entries)
        .where(e.group_id == group_id, e.state == DEAD)
        .values(
            state=PENDING,
            attempt=0,
            visible_at=now,
            member_id=None,
            delivery_id=None,
            lease_until=None,
            reason=None,
            dead_letter_time=None,
            # A dead entry is no key's tail: the key's waiting events are behind another.
            tail=0,
        )
    )
    if result.rowcount:
        _forget(connection, group_id)
        group = by_id(connection, group_id)
        if group is not None and group.settings.ordering != Ordering.NONE:
            _reorder(connection, group)
        notify(connection, group_id)
    return int(result.rowcount)


def _reorder(connection: Connection, group: GroupRecord) -> None:
    """After a redrive: per key, only the first unsettled entry may be pending.

    A redriven event waits behind a later one of its key that is in flight now (that one
    cannot be called back); it goes next.
    """
    e = entries.c
    rows = connection.execute(
        select(e.key, e.position, e.state)
        .where(e.group_id == group.id, e.state.in_(UNSETTLED))
        .order_by(e.key, e.position)
    ).all()
    flying = {row.key for row in rows if row.state == IN_FLIGHT}
    changes: list[dict[str, Any]] = []
    key, has_head = None, False
    for row in rows:
        if row.key != key:
            key, has_head = row.key, row.key in flying
        if row.state == IN_FLIGHT:
            continue
        wanted = BLOCKED if has_head else PENDING
        has_head = True
        if row.state != wanted:
            changes.append({"p": row.position, "s": wanted})
    if changes:
        connection.execute(
            update(entries)
            .where(e.group_id == group.id, e.position == bindparam("p"))
            .values(state=bindparam("s")),
            changes,
        )


def _tails(connection: Connection, group_id: str) -> list[Finished]:
    """The group's unsettled tail entries."""
    e = entries.c
    rows = connection.execute(
        select(e.key, e.position).where(
            e.group_id == group_id, e.tail == 1, or_(*(e.state == state for state in UNSETTLED))
        )
    )
    return [Finished(key, position, 1) for key, position in rows]


def _all_waiting(
    connection: Connection, group: GroupRecord, tails: Iterable[Finished]
) -> list[tuple[int, int]]:
    """Every event waiting in the log behind these tails: (position, occur as stored).

    One statement per tail and key condition: for the rare paths, not for every round.
    """
    found: list[tuple[int, int]] = []
    for tail in tails:
        for query in all_waiting(group.settings.ordering, group.settings.event_filter):
            params = {"key": tail.key, "after": tail.position, "up_to": group.read_position}
            found += [tuple(row) for row in connection.execute(query, params)]
    return sorted(found)


def _next_waiting(
    connection: Connection, group: GroupRecord, tails: Sequence[Finished]
) -> list[tuple[str, int, int, bytes]]:
    """The first event waiting in the log behind each of these settled tails, if any.

    (key, position, occur as stored, encoded) per key that has one: an index probe per tail
    and key condition, then one read of the events found.
    """
    postgres = connection.dialect.name == "postgresql"
    lookup = next_waiting(postgres, group.settings.ordering, group.settings.event_filter)
    firsts: dict[int, str] = {}
    for chunk in _chunks(tails):
        if postgres:
            params: dict[str, Any] = {
                "keys": [t.key for t in chunk],
                "afters": [t.position for t in chunk],
            }
        else:
            params = {"pairs": listed(False, [[t.key, t.position] for t in chunk])}
        params["up_to"] = group.read_position
        for key, *positions in lookup.rows(connection, **params):
            found = [p for p in positions if p is not None]
            if found:
                firsts[min(found)] = key
    if not firsts:
        return []
    sql = round_statements(postgres)
    rows = sql.events_at.rows(connection, positions=listed(postgres, sorted(firsts)))
    return [(firsts[position], position, occur, encoded) for position, occur, encoded in rows]


def _hand_out_next(
    connection: Connection,
    group: GroupRecord,
    finished: Sequence[Finished],
    now: datetime,
    left: dict[str, int],
    new_id: Any,
    out: list[tuple[str, Delivery]],
) -> None:
    """These keys' heads were acked or dead-lettered: hand their next events to members with
    room at once, the rest pending.

    A key's next event is its first blocked entry, if it has any (redriven events wait there,
    before the key's later events). Otherwise, if the settled head was its key's tail, it is
    the key's first event waiting in the log after it, which gets its entry now and is the
    key's new tail. A tail settled while its key has blocked entries first gives every event
    waiting behind it a blocked entry, the last of them the new tail.
    """
    postgres = connection.dialect.name == "postgresql"
    sql = round_statements(postgres)
    # (position, attempt, encoded, key and occur for an event that has no entry yet)
    nexts: list[tuple[int, int, bytes, tuple[str, int] | None]] = []
    waiting = _cache(connection)
    if waiting is not None:
        # A key the cache holds has no entry but its tail, and no blocked one.
        unknown: list[Finished] = []
        for f in finished:
            found = waiting.take(group.id, f.key) if f.tail else UNKNOWN
            if found is UNKNOWN:
                unknown.append(f)
            elif found is not None:
                position, occur, encoded = found
                nexts.append((position, 0, encoded, (f.key, occur)))
        finished = unknown
    blocked: dict[str, tuple[int, int, bytes]] = {}
    for chunk in _chunks(sorted({f.key for f in finished})):
        firsts = sql.next_blocked.rows(connection, g=group.id, keys=listed(postgres, chunk))
        for key, position, attempt, encoded in firsts:
            blocked[key] = (position, attempt, encoded)
    tails = [f for f in finished if f.tail]
    behind = [t for t in tails if t.key in blocked]
    if behind:
        _block_waiting(connection, group, behind)
    nexts += [(position, attempt, encoded, None) for position, attempt, encoded in blocked.values()]
    fresh = [t for t in tails if t.key not in blocked]
    if fresh:
        nexts += [
            (position, 0, encoded, (key, occur))
            for key, position, occur, encoded in _next_waiting(connection, group, fresh)
        ]
    if not nexts:
        return
    # By position (unique, so no later item of a tuple is ever compared).
    nexts.sort()
    lease = to_micros(now + group.settings.ack_timeout)
    group_id = group.id
    changes: list[tuple[Any, ...]] = []
    inserts: list[tuple[Any, ...]] = []
    handed = assign(nexts, left)
    for member_id, (position, attempt, encoded, new) in handed:
        left[member_id] -= 1
        delivery_id = new_id()
        out.append((member_id, Delivery(delivery_id, attempt + 1, position, encoded)))
        if new is None:
            changes.append(
                (group_id, position, IN_FLIGHT, attempt + 1, member_id, delivery_id, lease)
            )
        else:
            key, occur = new
            inserts.append(
                (group_id, position, key, occur, IN_FLIGHT, 1, 0, member_id, delivery_id, lease, 1)
            )
    _HANDED_OUT.execute(connection, changes)
    visible = to_micros(now)
    rest = []
    # `assign` deals the items in order until no member has room: the rest are what follows.
    for position, _, _, new in nexts[len(handed) :]:
        if new is None:
            rest.append(position)
        else:
            key, occur = new
            inserts.append((group_id, position, key, occur, PENDING, 0, visible, *_NO_LEASE, 1))
    _NEW_ENTRIES.execute(connection, inserts)
    if rest:
        sql.pending_at.execute(connection, g=group_id, positions=listed(postgres, rest), now=now)


_NO_LEASE = (None, None, None)  # member_id, delivery_id, lease_until


def _block_waiting(connection: Connection, group: GroupRecord, tails: Sequence[Finished]) -> None:
    """Give the events waiting in the log behind these settled tails blocked entries.

    Their keys have blocked entries (redriven events) to hand out first; what waited behind
    the tail now waits after those, and the last of it becomes the key's tail.
    """
    rows: list[tuple[Any, ...]] = []
    for tail in tails:
        _forget(connection, group.id, tail.key)
        waiting = _all_waiting(connection, group, [tail])
        for i, (position, occur) in enumerate(waiting):
            last = i == len(waiting) - 1
            rows.append(
                (group.id, position, tail.key, occur, BLOCKED, 0, 0, None, None, None, int(last))
            )
    _NEW_ENTRIES.execute(connection, rows)


def _no_new_ids() -> str:
    raise AssertionError("no delivery is made without a member with room")


def _chunks(values: Sequence[T], size: int = 1000) -> Iterable[Sequence[T]]:
    # Bound the parameters of one statement (SQLite allows 32766).
    for start in range(0, len(values), size):
        yield values[start : start + size]


def join(
    connection: Connection, member_id: str, group_id: str, replica_id: str, now: datetime
) -> None:
    """Record a member of a group (the group exists: checked by the caller in this transaction)."""
    connection.execute(
        insert(members).values(
            id=member_id, group_id=group_id, replica_id=replica_id, heartbeat_time=now
        )
    )


def _give_back(
    connection: Connection, group: GroupRecord, where: Any, now: datetime, reason: str
) -> int:
    """Make these in-flight entries pending again now, or dead when out of attempts."""
    e = entries.c
    rows = connection.execute(
        select(e.position, e.key, e.attempt, e.tail).where(e.group_id == group.id, where)
    ).all()
    if not rows:
        return 0
    changes = [
        _dead(row.position, reason, now)
        if exhausted(row.attempt, group.settings.max_attempts)
        else _pending(row.position, now)
        for row in rows
    ]
    _change(connection, group, changes)
    if group.settings.ordering != Ordering.NONE:
        dead = [
            Finished(r.key, r.position, r.tail)
            for r, c in zip(rows, changes, strict=True)
            if c["s"] == DEAD
        ]
        # Outside a round no member is offered work: the next entries become pending.
        _hand_out_next(connection, group, dead, now, {}, _no_new_ids, [])
    return len(rows)


def _change(connection: Connection, group: GroupRecord, changes: Sequence[dict[str, Any]]) -> None:
    """Settle entries: back to pending (with a delay), or dead (with a reason)."""
    _SETTLED.execute(
        connection,
        [(group.id, c["p"], c["s"], c["v"], None, None, c["r"], c["d"]) for c in changes],
    )


def leave(
    connection: Connection,
    member_ids: Sequence[str],
    now: datetime,
    also: Iterable[str] = (),
) -> set[str]:
    """Forget these members; what they held is delivered again at once. The groups touched.

    Their groups are those of their rows, and `also` (groups with entries naming members
    whose rows are already gone); in each, the in-flight entries are a short range of the
    state index, so entries need no index on member ids.
    """
    if not member_ids:
        return set()
    e = entries.c
    touched = set(also) | set(
        connection.scalars(
            select(members.c.group_id).where(members.c.id.in_(member_ids)).distinct()
        )
    )
    for group_id in touched:
        group = by_id(connection, group_id)
        if group is not None:
            where = and_(e.state == IN_FLIGHT, e.member_id.in_(member_ids))
            if _give_back(connection, group, where, now, REASON_MAX_ATTEMPTS):
                notify(connection, group_id)
    connection.execute(delete(members).where(members.c.id.in_(member_ids)))
    return touched


def heartbeat(
    connection: Connection, replica_id: str, now: datetime, stale_before: datetime
) -> set[str]:
    """Keep this replica's members alive; reclaim any replica's stale ones. Groups touched."""
    connection.execute(
        update(members).where(members.c.replica_id == replica_id).values(heartbeat_time=now)
    )
    stale = list(
        connection.scalars(select(members.c.id).where(members.c.heartbeat_time < stale_before))
    )
    return leave(connection, stale, now)


def any_stale(connection: Connection, stale_before: datetime) -> bool:
    """Whether some member's heartbeat is older than `stale_before` (a read, for idle replicas)."""
    query = select(members.c.id).where(members.c.heartbeat_time < stale_before).limit(1)
    return connection.execute(query).first() is not None


def anything_held(connection: Connection) -> bool:
    """Whether any member is recorded or any entry is in flight (a read, at start)."""
    member = connection.execute(select(members.c.id).limit(1)).first()
    held = connection.execute(
        select(entries.c.position).where(entries.c.state == IN_FLIGHT).limit(1)
    ).first()
    return member is not None or held is not None


def leave_other_replicas(connection: Connection, replica_id: str, now: datetime) -> set[str]:
    """Forget every member of another replica (SQLite: this process is the only one)."""
    others = list(
        connection.scalars(select(members.c.id).where(members.c.replica_id != replica_id))
    )
    # Entries can name a member whose row is already gone (a crash between the two). At
    # start only: each group's in-flight range of the state index.
    orphans: list[str] = []
    orphan_groups: list[str] = []
    for group_id in connection.scalars(select(groups.c.id)):
        named = connection.scalars(
            select(entries.c.member_id)
            .where(entries.c.group_id == group_id, entries.c.state == IN_FLIGHT)
            .where(~exists().where(members.c.id == entries.c.member_id))
            .distinct()
        )
        found = [m for m in named if m is not None]
        if found:
            orphans += found
            orphan_groups.append(group_id)
    return leave(connection, [*others, *orphans], now, also=orphan_groups)


@dataclass
class Round:
    """What one dispatch round did for one group on this replica."""

    # False: the group was deleted; its members' streams end.
    exists: bool = True
    # Per member: the delivery ids it settled (durable now) and those it sent too late.
    settled: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    deliveries: list[tuple[str, Delivery]] = field(default_factory=list)
    # When something becomes due (a nack's delay, a lease), if anything is waiting.
    next_due: datetime | None = None
    # The log was read up to a limit with slots still free: another round should follow.
    more: bool = False


@dataclass(frozen=True)
class MemberOps:
    """One member's requests since the last round."""

    acks: tuple[str, ...] = ()
    nacks: tuple[tuple[str, timedelta | None], ...] = ()
    rejects: tuple[tuple[str, str], ...] = ()
    extends: tuple[str, ...] = ()
    # The position each named delivery was of (the member keeps them): entries are found by
    # their primary key, with no index on delivery ids to keep up at every write.
    positions: Mapping[str, int] = field(default_factory=dict)


def dispatch(
    connection: Connection,
    group_id: str,
    now: datetime,
    ops: Mapping[str, MemberOps],
    rooms: Mapping[str, int],
    new_id: Any,
    *,
    expire: bool = True,
) -> Round:
    """One round: apply the members' requests, expire leases, scan the log, hand out work.

    `expire`: look for expired leases (the caller does so when one may be due, not at every
    round: rounds run at every commit and every ack, and each statement costs a round trip).
    """
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.execute(_CUSTOM_PLANS)
    row = connection.execute(round_statements(postgres).by_id, {"group_id": group_id}).first()
    if row is None:
        return Round(exists=False)
    group = _record(row)
    out = Round()
    out.settled, finished = _settle(connection, group, ops, now)
    e = entries.c
    if expire:
        _give_back(
            connection,
            group,
            and_(e.state == IN_FLIGHT, e.lease_until <= now),
            now,
            REASON_ACK_TIMEOUT,
        )
    left = {member_id: room for member_id, room in rooms.items() if room > 0}
    # Entries due again first (their positions are before any new event), then the next
    # events of the keys just settled, then new events.
    out.deliveries = _redeliver(connection, group, now, left, new_id)
    if finished and group.settings.ordering != Ordering.NONE:
        _hand_out_next(connection, group, finished, now, left, new_id, out.deliveries)
    out.more = _take_new(connection, group, now, left, new_id, out.deliveries)
    if any(left.values()) or expire:
        # Idle (or a periodic round): when is the next nack delay or lease due?
        out.next_due = _next_due(connection, group, now)
    return out


def _settle(
    connection: Connection, group: GroupRecord, ops: Mapping[str, MemberOps], now: datetime
) -> tuple[dict[str, tuple[list[str], list[str]]], list[Finished]]:
    """Every member's acks, nacks, rejects and extends, in one read and one write of each kind.

    Per member: the delivery ids it settled (durable once this commits) and those it sent too
    late (the delivery was given back meanwhile). Then the keys whose heads were acknowledged
    or dead-lettered: their next events may go (the caller hands them out).
    """
    e = entries.c
    positions = sorted({p for member_ops in ops.values() for p in member_ops.positions.values()})
    if not positions:
        return {member_id: ([], []) for member_id in ops}, []
    # Still this delivery's: not delivered again meanwhile (a redelivery has a new id).
    postgres = connection.dialect.name == "postgresql"
    sql = round_statements(postgres)
    current: dict[str, tuple[int, int, str, int]] = {
        delivery_id: (position, attempt, key, tail)
        for delivery_id, position, attempt, key, entry_state, tail in sql.at_positions.rows(
            connection, g=group.id, positions=listed(postgres, positions)
        )
        if entry_state in _ACTIVE
    }
    out: dict[str, tuple[list[str], list[str]]] = {}
    ack_positions: list[int] = []
    done: list[Finished] = []
    # Without ordering no key waits: nothing to hand on (a tenth of a NONE round's work).
    ordered = group.settings.ordering != Ordering.NONE
    changes: list[dict[str, Any]] = []
    extended: dict[str, list[int]] = {}
    for member_id, member_ops in ops.items():
        settled: dict[str, None] = {}
        for delivery_id in member_ops.acks:
            entry = current.get(delivery_id)
            if entry is not None and delivery_id not in settled:
                ack_positions.append(entry[0])
                if ordered:
                    done.append(Finished(entry[2], entry[0], entry[3]))
                settled[delivery_id] = None
        for delivery_id, delay in member_ops.nacks:
            entry = current.get(delivery_id)
            if entry is None or delivery_id in settled:
                continue
            position, attempt, key, tail = entry
            if exhausted(attempt, group.settings.max_attempts):
                changes.append(_dead(position, REASON_MAX_ATTEMPTS, now))
                done.append(Finished(key, position, tail))
            else:
                ack_timeout = group.settings.ack_timeout
                wait = delay if delay is not None else backoff(attempt, ack_timeout)
                changes.append(_pending(position, now + wait))
            settled[delivery_id] = None
        for delivery_id, reason in member_ops.rejects:
            entry = current.get(delivery_id)
            if entry is None or delivery_id in settled:
                continue
            changes.append(_dead(entry[0], reason, now))
            done.append(Finished(entry[2], entry[0], entry[3]))
            settled[delivery_id] = None
        still = [current[i][0] for i in member_ops.extends if i in current and i not in settled]
        if still:
            extended[member_id] = still
        answered = [
            *member_ops.acks,
            *(i for i, _ in member_ops.nacks),
            *(i for i, _ in member_ops.rejects),
        ]
        out[member_id] = (list(settled), [i for i in dict.fromkeys(answered) if i not in settled])
    if ack_positions:
        sql.delete_at.execute(connection, g=group.id, positions=listed(postgres, ack_positions))
    if changes:
        _change(connection, group, changes)
        notify(connection, group.id)
    for member_id, still in extended.items():
        connection.execute(
            update(entries)
            .where(
                e.group_id == group.id,
                _among(connection, e.position, still),
                e.state == IN_FLIGHT,
                e.member_id == member_id,
            )
            .values(lease_until=now + group.settings.ack_timeout)
        )
    return out, done


def at_positions(postgres: bool, group_id: str, positions: Sequence[int]) -> Any:
    """A group's entries at these positions (primary-key probes): those a round's requests name.

    The statement a round runs, with these values bound (to EXPLAIN it).
    """
    return round_statements(postgres).at_positions.statement.params(
        g=group_id, positions=listed(postgres, positions)
    )


def _pending(position: int, visible_at: datetime) -> dict[str, Any]:
    return {"p": position, "s": PENDING, "v": visible_at, "r": None, "d": None}


def _dead(position: int, reason: str, now: datetime) -> dict[str, Any]:
    return {"p": position, "s": DEAD, "v": now, "r": reason, "d": now}


def _take_new(
    connection: Connection,
    group: GroupRecord,
    now: datetime,
    left: dict[str, int],
    new_id: Any,
    out: list[tuple[str, Delivery]],
) -> bool:
    """Hand out log events after read_position to the members' free slots; True: go on.

    An event gets its entry only here, as it is delivered (IN_FLIGHT). With per-key ordering,
    an event whose key has an unsettled entry waits: in the log, behind the key's tail entry,
    with no write at all; or, when the key's unsettled entries have no tail (they were
    redriven), in a BLOCKED entry that becomes the tail. Events after the last one taken stay
    in the log (they count as pending) until a member has room: so an event costs one insert
    and one delete.
    """
    room = sum(left.values())
    if room <= 0:
        return False
    postgres = connection.dialect.name == "postgresql"
    sql = round_statements(postgres)
    head = int(sql.head.scalar(connection) or 0)
    if head <= group.read_position:
        return False
    ordering = group.settings.ordering
    # With ordering, some events read may wait behind their keys: read ahead of the room.
    limit = room if ordering == Ordering.NONE else min(SCAN_PAGE, max(4 * room, 100))
    # Rows as plain tuples, the time as stored: each is copied into an entry as it is.
    rows = log_page(group.settings.event_filter).rows(
        connection, after=group.read_position, limit=limit, up_to=head
    )
    read = head if len(rows) < limit else rows[-1][0]
    taken: list[tuple[int, str, int, bytes]] = []
    blocked: list[tuple[int, str, int]] = []
    if ordering == Ordering.NONE:
        # Read no further than the room: every row is taken.
        taken = [(position, "", occur, encoded) for position, _, _, occur, encoded in rows]
    else:
        keyed = [
            (position, ordering_key(ordering, session_id, profile_id), occur, encoded)
            for position, session_id, profile_id, occur, encoded in rows
        ]
        # Per key with an unsettled entry: whether one is its tail. A key the cache holds has.
        waiting = _cache(connection)
        keys = {key for _, key, _, _ in keyed}
        headed = {} if waiting is None else {k: True for k in keys if waiting.holds(group.id, k)}
        for chunk in _chunks(sorted(keys - set(headed))):
            found = sql.headed.rows(connection, g=group.id, keys=listed(postgres, chunk))
            headed.update((key, bool(tail)) for key, tail in found)
        for position, key, occur, encoded in keyed:
            has_tail = headed.get(key)
            if has_tail:
                # Waits in the log behind the tail.
                if waiting is not None:
                    waiting.add(group.id, key, (position, occur, encoded))
                continue
            if has_tail is False:
                blocked.append((position, key, occur))
                headed[key] = True
                continue
            if len(taken) == room:
                # No slot for this one: it and what follows stay in the log.
                read = position - 1
                break
            headed[key] = True
            taken.append((position, key, occur, encoded))
            if waiting is not None:
                waiting.start(group.id, key)
    lease = to_micros(now + group.settings.ack_timeout)
    tail = int(ordering != Ordering.NONE)
    values: list[tuple[Any, ...]] = []
    group_id = group.id
    for member_id, (position, key, occur, encoded) in assign(taken, left):
        left[member_id] -= 1
        delivery_id = new_id()
        out.append((member_id, Delivery(delivery_id, 1, position, encoded)))
        values.append(
            (group_id, position, key, occur, IN_FLIGHT, 1, 0, member_id, delivery_id, lease, tail)
        )
    values += [
        (group_id, position, key, occur, BLOCKED, 0, 0, None, None, None, 1)
        for position, key, occur in blocked
    ]
    _NEW_ENTRIES.execute(connection, values)
    sql.set_read.execute(connection, g=group.id, read=read)
    # Every row read was taken or waits, and there may be more: another round at once.
    return len(rows) == limit and read == rows[-1][0] and any(left.values())


def eligible(group: GroupRecord, now: datetime, limit: int) -> Any:
    """The dispatch query: pending entries due now, in position order, with their events.

    With per-key ordering only a key's first unsettled entry is ever pending (the rest are
    BLOCKED), so no per-key condition is needed here. The statement a round runs, with these
    values bound (to EXPLAIN it).
    """
    return round_statements(False).due.statement.params(g=group.id, now=now, limit=limit)


def _redeliver(
    connection: Connection,
    group: GroupRecord,
    now: datetime,
    left: dict[str, int],
    new_id: Any,
) -> list[tuple[str, Delivery]]:
    """Deliver entries due again (nacked, timed out, given back, redriven, promoted)."""
    wanted = sum(left.values())
    if wanted <= 0:
        return []
    sql = round_statements(connection.dialect.name == "postgresql")
    rows = sql.due.rows(connection, g=group.id, now=now, limit=wanted)
    if not rows:
        return []
    lease = to_micros(now + group.settings.ack_timeout)
    out: list[tuple[str, Delivery]] = []
    changes: list[tuple[Any, ...]] = []
    for member_id, (position, attempt, encoded) in assign(rows, left):
        left[member_id] -= 1
        delivery = Delivery(new_id(), attempt + 1, position, encoded)
        out.append((member_id, delivery))
        changes.append(
            (
                group.id,
                position,
                IN_FLIGHT,
                delivery.attempt,
                member_id,
                delivery.delivery_id,
                lease,
            )
        )
    _HANDED_OUT.execute(connection, changes)
    return out


def _next_due(connection: Connection, group: GroupRecord, now: datetime) -> datetime | None:
    sql = round_statements(connection.dialect.name == "postgresql")
    waiting = sql.next_visible.scalar(connection, g=group.id, now=now)
    lease = sql.next_lease.scalar(connection, g=group.id)
    due = [_as_time(t) for t in (waiting, lease) if t is not None]
    return min(due, default=None)


def _as_time(value: Any) -> datetime:
    # An aggregate over a UtcMicros column comes back as the raw integer.
    if isinstance(value, datetime):
        return value
    converted = UtcMicros().process_result_value(value, cast(Any, None))
    assert converted is not None
    return converted


def group_ids(connection: Connection, ids: Iterable[str]) -> set[str]:
    """Which of these groups still exist."""
    wanted = list(ids)
    if not wanted:
        return set()
    return set(connection.scalars(select(groups.c.id).where(groups.c.id.in_(wanted))))
