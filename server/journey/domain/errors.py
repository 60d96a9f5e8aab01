"""Domain errors, each declaring the gRPC status code (by name) that it maps to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: a path such as `events[2].type`, and what is wrong with it."""

    field: str
    description: str


class JourneyError(Exception):
    """Base of every error a caller is meant to see; `code` names a `grpc.StatusCode` member."""

    # A name rather than grpc.StatusCode keeps the domain free of grpc imports.
    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(JourneyError):
    """The request is malformed; `violations` lists every bad field."""

    code = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = tuple(violations)


class NotFound(JourneyError):
    """The named session, profile, source or consumer group does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(JourneyError):
    """What the request would create exists already, with other settings."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(JourneyError):
    """The request is well formed but the state it would act on forbids it."""

    code = "FAILED_PRECONDITION"


class OutOfRange(JourneyError):
    """The request points past the end of something, e.g. a position not yet assigned."""

    code = "OUT_OF_RANGE"


class Unavailable(JourneyError):
    """The server cannot take the call now (shutting down, storage failing); retry later."""

    code = "UNAVAILABLE"


class Unauthenticated(JourneyError):
    """The call carries no API key, or one the server does not know."""

    code = "UNAUTHENTICATED"


class PermissionDenied(JourneyError):
    """The API key is known but lacks the role the call needs."""

    code = "PERMISSION_DENIED"


class ResourceExhausted(JourneyError):
    """A configured limit is reached, e.g. max_subscribers; retry later."""

    code = "RESOURCE_EXHAUSTED"
