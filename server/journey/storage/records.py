"""Conversions between table rows and domain values."""

from __future__ import annotations

import dataclasses
from typing import Any

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
    """A system event from a `system_events` row."""
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


def values(record: Any) -> dict[str, Any]:
    """A domain dataclass as column values; enums become their integers."""
    # Shallow on purpose: asdict() would deep-copy every properties dict.
    out = {name: getattr(record, name) for name in _field_names(type(record))}
    for key, value in out.items():
        if isinstance(value, SessionState | SystemEventType):
            out[key] = int(value)
    return out


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    # dataclasses.fields() rebuilds its tuple on every call; this runs once per staged row.
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names
