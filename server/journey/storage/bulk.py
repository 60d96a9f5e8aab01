"""Executemany of a Core statement compiled once per dialect, rows sent as the driver takes them."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Insert, LargeBinary, Update

_Convert = Callable[[Sequence[Any]], tuple[Any, ...]]


class Bulk:
    """An INSERT or UPDATE run with many rows, each a tuple of values in the order of `names`.

    `Connection.execute` with a list of dicts builds each row's parameters through the compiled
    statement (a dict per row, the bind processors, the positional tuple): in a group commit of
    hundreds of rows that was a fifth of the writer's time. Here the statement is still Core,
    compiled by SQLAlchemy for the connection's dialect (so the SQL, the column order and, on
    asyncpg, the casts are SQLAlchemy's), and each column's value still goes through its type's
    own bind processor for that dialect (so `UtcMicros` converts datetimes as everywhere else,
    but bytes are passed as they are: see _compile); only the per-row machinery around them is
    skipped, and the rows go to the driver as they are (`Connection.exec_driver_sql`).

    `raw`: names whose values are given as the driver takes them (a `UtcMicros` column's
    integer microseconds, read raw from another row), so their processors are skipped too.
    """

    def __init__(
        self, statement: Insert | Update, names: Sequence[str], raw: Sequence[str] = ()
    ) -> None:
        self._statement = statement
        # The bind names a row's values are for; they are also the columns an INSERT sets.
        self._names = tuple(names)
        self._raw = frozenset(raw)
        self._compiled: weakref.WeakKeyDictionary[Dialect, tuple[str, _Convert]] = (
            weakref.WeakKeyDictionary()
        )

    def execute(self, connection: Connection, rows: Iterable[Sequence[Any]]) -> None:
        """Run the statement once per row, in one executemany; nothing is run without rows."""
        dialect = connection.dialect
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = self._compile(dialect)
        sql, convert = compiled
        parameters = [convert(row) for row in rows]
        if parameters:
            connection.exec_driver_sql(sql, parameters)

    def _compile(self, dialect: Dialect) -> tuple[str, _Convert]:
        # for_executemany: no implicit RETURNING of the primary key, as for a list of rows.
        compiled = self._statement.compile(
            dialect=dialect, column_keys=list(self._names), for_executemany=True
        )
        if not compiled.positional or compiled.positiontup is None:
            raise TypeError(f"{dialect.name}+{dialect.driver}: not a positional paramstyle")
        order = tuple(self._names.index(name) for name in compiled.positiontup)
        binds = compiled.binds
        processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(compiled.positiontup):
            bind_type = binds[name].type
            if name in self._raw:
                continue
            if isinstance(bind_type, LargeBinary):
                # Our binary values are bytes, which pysqlite and asyncpg both take as they
                # are; the processor only wraps each in the DB-API's Binary (on pysqlite a
                # memoryview), and was a tenth of the writer's time holding the GIL.
                continue
            processor = bind_type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors.append((index, processor))
        return compiled.string, _converter(order, tuple(processors))


def _converter(order: tuple[int, ...], processors: tuple[tuple[int, Any], ...]) -> _Convert:
    # The common cases kept cheap: the rows already in the statement's order, or nothing to
    # convert. Each runs once per row.
    in_order = order == tuple(range(len(order)))
    if not processors:
        if in_order:
            return tuple
        return lambda row: tuple([row[i] for i in order])

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        values = list(row) if in_order else [row[i] for i in order]
        for index, processor in processors:
            values[index] = processor(values[index])
        return tuple(values)

    return convert
