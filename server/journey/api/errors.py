"""The one place where errors become gRPC statuses."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from journey.domain.errors import InvalidArgument, JourneyError


def to_status(error: JourneyError) -> grpc.Status:
    """The status a caller sees for a domain error; INVALID_ARGUMENT carries a BadRequest."""
    status = status_pb2.Status(code=getattr(code_pb2, error.code), message=error.message)
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    result: grpc.Status = rpc_status.to_status(status)
    return result


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: JourneyError) -> None:
    """End the call with the error's status; never returns."""
    status = to_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)
