"""Typed exceptions for the statuses a caller must handle, and the one map from RpcError."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, from the google.rpc.BadRequest detail."""

    field: str
    description: str


class JourneyError(Exception):
    """A call failed: the gRPC status code and the server's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class NotFound(JourneyError):
    """NOT_FOUND: an unknown session, profile or source."""


class InvalidArgument(JourneyError):
    """INVALID_ARGUMENT: bad input; `violations` lists each bad field."""

    def __init__(
        self, code: grpc.StatusCode, message: str, violations: tuple[FieldViolation, ...] = ()
    ) -> None:
        super().__init__(code, message)
        self.violations = violations


class FailedPrecondition(JourneyError):
    """FAILED_PRECONDITION: the state forbids the call (closed session, disabled source...)."""


class Unavailable(JourneyError):
    """UNAVAILABLE: the server is unreachable, shutting down, or its storage failed; retry."""


class Unauthenticated(JourneyError):
    """UNAUTHENTICATED: no valid API key was sent."""


class PermissionDenied(JourneyError):
    """PERMISSION_DENIED: the API key may not make this call."""


class ResourceExhausted(JourneyError):
    """RESOURCE_EXHAUSTED: a limit was hit; retry later."""


class OutOfRange(JourneyError):
    """OUT_OF_RANGE: e.g. resuming after a position this server never assigned."""


_BY_CODE: dict[grpc.StatusCode, type[JourneyError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
}


def _violations(error: grpc.RpcError) -> tuple[FieldViolation, ...]:
    # grpcio-status reads the google.rpc.Status from the trailers; None when there is none.
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return ()
    out: list[FieldViolation] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            out.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
    return tuple(out)


def from_rpc_error(error: grpc.RpcError) -> JourneyError:
    """The typed exception for a failed call; codes without a class give a plain JourneyError."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(code, message, _violations(error))
    return _BY_CODE.get(code, JourneyError)(code, message)
