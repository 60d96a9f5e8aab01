"""Core statements compiled once per dialect and run on the driver, their values bound by name."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Delete, Dialect, Insert, Select, Update

from journey.storage import driver

_Convert = Callable[[Sequence[Any]], tuple[Any, ...]]
S = TypeVar("S", Select[Any], Insert, Update, Delete)


@dataclass(frozen=True)
class Compiled:
    """A statement as one dialect's driver runs it."""

    sql: str
    # The parameters' names, in the order the driver takes their values.
    order: tuple[str, ...]
    # Values fixed when the statement was built (a LIMIT, a filter's list), processed.
    fixed: dict[str, Any]
    # (index in `order`, bind processor) of the values given at run time, where the type has one.
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    # A row's values through their columns' result processors, as Core would give them.
    convert: _Convert

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        """The driver's positional parameters for these values by name."""
        # The names given and the names fixed are apart: neither overrides the other.
        merged = {**values, **self.fixed}
        out = [merged[name] for name in self.order]
        for index, processor in self.processors:
            out[index] = processor(out[index])
        return out


def compile_statement(
    statement: Select[Any] | Insert | Update | Delete, dialect: Dialect
) -> Compiled:
    """Compile `statement` for `dialect` as Core would run it, lists fixed in it expanded.

    The parameters without a value are given at run time; those with one (a LIMIT, an IN
    list of a filter's types) are fixed here, an IN list rendered as one parameter per value.
    """
    compiled = statement.compile(dialect=dialect)
    if not compiled.positional:
        raise TypeError(f"{dialect.name}+{dialect.driver}: not a positional paramstyle")
    binds = compiled.binds
    given = {name for name, bind in binds.items() if bind.value is None and bind.callable is None}
    # Public API for what Core does at each execution: expand the fixed lists.
    state = compiled.construct_expanded_state(dict.fromkeys(given))
    assert state.positiontup is not None
    fixed = {}
    processors = []
    for index, name in enumerate(state.positiontup):
        bind = binds.get(name)
        # An expanded list's values are not binds of their own: the state has their processors.
        processor = (
            state.processors.get(name)
            if bind is None
            else bind.type.dialect_impl(dialect).bind_processor(dialect)
        )
        if name in given:
            if processor is not None:
                processors.append((index, processor))
        else:
            value = state.parameters[name]
            fixed[name] = value if processor is None else processor(value)
    results = []
    if isinstance(statement, Select):
        for index, column in enumerate(statement.selected_columns):
            processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if processor is not None:
                results.append((index, processor))
    order = tuple(state.positiontup)
    return Compiled(state.statement, order, fixed, tuple(processors), _converter(tuple(results)))


def _converter(processors: tuple[tuple[int, Callable[[Any], Any]], ...]) -> _Convert:
    if not processors:
        return tuple

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        values = list(row)
        for index, processor in processors:
            values[index] = processor(values[index])
        return tuple(values)

    return convert


class Prepared(Generic[S]):
    """A statement built once, compiled once per dialect, and run without per-run Core work.

    `Connection.execute` of a Core statement, even one whose compiled form SQLAlchemy has
    cached, builds an execution context, a cursor result and a Row per row: in a consumer
    group's round of a few hundred events, making the Rows took about as long as SQLite's
    fetching them (docs/performance.md). Here the SQL and the bind and result processors are
    still SQLAlchemy's for the dialect; only that machinery is skipped (storage/driver.py runs
    the SQL). `statement` stays the Core statement, to bind and EXPLAIN.
    """

    def __init__(self, statement: S) -> None:
        self.statement: S = statement
        self._compiled: weakref.WeakKeyDictionary[Dialect, Compiled] = weakref.WeakKeyDictionary()

    def rows(self, connection: Connection, **values: Any) -> Sequence[Sequence[Any]]:
        """The statement's rows, each a sequence of processed values."""
        compiled = self._for(connection.dialect)
        found = driver.rows(connection, compiled.sql, compiled.parameters(values))
        convert = compiled.convert
        # Most statements have no result processor: their rows are used as the driver gave them.
        return found if convert is tuple else [convert(row) for row in found]

    def scalar(self, connection: Connection, **values: Any) -> Any:
        """The first column of the first row, or None without rows."""
        found = self.rows(connection, **values)
        return found[0][0] if found else None

    def execute(self, connection: Connection, **values: Any) -> None:
        """Run a statement that returns no rows."""
        compiled = self._for(connection.dialect)
        driver.execute(connection, compiled.sql, compiled.parameters(values))

    def _for(self, dialect: Dialect) -> Compiled:
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = compile_statement(self.statement, dialect)
        return compiled
