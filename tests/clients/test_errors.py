"""Each status a caller must handle becomes its typed exception, with the server's message."""

from __future__ import annotations

import grpc
import pytest

import journey_client as jc
from journey.api.errors import to_status
from journey.domain import errors as domain
from tests.clients.fake_server import FakeSessions, fake_server


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.NOT_FOUND, jc.NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, jc.FailedPrecondition),
        (grpc.StatusCode.UNAVAILABLE, jc.Unavailable),
        (grpc.StatusCode.UNAUTHENTICATED, jc.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, jc.PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, jc.ResourceExhausted),
        (grpc.StatusCode.OUT_OF_RANGE, jc.OutOfRange),
        (grpc.StatusCode.INVALID_ARGUMENT, jc.InvalidArgument),
        (grpc.StatusCode.INTERNAL, jc.JourneyError),
    ],
)
async def test_a_status_code_maps_to_its_exception(
    code: grpc.StatusCode, kind: type[jc.JourneyError]
) -> None:
    fake = FakeSessions((code, "the server's words", ()))
    async with fake_server(sessions=fake) as address, jc.JourneyClient(address) as client:
        with pytest.raises(jc.JourneyError) as raised:
            await client.get_session("s")
    assert type(raised.value) is kind
    assert raised.value.code == code
    assert raised.value.message == "the server's words"
    assert str(raised.value) == f"{code.name}: the server's words"


async def test_invalid_argument_carries_the_field_violations() -> None:
    error = domain.InvalidArgument(
        [domain.FieldViolation("events", "at least one"), domain.FieldViolation("source_id", "x")]
    )
    status = to_status(error)
    failure = (status.code, status.details, status.trailing_metadata)
    async with (
        fake_server(sessions=FakeSessions(failure)) as address,
        jc.JourneyClient(address) as client,
    ):
        with pytest.raises(jc.InvalidArgument) as raised:
            await client.get_session("s")
    assert raised.value.violations == (
        jc.FieldViolation("events", "at least one"),
        jc.FieldViolation("source_id", "x"),
    )
    assert raised.value.message == error.message
