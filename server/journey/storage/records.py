"""Conversions between table rows and domain values."""

from __future__ import annotations

import dataclasses
import operator
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Row

from journey.domain.model import Profile, Session, SessionState, SystemEvent, SystemEventType


def profile_from_row(row: Row[Any]) -> Profile:
    """A profile from a `profiles` row."""
    return Profile(
        id=row.id,
        create_time=row.create_time,
        last_activity_time=row.last_activity_time,
        visit_count=row.visit_count,
        session_count=row.session_count,
    )


def session_from_row(row: Row[Any]) -> Session:
    """A session from a `sessions` row."""
    return Session(
        id=row.id,
        profile_id=row.profile_id,
        source_id=row.source_id,
        state=SessionState(row.state),
        open_time=row.open_time,
        last_activity_time=row.last_activity_time,
        close_time=row.close_time,
        event_count=row.event_count,
        visit_count=row.visit_count,
        visit_start_time=row.visit_start_time,
        visit_event_count=row.visit_event_count,
    )


def system_event_from_row(row: Row[Any]) -> SystemEvent:
    """A system event from a `system_events` row; its trace context is only in `encoded`."""
    return SystemEvent(
        position=row.position,
        id=row.id,
        type=SystemEventType(row.type),
        occur_time=row.occur_time,
        profile_id=row.profile_id,
        session_id=row.session_id,
        source_id=row.source_id,
        properties=row.properties,
    )


R = TypeVar("R")


def from_values(cls: type[R], values: Sequence[Any]) -> R:
    """A domain dataclass from its values in `field_names` order; enums from their integers."""
    shape = _SHAPES.get(cls) or _shape(cls)
    if not shape.enums:
        return cls(*values)
    listed = list(values)
    for index, enum in zip(shape.enums, shape.enum_types, strict=True):
        listed[index] = enum(listed[index])
    return cls(*listed)


def values(record: Any) -> dict[str, Any]:
    """A domain dataclass as column values by name; enums become their integers."""
    return dict(zip(field_names(type(record)), row(record), strict=True))


def row(record: Any) -> tuple[Any, ...]:
    """A domain dataclass's values in `field_names` order; enums become their integers."""
    shape = _SHAPES.get(type(record)) or _shape(type(record))
    # Shallow on purpose: asdict() would deep-copy every properties dict.
    out = shape.read(record)
    if not shape.enums:
        return out
    listed = list(out)
    for index in shape.enums:
        listed[index] = int(listed[index])
    return tuple(listed)


def field_names(cls: type) -> tuple[str, ...]:
    """The stored field names of a domain dataclass, in the order `row` gives their values."""
    return (_SHAPES.get(cls) or _shape(cls)).names


@dataclasses.dataclass(frozen=True)
class _Shape:
    names: tuple[str, ...]
    read: Callable[[Any], tuple[Any, ...]]
    # The positions of the enum fields, and their types.
    enums: tuple[int, ...]
    enum_types: tuple[type, ...]


_SHAPES: dict[type, _Shape] = {}


# Fields that have no column: a system event's trace context lives only in its encoded form
# (`system_events.encoded`), which is what every reader is sent.
_NOT_STORED: dict[type, frozenset[str]] = {SystemEvent: frozenset({"trace_context"})}


def _shape(cls: type) -> _Shape:
    # Worked out once per class: row() runs once per staged row, and dataclasses.fields()
    # and a per-value isinstance were most of its cost.
    hints = typing.get_type_hints(cls)
    skipped = _NOT_STORED.get(cls, frozenset())
    # Dataclasses, or named tuples (the records made once per event: domain/model.py).
    fields = getattr(cls, "_fields", None) or [f.name for f in dataclasses.fields(cls)]
    names = tuple(name for name in fields if name not in skipped)
    enums = tuple(i for i, n in enumerate(names) if hints[n] in (SessionState, SystemEventType))
    if len(names) < 2:
        raise TypeError(f"{cls.__name__} has fewer than two fields")  # attrgetter's shape
    enum_types = tuple(hints[names[i]] for i in enums)
    shape = _SHAPES[cls] = _Shape(names, operator.attrgetter(*names), enums, enum_types)
    return shape
