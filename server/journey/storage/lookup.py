"""Lookups by many keys in one group commit: compiled once, run without per-call Core work."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Select

from journey.storage import driver
from journey.storage.prepared import Compiled, compile_statement

# Builds the statement: given a key count, one bound parameter per key (`IN (...)`); given
# None, one array parameter for them all (PostgreSQL). Either way the keys' parameter is
# named "keys", and any other parameter is bound by name (e.g. a source id).
Build = Callable[[int | None], Select[Any]]


class Lookup:
    """A SELECT of the rows matching any of many keys, each row a tuple of processed values.

    `Connection.execute` of a freshly built Core select cost a group commit more than the
    queries themselves (building the statement, its cache key, expanding `IN` per key, the
    result's metadata): the preload was a sixth of the GIL's samples with one event per
    call. Here the statement is compiled by SQLAlchemy once per dialect (on SQLite once per
    size class: the key list is padded by repeating its last key to a power of two, which
    `IN` does not mind, so a few statement texts serve every batch; storage/prepared.py
    compiles it), run on the driver (storage/driver.py), and each column's value goes through
    its type's own result processor for the dialect, as Core would apply it.
    """

    def __init__(self, build: Build) -> None:
        self._build = build
        self._compiled: weakref.WeakKeyDictionary[Dialect, dict[int | None, Compiled]] = (
            weakref.WeakKeyDictionary()
        )

    def rows(
        self, connection: Connection, keys: Sequence[str], **named: Any
    ) -> Sequence[Sequence[Any]]:
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
            compiled = by_size[size] = compile_statement(self._build(size), dialect)
        values = dict(named)
        if size is None:
            values["keys"] = list(keys)
        else:
            padded = [*keys, *[keys[-1]] * (size - len(keys))]
            values.update((f"keys_{i}", key) for i, key in enumerate(padded))
        found = driver.rows(connection, compiled.sql, compiled.parameters(values))
        convert = compiled.convert
        # Without a result processor (the client event ids' lookup) the rows are as given.
        return found if convert is tuple else [convert(row) for row in found]
