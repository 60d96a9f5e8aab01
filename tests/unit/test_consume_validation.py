"""Consume's per-message checks: delivery ids are checked together, and a bad one is named."""

from __future__ import annotations

import pytest

from journey.api import validation
from journey_client import pb

GOOD = [f"{i:036d}" for i in range(300)]


@pytest.mark.parametrize(
    "request_",
    [
        pb.ConsumeRequest(ack=pb.Ack(delivery_ids=GOOD)),
        pb.ConsumeRequest(extend=pb.Extend(delivery_ids=GOOD)),
        pb.ConsumeRequest(reject=pb.Reject(delivery_ids=GOOD, reason="poison")),
    ],
)
def test_many_valid_ids_pass(request_: pb.ConsumeRequest) -> None:
    assert validation.consume(request_) == []


@pytest.mark.parametrize(
    ("bad", "description"),
    [("x" * (validation.MAX_ID + 1), "at most 128 allowed"), ("a\x00b", "NUL")],
)
def test_a_bad_id_among_good_ones_is_named_by_its_index(bad: str, description: str) -> None:
    ids = [*GOOD[:5], bad, *GOOD[5:]]
    violations = validation.consume(pb.ConsumeRequest(ack=pb.Ack(delivery_ids=ids)))
    assert [v.field for v in violations] == ["ack.delivery_ids[5]"]
    assert description in violations[0].description


def test_a_bad_nack_id_is_named_too() -> None:
    request = pb.ConsumeRequest(nack=pb.Nack(delivery_ids=["ok", "y" * 200]))
    assert [v.field for v in validation.consume(request)] == ["nack.delivery_ids[1]"]
