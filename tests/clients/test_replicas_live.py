"""Several addresses against real `journey serve` processes (each on its own SQLite file)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import grpc
import pytest

from journey_client import JourneyClient, event_filter
from tests.clients.fake_server import FakeSessions, FakeTracker, fake_server
from tests.clients.server_process import ServerProcess, journey_serve

pytestmark = pytest.mark.slow

CLEAN_ENV = {"PATH": "/usr/bin:/bin"}


@asynccontextmanager
async def servers(tmp_path: Path, count: int) -> AsyncIterator[list[ServerProcess]]:
    """`count` independent servers, each with its own database file and log folder."""
    async with AsyncExitStack() as stack:
        out = []
        for i in range(count):
            folder = tmp_path / f"replica-{i}"
            folder.mkdir()
            url = f"sqlite+aiosqlite:///{folder / 'journey.db'}"
            out.append(await stack.enter_async_context(journey_serve(url, folder)))
        yield out


async def profiles_created(address: str) -> set[str]:
    """The profiles whose profile-created event this server stored."""
    async with JourneyClient(address, timeout=10) as client:
        events = client.list_system_events(event_filter(["profile-created"]))
        return {event.profile_id async for event in events}


async def test_tracks_land_on_both_and_go_on_when_one_is_killed(tmp_path: Path) -> None:
    async with servers(tmp_path, 2) as (a, b):
        async with JourneyClient(f"{a.address},{b.address}", timeout=10) as client:
            for i in range(20):
                await client.track("web", ["page-view"], profile_id=f"before-{i}")
            on_a, on_b = await profiles_created(a.address), await profiles_created(b.address)
            # Each call was stored by one server, and both servers got some.
            assert on_a
            assert on_b
            assert not on_a & on_b
            assert on_a | on_b == {f"before-{i}" for i in range(20)}

            assert await a.stop(signal.SIGKILL) == -signal.SIGKILL
            for i in range(20):
                response = await client.track("web", ["page-view"], profile_id=f"after-{i}")
                assert response.profile_id == f"after-{i}"
        assert await profiles_created(b.address) == on_b | {f"after-{i}" for i in range(20)}


async def test_a_track_retried_after_unavailable_is_stored_once(tmp_path: Path) -> None:
    down = FakeTracker()  # a replica going away: it answers UNAVAILABLE to every call
    async with servers(tmp_path, 1) as (real,), fake_server(tracker=down) as fake:
        async with JourneyClient([fake, real.address], timeout=10) as client:
            responses = [
                await client.track("web", ["page-view", "click"], profile_id=f"p{i}")
                for i in range(10)
            ]
        async with JourneyClient(real.address) as client:
            sessions = [await client.get_session(r.session_id) for r in responses]
        assert down.requests, "round-robin never tried the failing replica"
        sent_to_fake = {r.profile_id: [e.id for e in r.events] for r in down.requests}
        for response, session in zip(responses, sessions, strict=True):
            assert session.event_count == 2  # stored once, not once per attempt
            if response.profile_id in sent_to_fake:
                # The retry carried the ids of the attempt that met UNAVAILABLE.
                assert list(response.event_ids) == sent_to_fake[response.profile_id]
        assert await profiles_created(real.address) == {f"p{i}" for i in range(10)}


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Run a `journey` client command; the exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "journey.cli", *args,
        env=CLEAN_ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def server_flags(addresses: Sequence[str], form: str) -> list[str]:
    """`--server a --server b`, or `--server a,b`."""
    if form == "repeated":
        return [flag for address in addresses for flag in ("--server", address)]
    return ["--server", ",".join(addresses)]


@pytest.mark.parametrize("form", ["repeated", "comma-separated"])
async def test_the_cli_uses_every_server_given(form: str) -> None:
    # Both replicas down: the one call is tried on both (grpc's retry alternates between them).
    unavailable = (grpc.StatusCode.UNAVAILABLE, "going away", ())
    fakes = [FakeSessions(failure=unavailable), FakeSessions(failure=unavailable)]
    async with fake_server(sessions=fakes[0]) as a, fake_server(sessions=fakes[1]) as b:
        code, _, err = await run_cli("session", "get", "s1", *server_flags([a, b], form))
        assert code == 1
        assert err.startswith(f"journey: {a},{b}: UNAVAILABLE"), err
        assert all(f.metadata for f in fakes), [len(f.metadata) for f in fakes]
        # One of them back: every call succeeds, wherever it goes first.
        fakes[1].failure = None
        for i in range(3):
            code, out, err = await run_cli("session", "get", f"s{i}", *server_flags([a, b], form))
            assert code == 0, err
            assert f'"id": "s{i}"' in out
