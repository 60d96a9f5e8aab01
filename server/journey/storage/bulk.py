"""Many rows through a Core statement compiled once per dialect, sent as the driver takes them."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Dialect, Insert, LargeBinary, Update, bindparam, insert

from journey.storage import driver

_Convert = Callable[[Sequence[Any]], tuple[Any, ...]]

# The bound values one SQLite statement may hold in every SQLite a Python 3.11 may be built
# with: 32,766 since SQLite 3.32, 999 before.
SQLITE_MAX_VALUES = 999


@dataclass
class _Compiled:
    """A statement as one dialect runs it: its SQL for one row, and a row's conversion."""

    sql: str
    convert: _Convert
    # SQLite INSERTs: the SQL up to VALUES, and one row's group of placeholders.
    values: tuple[str, str] | None = None
    # The most rows one of them carries: a power of two within SQLITE_MAX_VALUES.
    max_rows: int = 1
    _texts: dict[int, str] = field(default_factory=dict)

    def rows_sql(self, count: int) -> str:
        """The INSERT of `count` rows."""
        assert self.values is not None
        sql = self._texts.get(count)
        if sql is None:
            head, group = self.values
            sql = self._texts[count] = f"{head} VALUES {', '.join([group] * count)}"
        return sql


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

    On SQLite an INSERT carries many rows at once (`VALUES (...), (...)`, in chunks of a power
    of two rows, 64 for our tables): pysqlite's executemany runs the statement once per row
    (bind, step, reset, the GIL released and taken back around each step). Consumer-group
    rounds counted about a tenth fewer instructions so (docs/performance.md). SQLAlchemy's own
    insertmanyvalues does the same, but only for INSERT .. RETURNING. On PostgreSQL, asyncpg's
    executemany already sends the rows in one pipeline.

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
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()

    def execute(self, connection: Connection, rows: Iterable[Sequence[Any]]) -> None:
        """Run the statement for every row; nothing is run without rows."""
        dialect = connection.dialect
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = self._compile(dialect)
        parameters = [compiled.convert(row) for row in rows]
        if compiled.values is None or len(parameters) < 2:
            if parameters:
                driver.execute_many(connection, compiled.sql, parameters)
            return
        start, left = 0, len(parameters)
        while left:
            count = min(compiled.max_rows, 1 << (left.bit_length() - 1))
            values = tuple(itertools.chain.from_iterable(parameters[start : start + count]))
            driver.execute(connection, compiled.rows_sql(count), values)
            start, left = start + count, left - count

    def _compile(self, dialect: Dialect) -> _Compiled:
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
        convert = _converter(order, tuple(processors))
        if dialect.name != "sqlite" or not isinstance(self._statement, Insert):
            return _Compiled(compiled.string, convert)
        columns = tuple(compiled.positiontup)
        values = _values_clause(self._statement, dialect, compiled.string, columns)
        max_rows = 1 << ((SQLITE_MAX_VALUES // len(columns)).bit_length() - 1)
        return _Compiled(compiled.string, convert, values, max_rows)


def _values_clause(
    statement: Insert, dialect: Dialect, sql: str, columns: tuple[str, ...]
) -> tuple[str, str]:
    """A one-row INSERT's SQL (`sql`, binding `columns`) split at VALUES: its head and its row.

    Checked against SQLAlchemy's own INSERT of two rows, which must be that row twice, its
    values in the same order; then the INSERT of any number of rows is the row repeated.
    (Compiling every row count with SQLAlchemy took it a third of a second at the first rounds.)
    """
    head, found, row = sql.partition(" VALUES ")
    table = statement.table
    two = [
        {name: bindparam(f"{name}__{i}", type_=table.c[name].type) for name in columns}
        for i in range(2)
    ]
    compiled = insert(table).values(two).compile(dialect=dialect)
    order = [f"{name}__{i}" for i in range(2) for name in columns]
    as_expected = compiled.string == f"{head} VALUES {row}, {row}"
    if not found or not as_expected or compiled.positiontup != order:
        raise TypeError(f"{table.name}: no INSERT of many rows on {dialect.name}")
    return head, row


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
