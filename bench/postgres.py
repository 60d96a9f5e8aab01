"""The PostgreSQL columns' databases: one fresh database per scenario and column, dropped after."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PROBE_SECONDS = 3.0
ADMIN_SECONDS = 30.0
# PostgreSQL cuts identifiers at 63 bytes; the name must stay unique after that.
MAX_NAME = 63


def admin_url() -> URL:
    """Where databases are created (JOURNEY_BENCH_POSTGRES_URL), always through asyncpg.

    Any database on the server will do for CREATE DATABASE; asyncpg is the one PostgreSQL
    driver Journey installs, so a plain postgresql:// URL is taken to mean it.
    """
    url = make_url(os.environ.get("JOURNEY_BENCH_POSTGRES_URL", DEFAULT_URL))
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"JOURNEY_BENCH_POSTGRES_URL is not a PostgreSQL URL: {url!r}")
    return url.set(drivername="postgresql+asyncpg")


def database_name(run: str, scenario: str, column: str) -> str:
    """A database name of lower-case letters, digits and _ that says what it is for.

    `run` tells concurrent runs apart (the runner passes its pid and a random suffix), so it
    is kept whole at the end, where a cut would lose the scenario and column instead.
    """
    what = re.sub(r"[^a-z0-9]+", "_", f"{scenario}_{column}".lower()).strip("_")
    tail = "_" + re.sub(r"[^a-z0-9]+", "_", run.lower()).strip("_")
    head = "journey_bench_" + what
    return head[: MAX_NAME - len(tail)] + tail


def url_of(admin: URL, name: str) -> str:
    """The SQLAlchemy URL of database `name` on the admin URL's server, password and all."""
    return admin.set(database=name).render_as_string(hide_password=False)


async def _run(admin: URL, statements: list[str], seconds: float) -> None:
    # CREATE and DROP DATABASE refuse to run inside a transaction.
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with asyncio.timeout(seconds), engine.connect() as connection:
            for statement in statements:
                await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


def create_statement(name: str) -> str:
    """CREATE DATABASE for a name made by database_name (quoted all the same)."""
    return f'CREATE DATABASE "{name}"'


def drop_statement(name: str) -> str:
    """DROP DATABASE that ends the connections a stopped server may have left behind."""
    return f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


def unreachable(admin: URL, seconds: float = PROBE_SECONDS) -> str | None:
    """None if PostgreSQL answers at `admin` within `seconds`; else why not."""
    try:
        asyncio.run(_run(admin, ["SELECT 1"], seconds))
    except (OSError, TimeoutError, ImportError) as error:
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    except Exception as error:  # asyncpg's own errors: authentication, no such database
        return f"{type(error).__name__}: {error}"
    return None


@contextmanager
def fresh_database(admin: URL, name: str) -> Iterator[str]:
    """Create database `name`, yield its URL, and drop it whatever happened."""
    asyncio.run(_run(admin, [create_statement(name)], ADMIN_SECONDS))
    try:
        yield url_of(admin, name)
    finally:
        asyncio.run(_run(admin, [drop_statement(name)], ADMIN_SECONDS))


def status(*, wanted: bool, no_postgres: bool) -> dict[str, Any]:
    """The PostgreSQL columns' server and why they are left out (None: they run); says so."""
    try:
        admin = admin_url()
    except ValueError as error:
        return {"url": None, "skipped": str(error)}
    url = admin.render_as_string(hide_password=True)
    if no_postgres:
        return {"url": url, "skipped": "--no-postgres"}
    if not wanted:
        return {"url": url, "skipped": "no scenario chosen"}
    reason = unreachable(admin)
    if reason is not None:
        print(
            f"PostgreSQL not reachable at {url} ({reason}): the PostgreSQL columns are skipped",
            flush=True,
        )
    return {"url": url, "skipped": reason}


def worker_counts(text: str) -> list[int]:
    """`--workers 1,2` -> [1, 2]: a PostgreSQL column for each count of worker processes."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"expected worker counts such as 1,2, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"expected distinct counts of at least 1, got {text!r}")
    return counts
