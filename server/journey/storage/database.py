"""Opening the database: the engine, SQLite's pragmas, the schema and the session factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from journey.storage.schema import Base


@dataclass(frozen=True)
class Database:
    """The engine and the one session factory built from it."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite database."""
        return self.engine.dialect.name == "sqlite"

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


SYNCHRONOUS_MODES = ("NORMAL", "FULL")


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
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


async def open_database(url: str, *, sqlite_synchronous: str = "FULL") -> Database:
    """Connect, create the tables that are missing, and return the database."""
    kwargs: dict[str, Any] = {}
    if make_url(url).get_backend_name() == "postgresql":
        # A database that does not answer must fail calls with UNAVAILABLE in seconds, not
        # hold them for asyncpg's default minute.
        kwargs.update(
            pool_size=10, max_overflow=10, pool_pre_ping=True, connect_args={"timeout": 5}
        )
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(sqlite_synchronous))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    except BaseException:
        await engine.dispose()
        raise
    return Database(engine, async_sessionmaker(engine, expire_on_commit=False))
