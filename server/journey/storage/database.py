"""Opening the database: the engine, SQLite's pragmas, the schema and the session factory."""

from __future__ import annotations

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


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (subscriptions, GetSession) proceed while the writer commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before Track answers, even across a power loss.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


async def open_database(url: str) -> Database:
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
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    except BaseException:
        await engine.dispose()
        raise
    return Database(engine, async_sessionmaker(engine, expire_on_commit=False))
