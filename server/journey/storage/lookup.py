"""Lookups by many keys in one group commit: compiled once, run without per-call Core work."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Select

from journey.storage import driver

# Builds the statement: given a key count, one bound parameter per key (`IN (...)`); given
# None, one array parameter for them all (PostgreSQL). Either way the keys' parameter is
# named "keys", and any other parameter is bound by name (e.g. a source id).
Build = Callable[[int | None], Select[Any]]
_Convert = Callable[[Sequence[Any]], tuple[Any, ...]]


class Lookup:
    """A SELECT of the rows matching any of many keys, each row a tuple of processed values.

    `Connection.execute` of a freshly built Core select cost a group commit more than the
    queries themselves (building the statement, its cache key, expanding `IN` per key, the
    result's metadata): the preload was a sixth of the GIL's samples with one event per
    call. Here the statement is compiled by SQLAlchemy once per dialect (on SQLite once per
    size class: the key list is padded by repeating its last key to a power of two, which
    `IN` does not mind, so a few statement texts serve every batch), run through
    `Connection.exec_driver_sql`, and each column's value goes through its type's own result
    processor for the dialect, as Core would apply it.
    """

    def __init__(self, build: Build) -> None:
        self._build = build
        self._compiled: weakref.WeakKeyDictionary[Dialect, dict[int | None, _Compiled]] = (
            weakref.WeakKeyDictionary()
        )

    def rows(
        self, connection: Connection, keys: Sequence[str], **named: Any
    ) -> list[tuple[Any, ...]]:
        """The rows matching any of `keys` (none if `keys` is empty); `named` binds the rest."""
        if not keys:
            return []
        dialect = connection.dialect
        size = None if dialect.name == "postgresql" else 1 << (len(keys) - 1).bit_length()
        by_size = self._compiled.get(dialect)
        if by_size is None:
            by_size = self._compiled[dialect] = {}
        compiled = by_size.get(size)
        if compiled is None:
            compiled = by_size[size] = _compile(self._build(size), dialect)
        values = {**compiled.fixed, **named}
        if size is None:
            values["keys"] = list(keys)
        else:
            padded = [*keys, *[keys[-1]] * (size - len(keys))]
            values.update((f"keys_{i}", key) for i, key in enumerate(padded))
        parameters = [values[name] for name in compiled.order]
        for index, processor in compiled.binds:
            parameters[index] = processor(parameters[index])
        return [compiled.convert(row) for row in driver.rows(connection, compiled.sql, parameters)]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # The bound parameters' names, in the order the driver takes their values.
    order: tuple[str, ...]
    # Values fixed when the statement was built (a LIMIT, say).
    fixed: dict[str, Any]
    # (index in `order`, the type's bind processor), where the type has one.
    binds: tuple[tuple[int, Callable[[Any], Any]], ...]
    convert: _Convert


def _compile(statement: Select[Any], dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    if not compiled.positional or compiled.positiontup is None:
        raise TypeError(f"{dialect.name}+{dialect.driver}: not a positional paramstyle")
    order = tuple(compiled.positiontup)
    fixed = {}
    binds = []
    for index, name in enumerate(order):
        bind = compiled.binds[name]
        if bind.value is not None:
            fixed[name] = bind.effective_value
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            binds.append((index, processor))
    results = []
    for index, column in enumerate(statement.selected_columns):
        processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if processor is not None:
            results.append((index, processor))
    return _Compiled(compiled.string, order, fixed, tuple(binds), _converter(tuple(results)))


def _converter(processors: tuple[tuple[int, Callable[[Any], Any]], ...]) -> _Convert:
    if not processors:
        return tuple

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        values = list(row)
        for index, processor in processors:
            values[index] = processor(values[index])
        return tuple(values)

    return convert
