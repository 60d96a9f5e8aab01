"""Fault test 6: random and hostile requests get OK or a deliberate status, never UNKNOWN/INTERNAL.

Hypothesis drives a server that runs in its own thread and event loop, through a blocking
channel, so that its examples need no event loop of their own. Example counts are bounded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journey.app import create_server
from journey.config import Settings
from journey_client import pb
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES, _reset_postgres

pytestmark = pytest.mark.slow

# Each is a decision the server made on purpose, with a message; UNKNOWN and INTERNAL are not.
DELIBERATE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class ServerThread:
    """A Journey server in a thread of its own, stopped on close()."""

    def __init__(self, server_settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, args=(server_settings,), daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError(f"the server did not start: {self._failure!r}")

    def _run(self, server_settings: Settings) -> None:
        self._loop.run_until_complete(self._serve(server_settings))
        self._loop.close()

    async def _serve(self, server_settings: Settings) -> None:
        self._stop = asyncio.Event()
        try:
            server, self.port = await create_server(server_settings)
        except BaseException as error:
            self._failure = error
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await server.stop(1.0)

    def close(self) -> None:
        """Stop the server and wait for its thread."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def channel(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[grpc.Channel]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('hostile') / 'journey.db'}"
    else:
        problem = asyncio.run(_reset_postgres())
        if problem is not None:
            if REQUIRE_POSTGRES:
                pytest.fail(problem)
            pytest.skip(problem)
        url = POSTGRES_URL
    server = ServerThread(Settings(listen="127.0.0.1:0", database_url=url))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as open_channel:
            yield open_channel
    finally:
        server.close()


def outcome(call: Callable[[], Any]) -> grpc.StatusCode:
    """Run a blocking call; its status, which must be OK or deliberate, with a message."""
    failure: Any = None
    try:
        call()
    except grpc.RpcError as error:
        failure = error
    if failure is None:
        return grpc.StatusCode.OK
    code: grpc.StatusCode = failure.code()
    assert code in DELIBERATE, (code, failure.details())
    assert failure.details(), code
    return code


def still_serving(channel: grpc.Channel) -> None:
    response = pb.TrackerServiceStub(channel).Track(
        pb.TrackRequest(source_id="web", events=[pb.TrackedEvent(type="alive")]), timeout=20
    )
    assert len(response.event_ids) == 1


# Strategies.

ids = st.one_of(
    st.text(max_size=12),
    st.text(min_size=120, max_size=200),
    st.sampled_from(["", "\x00", "a\x00b", "'", "%", "\\", "\U0010ffff", "\u200b", " "]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)
structs = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    # Over the 64 KiB limit.
    st.integers(65 * 1024, 80 * 1024).map(lambda n: {"blob": "x" * n}),
)
timestamps = st.tuples(
    st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1)
) | st.tuples(st.integers(-62_135_596_800, 253_402_300_799), st.integers(0, 999_999_999))
enum_numbers = st.integers(-(2**31), 2**31 - 1) | st.integers(0, 6)


@st.composite
def tracked_events(draw: st.DrawFn) -> pb.TrackedEvent:
    event = pb.TrackedEvent(id=draw(ids), type=draw(ids))
    event.properties.update(draw(structs))
    if draw(st.booleans()):
        seconds, nanos = draw(timestamps)
        event.occur_time.seconds, event.occur_time.nanos = seconds, nanos
    return event


@st.composite
def track_requests(draw: st.DrawFn) -> pb.TrackRequest:
    count = draw(st.one_of(st.integers(0, 4), st.just(501)))
    events = draw(st.lists(tracked_events(), min_size=min(count, 4), max_size=min(count, 4)))
    events += [pb.TrackedEvent(type="bulk")] * max(0, count - 4)
    request = pb.TrackRequest(
        source_id=draw(ids), profile_id=draw(ids), session_id=draw(ids), events=events
    )
    request.context.update(draw(structs))
    return request


@st.composite
def filters(draw: st.DrawFn) -> pb.SystemEventFilter:
    return pb.SystemEventFilter(
        types=draw(st.lists(enum_numbers, max_size=4)),  # type: ignore[arg-type]
        profile_id=draw(ids),
        session_id=draw(ids),
        source_id=draw(ids),
    )


@st.composite
def list_requests(draw: st.DrawFn) -> pb.ListSystemEventsRequest:
    request = pb.ListSystemEventsRequest(
        filter=draw(filters()),
        page_size=draw(st.integers(-(2**31), 2**31 - 1) | st.integers(0, 1001)),
        page_token=draw(st.text(max_size=40) | st.just("")),
    )
    for name in ("start_time", "end_time"):
        if draw(st.booleans()):
            seconds, nanos = draw(timestamps)
            getattr(request, name).seconds = seconds
            getattr(request, name).nanos = nanos
    return request


