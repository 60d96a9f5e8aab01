"""A database written by the release before migrations (its own code) upgrades in place, intact."""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from google.protobuf.empty_pb2 import Empty
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from journey_client import pb
from tests.faults.process import CLEAN_ENV, ServerProcess, start_server, write_config
from tests.integration.harness import all_events
from tests.integration.test_cli import run_cli
from tests.integration.test_migrations import run_sql

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# The last release without migrations: its server created the tables with create_all and
# filled system_events.encoded at start.
PREVIOUS_RELEASE = "d7054c2"


def previous_release(into: Path) -> Path:
    """That release's server and client code, from git, in `into`."""
    archive = subprocess.run(
        ["git", "archive", PREVIOUS_RELEASE, "server", "clients/python"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.fail(f"needs the git history (a full clone): {archive.stderr.decode()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


async def table_names(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda c: sorted(inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def write_some_history(server: ServerProcess) -> tuple[list[str], list[str]]:
    """Track visits of three profiles with properties, end one session; the ids it made."""
    sessions, profiles = [], []
    async with server.stubs() as stubs:
        for profile in ("alice", "bob", "carol"):
            for visit in range(2):
                event = pb.TrackedEvent(type="page-view", id=f"{profile}-{visit}")
                event.properties.update({"url": f"/{profile}/{visit}", "n": visit})
                reply = await stubs.tracker.Track(
                    pb.TrackRequest(source_id="web", profile_id=profile, events=[event])
                )
                sessions.append(reply.session_id)
            profiles.append(profile)
        await stubs.sessions.EndSession(pb.EndSessionRequest(session_id=sessions[0], reason="bye"))
    return sorted(set(sessions)), profiles


async def snapshot(
    server: ServerProcess, sessions: list[str], profiles: list[str]
) -> tuple[list[pb.SystemEvent], list[pb.Session], list[pb.Profile], list[pb.SystemEvent]]:
    """Everything the server serves about that history: list, sessions, profiles, a replay."""
    async with server.stubs() as stubs:
        listed = await all_events(stubs.events)
        got_sessions = [
            (await stubs.sessions.GetSession(pb.GetSessionRequest(session_id=s))).session
            for s in sessions
        ]
        got_profiles = [
            (await stubs.sessions.GetProfile(pb.GetProfileRequest(profile_id=p))).profile
            for p in profiles
        ]
        replayed: list[pb.SystemEvent] = []
        stream = stubs.events.Subscribe(pb.SubscribeRequest(beginning=Empty(), max_batch_size=1000))
        async with asyncio.timeout(20):
            async for message in stream:
                replayed.extend(message.batch.events)
                if message.HasField("caught_up"):
                    break
        stream.cancel()
    return listed, got_sessions, got_profiles, replayed


@pytest.mark.timeout(180)
@pytest.mark.parametrize("encoded_column", ["filled", "absent"])
async def test_a_database_of_the_previous_release_upgrades_in_place(
    tmp_path: Path, database_url: str, encoded_column: str
) -> None:
    old = previous_release(tmp_path / "old")
    config = write_config(tmp_path, database_url)
    old_env = {**CLEAN_ENV, "PYTHONPATH": f"{old / 'server'}:{old / 'clients' / 'python'}"}
    server = await start_server(config, old_env)
    try:
        sessions, profiles = await write_some_history(server)
        before = await snapshot(server, sessions, profiles)
        server.terminate()
        assert await server.wait() == 0
    finally:
        if server.process.returncode is None:
            server.kill()
            await server.wait()
    # It was the old code that wrote it: no migrations, no alembic_version.
    assert "schema revision" not in "".join(server.output)
    assert "alembic_version" not in await table_names(database_url)
    listed = before[0]
    assert len(listed) == 3 * (3 + 2) + 1 + 1  # per profile: 3, then 2 per later visit; a close
    assert before[3] == listed
    if encoded_column == "absent":
        # As the release before batched delivery left it.
        await run_sql(database_url, "ALTER TABLE system_events DROP COLUMN encoded")

    code, output = await run_cli("migrate", "--config", str(config))
    assert code == 0, output
    assert "stamped at 0001_baseline\napplied 0002_fill_encoded\n" in output

    server = await start_server(config)
    try:
        after = await snapshot(server, sessions, profiles)
        async with server.stubs() as stubs:
            reply = await stubs.tracker.Track(
                pb.TrackRequest(
                    source_id="web",
                    profile_id="alice",
                    events=[pb.TrackedEvent(type="page-view", id="alice-0")],
                )
            )
        server.terminate()
        assert await server.wait() == 0
    finally:
        if server.process.returncode is None:
            server.kill()
            await server.wait()
    assert "applied schema revision" not in "".join(server.output)
    assert after == before
    # The old release's idempotency records came along: a retried event is not stored again.
    assert list(reply.system_events) == []
    assert [e.position for e in after[0]] == list(range(1, len(listed) + 1))
