"""Opening the database: the engines, SQLite's pragmas, the migrations and the session factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from journey.domain.model import Encode
from journey.storage import migrate


@dataclass(frozen=True)
class Database:
    """The engine, the one session factory built from it, and on SQLite the writer's engine."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # SQLite only: a synchronous engine on the same file for the writer's own thread. Through
    # aiosqlite every statement costs several hand-offs between the event loop and a driver
    # thread; the writer runs a whole group commit in its thread in one.
    writer_engine: Engine | None = None
    # What opening it migrated (storage/migrate.py).
    migration: migrate.Outcome | None = None

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite database."""
        return self.engine.dialect.name == "sqlite"

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        """The synchronous engines underneath, where connection events are listened for."""
        if self.writer_engine is None:
            return (self.engine.sync_engine,)
        return (self.engine.sync_engine, self.writer_engine)

    async def close(self) -> None:
        """Close every pooled connection (the engines open new ones if asked again)."""
        if self.writer_engine is not None:
            self.writer_engine.dispose()
        await self.engine.dispose()


SYNCHRONOUS_MODES = ("NORMAL", "FULL")


def sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    """The "connect" listener that sets WAL, `synchronous` and the busy timeout on SQLite."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers (subscriptions, GetSession) proceed while the writer commits.
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode, NORMAL writes each commit to the log without waiting for the disk:
        # a process crash loses nothing committed, a power loss may lose the last commits.
        # FULL waits for the disk on every commit (see the README's Durability).
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return on_connect


async def open_database(
    url: str, *, sqlite_synchronous: str = "FULL", encode: Encode | None = None
) -> Database:
    """Connect, apply pending schema migrations (storage/migrate.py), and return the database.

    `encode` is what an older database's stored events are encoded with (migrate.upgrade).
    """
    kwargs: dict[str, Any] = {}
    if make_url(url).get_backend_name() == "postgresql":
        # A database that does not answer must fail calls with UNAVAILABLE in seconds, not
        # hold them for asyncpg's default minute.
        kwargs.update(
            pool_size=10, max_overflow=10, pool_pre_ping=True, connect_args={"timeout": 5}
        )
        # Whatever the server's default: the writer relies on each statement taking a fresh
        # snapshot, after the lock it waited for (storage/writer.py).
        kwargs["isolation_level"] = "READ COMMITTED"
    engine = create_async_engine(url, **kwargs)
    writer_engine = None
    if engine.dialect.name == "sqlite":
        pragmas = sqlite_pragmas(sqlite_synchronous)
        event.listen(engine.sync_engine, "connect", pragmas)
        if _is_sqlite_file(engine.url):
            # pysqlite keeps 128 prepared statements per connection by default; the writer's
            # lookups and many-row INSERTs come in several sizes each (storage/bulk.py).
            writer_engine = create_engine(
                engine.url.set(drivername="sqlite+pysqlite"),
                connect_args={"cached_statements": 512},
            )
            event.listen(writer_engine, "connect", pragmas)
    try:
        migration = await migrate.upgrade(engine, encode)
    except BaseException:
        if writer_engine is not None:
            writer_engine.dispose()
        await engine.dispose()
        raise
    return Database(
        engine, async_sessionmaker(engine, expire_on_commit=False), writer_engine, migration
    )


def _is_sqlite_file(url: URL) -> bool:
    # An in-memory database is private to its connection: a second engine would see another.
    return url.database not in (None, "", ":memory:") and "mode=memory" not in str(url)
