"""API keys: UNAUTHENTICATED without a known key, PERMISSION_DENIED without the role."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.empty_pb2 import Empty
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from journey.auth import digest
from journey.config import ApiKey, Settings, load_settings
from journey.keys import config_lines, new_key
from journey_client import pb
from tests.integration.harness import Harness, serving
from tests.integration.harness import status_of as code_of
from tests.integration.test_cli import run_cli

TRACKER, SUBSCRIBER, ADMIN, BOTH = "tracker-key", "subscriber-key", "admin-key", "both-key"
KEYS = {
    TRACKER: {"tracker"},
    SUBSCRIBER: {"subscriber"},
    ADMIN: {"admin"},
    BOTH: {"tracker", "subscriber"},
}

Call = Callable[[Harness, Any], Awaitable[Any]]


async def _subscribe(h: Harness, metadata: Any) -> Any:
    # The first message proves the stream was let in.
    stream = h.events.Subscribe(pb.SubscribeRequest(beginning=Empty()), metadata=metadata)
    try:
        return await stream.read()
    finally:
        stream.cancel()


CALLS: dict[str, tuple[str, Call]] = {
    "Track": (
        "tracker",
        lambda h, md: h.tracker.Track(
            pb.TrackRequest(source_id="web", events=[pb.TrackedEvent(type="t")]), metadata=md
        ),
    ),
    "EndSession": (
        "tracker",
        lambda h, md: h.sessions.EndSession(pb.EndSessionRequest(session_id="nope"), metadata=md),
    ),
    "Subscribe": ("subscriber", _subscribe),
    "ListSystemEvents": (
        "subscriber",
        lambda h, md: h.events.ListSystemEvents(pb.ListSystemEventsRequest(), metadata=md),
    ),
    "GetSession": (
        "subscriber",
        lambda h, md: h.sessions.GetSession(pb.GetSessionRequest(session_id="nope"), metadata=md),
    ),
    "GetProfile": (
        "subscriber",
        lambda h, md: h.sessions.GetProfile(pb.GetProfileRequest(profile_id="nope"), metadata=md),
    ),
    "GetSettings": (
        "admin",
        lambda h, md: h.settings.GetSettings(pb.GetSettingsRequest(), metadata=md),
    ),
}


@pytest_asyncio.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Harness]:
    """A server on SQLite (auth does not touch storage) with the four keys above."""
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}",
        api_keys=tuple(ApiKey(digest(key), frozenset(roles)) for key, roles in KEYS.items()),
    )
    async with serving(settings) as h:
        yield h


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


# Past authentication, NOT_FOUND is the call's own answer about the made-up ids.
LET_IN = {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}


@pytest.mark.parametrize("method", list(CALLS))
async def test_each_method_needs_its_role(guarded: Harness, method: str) -> None:
    role, call = CALLS[method]
    for key, roles in KEYS.items():
        code = await code_of(call(guarded, bearer(key)))
        allowed = role in roles or "admin" in roles
        assert (code in LET_IN) == allowed, (key, code)
        if not allowed:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (key, code)


@pytest.mark.parametrize("method", list(CALLS))
@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer not-a-key"),),
        (("authorization", f"Basic {ADMIN}"),),
        (("authorization", ADMIN),),
        (("authorization", f"Bearer {ADMIN}x"),),
        (("authorization", f"Bearer {ADMIN}"), ("authorization", f"Bearer {ADMIN}")),
        (("x-api-key", ADMIN),),
    ],
)
async def test_a_missing_or_unknown_key_is_unauthenticated(
    guarded: Harness, method: str, metadata: Any
) -> None:
    _, call = CALLS[method]
    assert await code_of(call(guarded, metadata)) == grpc.StatusCode.UNAUTHENTICATED


async def test_the_scheme_is_case_insensitive(guarded: Harness) -> None:
    metadata = (("authorization", f"bearer {ADMIN}"),)
    await guarded.settings.GetSettings(pb.GetSettingsRequest(), metadata=metadata)


async def test_a_refused_call_stores_nothing_and_is_checked_before_validation(
    guarded: Harness,
) -> None:
    # An empty Track would be INVALID_ARGUMENT: a stranger learns nothing about the API.
    empty = guarded.tracker.Track(pb.TrackRequest())
    assert await code_of(empty) == grpc.StatusCode.UNAUTHENTICATED
    subscriber = guarded.tracker.Track(
        pb.TrackRequest(source_id="web", events=[pb.TrackedEvent(type="t")]),
        metadata=bearer(SUBSCRIBER),
    )
    assert await code_of(subscriber) == grpc.StatusCode.PERMISSION_DENIED
    page = await guarded.events.ListSystemEvents(
        pb.ListSystemEventsRequest(), metadata=bearer(SUBSCRIBER)
    )
    assert list(page.system_events) == []


async def test_health_and_reflection_stay_open(guarded: Harness) -> None:
    health = health_pb2_grpc.HealthStub(guarded.channel)
    check = await health.Check(health_pb2.HealthCheckRequest())
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(guarded.channel)
    stream = reflection.ServerReflectionInfo()
    await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    answer = await stream.read()
    await stream.done_writing()
    names = {s.name for s in answer.list_services_response.service}
    assert "journey.v1.TrackerService" in names


async def test_no_key_is_logged(guarded: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for key in (ADMIN, "wrong-secret-key"):
            await code_of(
                guarded.settings.GetSettings(pb.GetSettingsRequest(), metadata=bearer(key))
            )
    assert caplog.records  # DEBUG logs every call, so the log was there to leak into
    assert ADMIN not in caplog.text
    assert "wrong-secret-key" not in caplog.text


async def test_without_keys_the_server_runs_open_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        listen="127.0.0.1:0", database_url=f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}"
    )
    with caplog.at_level(logging.WARNING):
        async with serving(settings) as h:
            await h.settings.GetSettings(pb.GetSettingsRequest())
    assert "no [[api_keys]] configured: the server runs open" in caplog.text


def test_a_new_key_is_random_and_its_lines_hold_only_the_digest() -> None:
    first, second = new_key(), new_key()
    assert first != second
    assert len(first) >= 43  # 32 random bytes, base64
    lines = config_lines(first, ["tracker", "subscriber", "tracker"])
    assert first not in lines
    assert f'sha256 = "{digest(first)}"' in lines
    assert 'roles = ["tracker", "subscriber"]' in lines


async def test_journey_keys_new_prints_a_key_that_its_config_lines_let_in(tmp_path: Path) -> None:
    code, output = await run_cli("keys", "new", "--role", "tracker")
    assert code == 0, output
    key = output.split("it is not stored anywhere): ", 1)[1].split("\n", 1)[0]
    lines = output.split("add to the server's config file:\n", 1)[1]
    config = tmp_path / "journey.toml"
    config.write_text(
        f'listen = "127.0.0.1:0"\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "j.db"}"\n'
        + lines
    )
    async with serving(load_settings(config, environ={})) as h:
        track = h.tracker.Track(
            pb.TrackRequest(source_id="web", events=[pb.TrackedEvent(type="t")]),
            metadata=bearer(key),
        )
        assert await code_of(track) == grpc.StatusCode.OK
        settings = h.settings.GetSettings(pb.GetSettingsRequest(), metadata=bearer(key))
        assert await code_of(settings) == grpc.StatusCode.PERMISSION_DENIED
    code, output = await run_cli("keys", "new", "--role", "root")
    assert code == 2
    assert "invalid choice: 'root'" in output
