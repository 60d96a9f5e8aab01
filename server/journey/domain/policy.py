"""The settings that the domain rules depend on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from journey.domain.model import SystemEventType


@dataclass(frozen=True)
class Policy:
    """Timeouts and the system-event types that are switched on."""

    visit_timeout: timedelta
    session_timeout: timedelta
    enabled_types: frozenset[SystemEventType] = frozenset(SystemEventType)
