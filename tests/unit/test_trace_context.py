"""W3C trace context as received: which traceparents and tracestates the events keep."""

from __future__ import annotations

import pytest

from journey.observability.trace_context import from_metadata, valid_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
GOOD = f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.mark.parametrize(
    "value",
    [
        GOOD,
        f"00-{TRACE_ID}-{SPAN_ID}-00",
        # A later version may append fields; the four known ones are read.
        f"01-{TRACE_ID}-{SPAN_ID}-01-whatever",
        f"cc-{TRACE_ID}-{SPAN_ID}-09",
    ],
)
def test_valid_traceparents(value: str) -> None:
    assert valid_traceparent(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        GOOD.upper(),
        f"ff-{TRACE_ID}-{SPAN_ID}-01",
        f"00-{'0' * 32}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",
        f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{SPAN_ID}-1",
        f"00_{TRACE_ID}_{SPAN_ID}_01",
        f" {GOOD}",
        f"{GOOD}\n",
    ],
)
def test_invalid_traceparents(value: str) -> None:
    assert not valid_traceparent(value)


def test_traceparent_and_tracestate_are_kept_as_received() -> None:
    metadata = [("user-agent", "x"), ("traceparent", GOOD), ("tracestate", "a=1,b=2")]
    assert from_metadata(metadata) == {"traceparent": GOOD, "tracestate": "a=1,b=2"}


def test_several_tracestates_are_one_list() -> None:
    metadata = [("tracestate", "a=1"), ("traceparent", GOOD), ("tracestate", "b=2")]
    assert from_metadata(metadata) == {"traceparent": GOOD, "tracestate": "a=1,b=2"}


@pytest.mark.parametrize("tracestate", ["", "   ", "a=1\x7f", "a=é", "a=" + "x" * 600])
def test_a_bad_tracestate_is_dropped_and_the_traceparent_kept(tracestate: str) -> None:
    metadata = [("traceparent", GOOD), ("tracestate", tracestate)]
    assert from_metadata(metadata) == {"traceparent": GOOD}


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("tracestate", "a=1")],
        [("traceparent", "00-abc-def-01"), ("tracestate", "a=1")],
        [("traceparent-bin", b"\x00")],
    ],
)
def test_without_a_valid_traceparent_there_is_none(
    metadata: list[tuple[str, object]] | None,
) -> None:
    assert from_metadata(metadata) == {}
