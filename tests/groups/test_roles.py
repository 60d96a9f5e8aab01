"""Consume needs `subscriber`; create, delete, redrive need `admin`; reads as ListSystemEvents."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from journey_client import pb
from tests.groups.members import Member
from tests.integration.harness import Harness
from tests.integration.harness import status_of as code_of
from tests.security.test_auth import KEYS, LET_IN, bearer, guarded  # noqa: F401  # the fixture


def _groups(h: Harness) -> pb.ConsumerGroupServiceAsyncStub:
    return pb.ConsumerGroupServiceStub(h.channel)


async def _consume(h: Harness, metadata: Any) -> grpc.StatusCode:
    # "nope" does not exist: NOT_FOUND once let in.
    return await Member(_groups(h), "nope", metadata=metadata).open().status()


CALLS: dict[str, tuple[str, Any]] = {
    "CreateConsumerGroup": (
        "admin",
        lambda h, md: _groups(h).CreateConsumerGroup(
            pb.CreateConsumerGroupRequest(name="same"), metadata=md
        ),
    ),
    "DeleteConsumerGroup": (
        "admin",
        lambda h, md: _groups(h).DeleteConsumerGroup(
            pb.DeleteConsumerGroupRequest(name="nope"), metadata=md
        ),
    ),
    "RedriveDeadLetters": (
        "admin",
        lambda h, md: _groups(h).RedriveDeadLetters(
            pb.RedriveDeadLettersRequest(name="nope"), metadata=md
        ),
    ),
    "GetConsumerGroup": (
        "subscriber",
        lambda h, md: _groups(h).GetConsumerGroup(
            pb.GetConsumerGroupRequest(name="nope"), metadata=md
        ),
    ),
    "ListConsumerGroups": (
        "subscriber",
        lambda h, md: _groups(h).ListConsumerGroups(pb.ListConsumerGroupsRequest(), metadata=md),
    ),
    "ListDeadLetters": (
        "subscriber",
        lambda h, md: _groups(h).ListDeadLetters(
            pb.ListDeadLettersRequest(name="nope"), metadata=md
        ),
    ),
}


@pytest.mark.parametrize("method", [*CALLS, "Consume"])
async def test_each_consumer_group_method_needs_its_role(guarded: Harness, method: str) -> None:  # noqa: F811
    role = "subscriber" if method == "Consume" else CALLS[method][0]
    for key, roles in KEYS.items():
        if method == "Consume":
            code = await _consume(guarded, bearer(key))
        else:
            code = await code_of(CALLS[method][1](guarded, bearer(key)))
        allowed = role in roles or "admin" in roles
        assert (code in LET_IN) == allowed, (key, code)
        if not allowed:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (key, code)
    # Without a key: refused before anything else.
    if method == "Consume":
        assert await _consume(guarded, None) == grpc.StatusCode.UNAUTHENTICATED
    else:
        assert await code_of(CALLS[method][1](guarded, None)) == grpc.StatusCode.UNAUTHENTICATED
