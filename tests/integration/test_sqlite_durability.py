"""SQLite's synchronous setting: FULL by default, NORMAL when configured, anything else refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from journey.config import ConfigError, Settings
from journey.storage.database import open_database

# PRAGMA synchronous reports 1 for NORMAL and 2 for FULL.
LEVELS = {"NORMAL": 1, "FULL": 2}


@pytest.mark.parametrize("mode", ["NORMAL", "FULL"])
async def test_each_connection_runs_in_wal_with_the_configured_synchronous(
    tmp_path: Path, mode: str
) -> None:
    database = await open_database(
        f"sqlite+aiosqlite:///{tmp_path / 'j.db'}", sqlite_synchronous=mode
    )
    try:
        async with database.engine.connect() as connection:
            synchronous = (await connection.execute(text("PRAGMA synchronous"))).scalar()
            journal = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
        # The writer commits through its own engine: the setting must hold there above all.
        assert database.writer_engine is not None
        with database.writer_engine.connect() as writer:
            writer_synchronous = writer.execute(text("PRAGMA synchronous")).scalar()
            writer_journal = writer.execute(text("PRAGMA journal_mode")).scalar()
    finally:
        await database.close()
    assert (synchronous, journal) == (LEVELS[mode], "wal")
    assert (writer_synchronous, writer_journal) == (LEVELS[mode], "wal")


def test_the_default_is_full_and_only_normal_or_full_are_accepted() -> None:
    assert Settings().sqlite_synchronous == "FULL"
    assert Settings(sqlite_synchronous="normal").sqlite_synchronous == "NORMAL"
    with pytest.raises(ConfigError, match=r"^sqlite_synchronous: expected one of NORMAL, FULL"):
        Settings(sqlite_synchronous="OFF")
