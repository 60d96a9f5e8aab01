"""Dispatch rounds against a model: random acks, nacks, rejects, timeouts, redrives and new events.

Storage alone (no grpc, no writer): each step is one transaction, as the writer runs it. The
model knows every event's fate, so after every round it checks what a member may be given
(never two events of one key at once, never one before an earlier event of its key is
settled), and at the end that every event was acknowledged exactly once or dead-lettered, and
that the group's counts (GetConsumerGroup) agree with it at every step.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from journey.api.encoding import encode
from journey.domain.groups import BEGINNING, GroupSettings, Ordering, ordering_key
from journey.domain.model import SystemEvent, SystemEventFilter, SystemEventType
from journey.storage import groups as storage
from journey.storage import statements
from journey.storage.database import open_database
from journey.storage.records import values
from journey.storage.waiting_cache import INFO_KEY, WaitingCache

T = TypeVar("T")
ACK_TIMEOUT = timedelta(seconds=10)
MAX_ATTEMPTS = 3
MEMBERS = ("m1", "m2", "m3")
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Event:
    position: int
    key: str
    # waiting (in the log or pending), flight, acked or dead
    status: str = "waiting"
    attempts: int = 0
    acked: int = 0
    redriven: bool = False


@dataclass
class Model:
    rng: random.Random
    ordering: Ordering
    events: dict[int, Event] = field(default_factory=dict)
    # delivery id -> (member, position, attempt)
    held: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    now: datetime = START
    leases: dict[int, datetime] = field(default_factory=dict)

    def new_events(self, first: int, count: int) -> list[SystemEvent]:
        out = []
        for position in range(first, first + count):
            n = self.rng.randrange(5)
            # Events without a session are keyed by their profile with SESSION ordering.
            session_id = "" if n == 4 else f"s{n}"
            event = SystemEvent(
                position=position,
                id=f"00000000-0000-4000-8000-{position:012d}",
                type=SystemEventType.VISIT_STARTED,
                occur_time=self.now,
                profile_id=f"p{n % 2}",
                session_id=session_id,
                source_id="model",
                properties={},
            )
            key = ordering_key(self.ordering, event.session_id, event.profile_id)
            self.events[position] = Event(position, key)
            out.append(event)
        return out

    def delivered(self, member: str, delivery: Any) -> None:
        event = self.events[delivery.position]
        assert event.status == "waiting", (event, "delivered while not waiting")
        if self.ordering != Ordering.NONE:
            for other in self.events.values():
                if other.key != event.key or other is event:
                    continue
                assert other.status != "flight", (event, other, "two of one key in flight")
                # An event redriven while a later one of its key was under way waits until
                # that one is settled, through its redeliveries.
                head = event.attempts >= 1 and other.redriven
                if other.position < event.position and not head:
                    assert other.status in ("acked", "dead"), (event, other, "out of order")
        event.attempts += 1
        assert delivery.attempt == event.attempts, (event, delivery.attempt)
        event.status = "flight"
        self.held[delivery.delivery_id] = (member, event.position, delivery.attempt)
        self.leases[event.position] = self.now + ACK_TIMEOUT

    def finish(self, position: int, status: str) -> None:
        event = self.events[position]
        event.status = status
        if status == "acked":
            event.acked += 1
        if status == "waiting" and event.attempts >= MAX_ATTEMPTS:
            event.status = "dead"
        self.leases.pop(position, None)


async def run_step(
    engine: AsyncEngine, work: Callable[[Connection], T], cache: WaitingCache | None = None
) -> T:
    async with engine.begin() as connection:
        # As the writer hands its cache to every transaction on SQLite.
        connection.info[INFO_KEY] = cache
        return await connection.run_sync(work)


async def append(engine: AsyncEngine, events: list[SystemEvent]) -> None:
    rows = [values(e) | {"encoded": encode(e)} for e in events]
    await run_step(engine, lambda c: c.execute(insert(statements.system_events), rows))


async def run_model(url: str, seed: int, ordering: Ordering, steps: int, cached: bool) -> None:
    rng = random.Random(seed)
    model = Model(rng, ordering)
    database = await open_database(url, encode=encode)
    cache = WaitingCache(capacity=rng.choice([3, 1000])) if cached else None

    async def step(work: Callable[[Connection], T]) -> T:
        return await run_step(database.engine, work, cache)

    ids = (f"delivery-{i}" for i in itertools.count())
    settings = GroupSettings(SystemEventFilter(), ACK_TIMEOUT, MAX_ATTEMPTS, ordering)
    last = 0

    async def add(count: int) -> None:
        nonlocal last
        if not count:
            return
        await append(database.engine, model.new_events(last + 1, count))
        last += count

    async def round_(
        ops: dict[str, storage.MemberOps], expire: bool, room: int | None = None
    ) -> storage.Round:
        rooms = {m: rng.randrange(0, 3) if room is None else room for m in MEMBERS}
        now = model.now
        out = await step(
            lambda c: storage.dispatch(c, "g", now, ops, rooms, lambda: next(ids), expire=expire),
        )
        return out

    try:
        await add(rng.randrange(0, 6))
        await step(lambda c: storage.create(c, "g", "g", settings, BEGINNING, START))
        for _ in range(steps):
            action = rng.random()
            if action < 0.25:
                await add(rng.randrange(1, 6))
                continue
            if action < 0.27 and cache is not None:
                # A restart (or a failed transaction): the cache starts empty.
                cache.clear()
                continue
            if action < 0.3:
                count = await step(lambda c: storage.redrive(c, "g", model.now))
                dead = [e for e in model.events.values() if e.status == "dead"]
                assert count == len(dead)
                for e in dead:
                    e.status, e.attempts, e.redriven = "waiting", 0, True
                continue
            expire = False
            if action < 0.38:
                # Every lease runs out: each held event is given back, or dead.
                model.now += ACK_TIMEOUT + timedelta(seconds=1)
                expire = True
            ops = plan_ops(model, rng)
            out = await round_(ops, expire)
            apply_round(model, ops, out, expire)
            await check_counts(database.engine, model)
        # Drain: every member acks all it holds, with room, until nothing more comes.
        for _ in range(500):
            await step(lambda c: storage.redrive(c, "g", model.now))
            for e in model.events.values():
                if e.status == "dead":
                    e.status, e.attempts, e.redriven = "waiting", 0, True
            ops = {m: ack_all(model, m) for m in MEMBERS}
            out = await round_(ops, expire=False, room=10)
            apply_round(model, ops, out, expire=False)
            if not out.deliveries and not model.held:
                break
        fates = {e.position: (e.status, e.acked) for e in model.events.values()}
        assert fates == {p: ("acked", 1) for p in model.events}
        await check_counts(database.engine, model)
    finally:
        await database.close()


def ack_all(model: Model, member: str) -> storage.MemberOps:
    mine = {d: p for d, (m, p, _) in model.held.items() if m == member}
    return storage.MemberOps(acks=tuple(mine), positions=mine)


def plan_ops(model: Model, rng: random.Random) -> dict[str, storage.MemberOps]:
    ops: dict[str, storage.MemberOps] = {}
    for member in MEMBERS:
        acks: list[str] = []
        nacks: list[tuple[str, timedelta | None]] = []
        rejects: list[tuple[str, str]] = []
        positions: dict[str, int] = {}
        for delivery_id, (m, position, _) in model.held.items():
            if m != member:
                continue
            roll = rng.random()
            if roll < 0.5:
                acks.append(delivery_id)
            elif roll < 0.6:
                nacks.append((delivery_id, timedelta(0)))
            elif roll < 0.65:
                rejects.append((delivery_id, "model"))
            else:
                continue
            positions[delivery_id] = position
        ops[member] = storage.MemberOps(
            acks=tuple(acks), nacks=tuple(nacks), rejects=tuple(rejects), positions=positions
        )
    return ops


def apply_round(
    model: Model, ops: dict[str, storage.MemberOps], out: storage.Round, expire: bool
) -> None:
    for member, member_ops in ops.items():
        settled, ignored = out.settled.get(member, ([], []))
        assert ignored == [], ignored
        assert sorted(settled) == sorted(member_ops.positions), (member, settled)
        for delivery_id in member_ops.acks:
            model.finish(model.held.pop(delivery_id)[1], "acked")
        for delivery_id, _ in member_ops.nacks:
            model.finish(model.held.pop(delivery_id)[1], "waiting")
        for delivery_id, _ in member_ops.rejects:
            model.finish(model.held.pop(delivery_id)[1], "dead")
    if expire:
        for delivery_id in list(model.held):
            model.finish(model.held.pop(delivery_id)[1], "waiting")
    for member, delivery in out.deliveries:
        model.delivered(member, delivery)


async def check_counts(engine: AsyncEngine, model: Model) -> None:
    def read(connection: Connection) -> Any:
        record = storage.by_id(connection, "g")
        assert record is not None
        return storage.state(connection, record, START)

    state = await run_step(engine, read)
    by_status: dict[str, list[int]] = {}
    for e in model.events.values():
        by_status.setdefault(e.status, []).append(e.position)
    unsettled = sorted(by_status.get("waiting", []) + by_status.get("flight", []))
    assert state.pending_count == len(unsettled)
    assert state.in_flight_count == len(by_status.get("flight", []))
    assert state.dead_letter_count == len(by_status.get("dead", []))
    if unsettled:
        assert state.ack_floor == min(unsettled) - 1


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ordering", [Ordering.SESSION, Ordering.PROFILE, Ordering.NONE])
async def test_rounds_keep_every_rule_of_the_model(
    database_url: str, ordering: Ordering, seed: int
) -> None:
    # Half the SQLite runs with the writer's cache of waiting events, as `journey serve` has it.
    cached = database_url.startswith("sqlite") and seed % 2 == 0
    await run_model(database_url, seed, ordering, steps=80, cached=cached)
