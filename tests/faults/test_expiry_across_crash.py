"""Fault test 2: visits that time out while the server is down end exactly once after restart."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from journey_client import pb
from tests.faults.load import SOURCE, all_events, stored_visit_ends
from tests.faults.process import Stubs, running, write_config

pytestmark = pytest.mark.slow

ENDED = pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED
SESSIONS = 30
VISIT_TIMEOUT = 2.0


async def open_sessions(stubs: Stubs, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(SESSIONS)]
    await asyncio.gather(
        *(
            stubs.tracker.Track(
                pb.TrackRequest(
                    source_id=SOURCE, session_id=i, events=[pb.TrackedEvent(type="page-view")]
                )
            )
            for i in ids
        )
    )
    return ids


async def visit_ends(stubs: Stubs) -> Counter[str]:
    return Counter(e.session_id for e in await all_events(stubs) if e.type == ENDED)


async def wait_for_visit_ends(stubs: Stubs, sessions: list[str]) -> Counter[str]:
    async with asyncio.timeout(20):
        while not set(sessions) <= set(ended := await visit_ends(stubs)):
            await asyncio.sleep(0.1)
    return ended


async def test_visits_that_time_out_during_a_crash_end_exactly_once(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(
        tmp_path, database_url, f'visit_timeout = "{VISIT_TIMEOUT}s"\nsession_timeout = "1h"\n'
    )
    async with running(config) as server, server.stubs() as stubs:
        # Ended before the crash: these must not end again after it.
        early = await open_sessions(stubs, "early")
        await wait_for_visit_ends(stubs, early)
        # Still open at the crash; their visits time out while the server is down.
        late = await open_sessions(stubs, "late")
        server.kill()
        assert await server.wait() == -9
    # What the killed process left, read from the database while no server runs: a restarted
    # server's sweeper would end the late visits before a client could look.
    before = await stored_visit_ends(database_url)
    assert set(early) <= set(before)
    # The old process died before (nearly all) the late visits timed out; on a slow machine it
    # might have ended a few, which must then not end again.
    assert not set(late) <= set(before), "the crash came too late to test anything"
    # Down for a whole visit timeout: every late visit's deadline passes while nothing runs.
    await asyncio.sleep(VISIT_TIMEOUT)
    async with running(config) as server, server.stubs() as stubs:
        await wait_for_visit_ends(stubs, late)
        # Four more sweeps at least (the sweeper wakes twice a second) that must add nothing.
        await asyncio.sleep(2)
        ended = await visit_ends(stubs)
        for session_id in early + late:
            session = await stubs.sessions.GetSession(pb.GetSessionRequest(session_id=session_id))
            assert session.session.state == pb.SessionState.SESSION_STATE_IDLE
    assert ended == Counter(early + late)
