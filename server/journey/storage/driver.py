"""The writer's hottest statements: on pysqlite, run on the driver's own connection.

SQLAlchemy's execution of a statement (its execution context, the cursor result and its
metadata) cost a group commit of one Track call more than SQLite's own work for it; the
writer's bulk writes, lookups and consumer-group rounds need none of it, their SQL being
compiled once ahead (storage/bulk.py, storage/lookup.py, storage/prepared.py). Other
drivers (asyncpg, aiosqlite) go through `Connection.exec_driver_sql`, which bridges them to
this synchronous code. Either way a driver's error arrives as SQLAlchemy's exception for it
(IntegrityError, OperationalError...), which is what storage/failures.py sorts. What is run
here fires no SQLAlchemy events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError


def rows(connection: Connection, sql: str, parameters: Sequence[Any]) -> Sequence[Any]:
    """The rows of a query, run with positional `parameters`."""
    raw = _pysqlite(connection)
    if raw is None:
        return connection.exec_driver_sql(sql, tuple(parameters)).all()
    try:
        found: list[Any] = raw.execute(sql, parameters).fetchall()
    except raw.Error as error:
        raise _translated(error, sql, parameters) from error
    return found


def execute(connection: Connection, sql: str, parameters: Sequence[Any]) -> None:
    """Run a statement that returns no rows, with positional `parameters`."""
    _write(connection, sql, parameters, many=False)


def execute_many(connection: Connection, sql: str, many: Sequence[Sequence[Any]]) -> None:
    """Run a statement that returns no rows once per row of positional parameters."""
    _write(connection, sql, many, many=True)


def _write(connection: Connection, sql: str, parameters: Sequence[Any], *, many: bool) -> None:
    raw = _pysqlite(connection)
    if raw is None:
        connection.exec_driver_sql(sql, list(parameters) if many else tuple(parameters))
        return
    try:
        if many:
            raw.executemany(sql, parameters)
        else:
            raw.execute(sql, parameters)
    except raw.Error as error:
        raise _translated(error, sql, parameters) from error


def _pysqlite(connection: Connection) -> Any:
    if connection.dialect.driver != "pysqlite":
        return None
    return connection.connection.driver_connection


def _translated(error: Exception, sql: str, parameters: Any) -> StatementError:
    # The subclass SQLAlchemy itself raises for it: IntegrityError, OperationalError...
    return DBAPIError.instance(sql, parameters, error, sqlite3.Error)