@st.composite
def subscribe_requests(draw: st.DrawFn) -> pb.SubscribeRequest:
    request = pb.SubscribeRequest(filter=draw(filters()))
    start = draw(st.sampled_from(["none", "beginning", "end", "after"]))
    if start in ("beginning", "end"):
        getattr(request, start).CopyFrom(Empty())
    elif start == "after":
        request.after_position = draw(st.integers(0, 2**64 - 1) | st.integers(0, 50))
    return request


# Wire-level hostility: bytes that no well-behaved client would send.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested_struct(depth: int) -> bytes:
    struct = b""
    for _ in range(depth):
        struct = _field(1, _field(1, b"a") + _field(2, _field(5, struct)))
    return struct


VALID_TRACK = pb.TrackRequest(
    source_id="web", events=[pb.TrackedEvent(type="page-view")]
).SerializeToString()
METHODS = [
    "/journey.v1.TrackerService/Track",
    "/journey.v1.SystemEventService/ListSystemEvents",
    "/journey.v1.SessionService/GetSession",
    "/journey.v1.SessionService/EndSession",
    "/journey.v1.SessionService/GetProfile",
    "/journey.v1.SettingsService/GetSettings",
]
raw_payloads = st.one_of(
    st.binary(max_size=300),
    # A string field (field 1 of every request here) holding bytes that may not be UTF-8.
    st.binary(min_size=1, max_size=40).map(lambda b: _field(1, b)),
    # A Struct nested past protobuf's depth limit, in the Track's context.
    st.integers(90, 300).map(lambda depth: VALID_TRACK + _field(5, _nested_struct(depth))),
    # A valid request with a few bytes flipped.
    st.tuples(st.integers(0, len(VALID_TRACK) - 1), st.integers(1, 255)).map(
        lambda at: (
            VALID_TRACK[: at[0]] + bytes([VALID_TRACK[at[0]] ^ at[1]]) + VALID_TRACK[at[0] + 1 :]
        )
    ),
)


# The tests.


@EXAMPLES
@given(request=track_requests())
def test_hostile_track(channel: grpc.Channel, request: pb.TrackRequest) -> None:
    stub = pb.TrackerServiceStub(channel)
    outcome(lambda: stub.Track(request, timeout=20))
    still_serving(channel)


@EXAMPLES
@given(request=list_requests())
def test_hostile_list_system_events(
    channel: grpc.Channel, request: pb.ListSystemEventsRequest
) -> None:
    stub = pb.SystemEventServiceStub(channel)
    outcome(lambda: stub.ListSystemEvents(request, timeout=20))


@EXAMPLES
@given(request=subscribe_requests())
def test_hostile_subscribe(channel: grpc.Channel, request: pb.SubscribeRequest) -> None:
    stub = pb.SystemEventServiceStub(channel)

    def first_message() -> None:
        stream = stub.Subscribe(request, timeout=20)
        try:
            next(iter(stream))
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]

    outcome(first_message)


@EXAMPLES
@given(session_id=ids, reason=ids)
def test_hostile_end_session(channel: grpc.Channel, session_id: str, reason: str) -> None:
    stub = pb.SessionServiceStub(channel)
    request = pb.EndSessionRequest(session_id=session_id, reason=reason)
    outcome(lambda: stub.EndSession(request, timeout=20))


@EXAMPLES
@given(method=st.sampled_from(METHODS), payload=raw_payloads)
def test_hostile_bytes(channel: grpc.Channel, method: str, payload: bytes) -> None:
    call = channel.unary_unary(method, None, None)  # bytes in, bytes out
    outcome(lambda: call(payload, timeout=20))
    still_serving(channel)


def test_hostile_bytes_reach_the_decoder(channel: grpc.Channel) -> None:
    """Guard: the crafted payloads really are undecodable, so the tests above exercise that."""
    too_deep = VALID_TRACK + _field(5, _nested_struct(150))
    bad_utf8 = _field(1, b"\xff\xfe")
    call = channel.unary_unary("/journey.v1.TrackerService/Track", None, None)
    for payload in (too_deep, bad_utf8):
        with pytest.raises(DecodeError):
            pb.TrackRequest.FromString(payload)
        assert outcome(lambda p=payload: call(p, timeout=20)) == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[misc]
