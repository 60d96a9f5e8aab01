"""Dispatch rounds alone, no grpc: `python -m bench.group_rounds [N] [none|session] [FULL|NORMAL]`.

Seeds N system events in a fresh SQLite file, creates a group from the beginning, and runs
`storage.groups.dispatch` rounds as the SQLite writer of `journey serve` would (its cache of
waiting events, its collector settings): 4 members with 100 slots each, every delivery
acknowledged in the next round. It prints events/s and milliseconds per round: the cost of the
rounds themselves, apart from grpc and the event loop (docs/performance.md).
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, event

from bench import seed
from journey import runtime
from journey.domain.groups import BEGINNING, GroupSettings, Ordering
from journey.domain.model import SystemEventFilter
from journey.groups import next_id
from journey.storage import groups
from journey.storage.database import sqlite_pragmas
from journey.storage.waiting_cache import INFO_KEY, WaitingCache

MEMBERS = 4
ROOM = 100


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    ordering = Ordering.SESSION if sys.argv[2:3] == ["session"] else Ordering.NONE
    # sqlite_synchronous: the server's default, FULL, waits for the disk at each commit.
    synchronous = sys.argv[3] if len(sys.argv) > 3 else "FULL"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "journey.db"
        # Creates the schema (migrations) and stores the events as the writer would.
        seed.system_events(f"sqlite+aiosqlite:///{path}", count, datetime.now(UTC))
        engine = create_engine(f"sqlite+pysqlite:///{path}")
        event.listen(engine, "connect", sqlite_pragmas(synchronous))
        now = datetime.now(UTC)
        settings = GroupSettings(SystemEventFilter(), timedelta(seconds=30), 5, ordering)
        with engine.begin() as connection:
            groups.create(connection, "group", "g", settings, BEGINNING, now)
        held: dict[str, dict[str, int]] = {f"m{i}": {} for i in range(MEMBERS)}
        acked: list[int] = []
        rounds = 0
        waiting = WaitingCache()
        # The collector as `journey serve` sets it: at the default thresholds it took a few
        # percent of a SESSION round's instructions that the server does not spend.
        runtime.tune()
        runtime.settle_heap()
        start = time.perf_counter()
        while len(acked) < count:
            ops = {
                member: groups.MemberOps(acks=tuple(ids), positions=dict(ids))
                for member, ids in held.items()
                if ids
            }
            with engine.begin() as connection:
                connection.info[INFO_KEY] = waiting
                result = groups.dispatch(
                    connection, "group", now, ops, dict.fromkeys(held, ROOM), next_id, expire=False
                )
            for member, (settled, _) in result.settled.items():
                acked += [held[member][delivery_id] for delivery_id in settled]
            held = {member: {} for member in held}
            for member, delivery in result.deliveries:
                held[member][delivery.delivery_id] = delivery.position
            rounds += 1
        elapsed = time.perf_counter() - start
        engine.dispose()
    if sorted(acked) != list(range(1, count + 1)):
        raise SystemExit(f"{len(acked)} acks settled, {len(set(acked))} events: lost or repeated")
    print(
        f"{ordering.name}, {synchronous}: {count / elapsed:,.0f} events/s, {rounds} rounds, "
        f"{elapsed / rounds * 1000:.2f} ms per round"
    )


if __name__ == "__main__":
    main()
