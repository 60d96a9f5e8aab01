"""The clients' consumer-group calls against the real server: in-process, and killed mid-work."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import pytest

from journey_client import Backoff, Delivery, JourneyClient, NotFound, event_filter, pb
from journey_client.cli import to_json
from tests.clients.server_process import journey_serve
from tests.conftest import SettingsFactory
from tests.groups.members import Member, positions
from tests.integration.harness import serving

pytestmark = pytest.mark.slow

FAST = Backoff(initial=0.05, maximum=0.5)
T = pb.SystemEventType
# A hook that runs until the `journey consume` that started it is gone (hooks run in their
# own process group, so they outlive a SIGKILL of the member; this one does not linger).
UNTIL_THE_MEMBER_DIES = "while kill -0 $PPID 2>/dev/null; do sleep 0.1; done"


async def take(consumer: object, count: int) -> list[Delivery]:
    out: list[Delivery] = []
    async with asyncio.timeout(20):
        async for delivery in consumer:  # type: ignore[attr-defined]
            out.append(delivery)
            if len(out) == count:
                break
    return out


async def test_two_members_ack_nack_reject_then_redrive_and_delete(
    make_settings: SettingsFactory,
) -> None:
    async with (
        serving(make_settings()) as harness,
        JourneyClient(f"127.0.0.1:{harness.port}", backoff=FAST) as client,
    ):
        await client.create_consumer_group(
            "g", event_filter(["visit-started"]), "beginning", ordering="session", max_attempts=3
        )
        # Created again with the same settings: the same group.
        again = await client.create_consumer_group(
            "g", event_filter(["visit-started"]), "end", ordering="session", max_attempts=3
        )
        assert again.ordering == pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION
        for i in range(4):
            await client.track("web", ["page-view"], profile_id=f"p{i}")
        one, two = client.consume("g", max_in_flight=2), client.consume("g", max_in_flight=2)
        first = await take(one, 2)
        second = await take(two, 2)
        got = sorted(d.event.profile_id for d in first + second)
        assert got == ["p0", "p1", "p2", "p3"]
        by_profile = {d.event.profile_id: d for d in first + second}
        assert await by_profile["p0"].ack() is True  # the real server's `settled`
        assert await by_profile["p1"].reject("cannot") is True
        assert await by_profile["p2"].nack(delay=0) is True
        assert await by_profile["p3"].extend() is True
        assert await by_profile["p3"].ack() is True
        # The nacked event goes to a member with room, maybe `two`: it leaves, so `one` gets
        # it (a third attempt when `two` had it when it left).
        await two.aclose()
        (p2,) = await take(one, 1)
        assert p2.event.profile_id == "p2"
        assert p2.attempt >= 2
        assert await p2.ack() is True

        letters = [(d.event.profile_id, d.reason, d.attempts) async for d in
                   client.list_dead_letters("g")]  # fmt: skip
        assert letters == [("p1", "cannot", 1)]
        state = await client.get_consumer_group("g")
        assert state.dead_letter_count == 1
        async with asyncio.timeout(10):  # the server sees `two` leave a moment later
            while (await client.get_consumer_group("g")).member_count != 1:
                await asyncio.sleep(0.02)
        assert await client.redrive_dead_letters("g") == 1
        (p1,) = await take(one, 1)
        assert (p1.event.profile_id, p1.attempt) == ("p1", 1)
        assert await p1.ack() is True
        assert [g.name async for g in client.list_consumer_groups()] == ["g"]

        await client.delete_consumer_group("g")
        with pytest.raises(NotFound):
            await take(one, 1)


async def test_a_member_rejoins_a_restarted_server_and_gets_its_unacked_events_again(
    tmp_path: Path,
) -> None:
    # One database is enough here: this is the client's reconnect, not the server's storage.
    database = f"sqlite+aiosqlite:///{tmp_path / 'j.db'}"
    async with (
        journey_serve(database, tmp_path, shutdown_grace="1s") as server,
        JourneyClient(server.address, timeout=10, backoff=FAST) as client,
    ):
        await client.create_consumer_group("g", event_filter(["profile-created"]), "beginning")
        for i in range(3):
            await client.track("web", ["page-view"], profile_id=f"p{i}")
        consumer = client.consume("g")
        held = await take(consumer, 3)
        assert await held[0].ack() is True
        await server.stop(signal.SIGKILL)
        await server.start()
        again = await take(consumer, 2)
        assert all(d.void for d in held)
        assert await held[1].ack() is False  # void: from the old stream
        assert sorted((d.event.profile_id, d.attempt) for d in again) == [("p1", 2), ("p2", 2)]
        assert consumer.reconnects >= 1
        for delivery in again:
            assert await delivery.ack() is True
        await consumer.aclose()
        state = await client.get_consumer_group("g")
        assert (state.pending_count, state.in_flight_count) == (0, 0)


async def test_the_walkthrough_groups_create_then_consume_exec(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    script = tmp_path / "send-followup.sh"
    script.write_text(
        '#!/bin/sh\ncat > "$OUT/$JOURNEY_POSITION.json"\n'
        'echo "$JOURNEY_EVENT_TYPE $JOURNEY_ATTEMPT" >> "$OUT/runs"\n'
    )
    script.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path)}
    async with (
        serving(make_settings()) as harness,
        JourneyClient(f"127.0.0.1:{harness.port}") as client,
    ):
        server = ("--server", f"127.0.0.1:{harness.port}")
        create = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "journey.cli", "groups", "create", "followups",
            "--type", "visit-ended", "--ordering", "session", *server, env=env,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await create.communicate()
        assert create.returncode == 0
        assert json.loads(out)["ordering"] == "CONSUMER_GROUP_ORDERING_SESSION"
        consume = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "journey.cli", "consume", "followups", "--exec", str(script),
            *server, env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            tracked = await client.track("web", ["page-view"], profile_id="ada")
            ended = await client.end_session(tracked.session_id, "logout")
            (visit_ended,) = [
                e for e in ended.system_events if e.type == T.SYSTEM_EVENT_TYPE_VISIT_ENDED
            ]
            position = visit_ended.position
            async with asyncio.timeout(20):
                while (await client.get_consumer_group("followups")).ack_floor < position:
                    await asyncio.sleep(0.05)
        finally:
            consume.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                _, err = await consume.communicate()
        assert consume.returncode == 0, err.decode()
        assert (tmp_path / "runs").read_text() == "visit-ended 1\n"
        written = (tmp_path / f"{visit_ended.position}.json").read_text()
        assert written == to_json(visit_ended) + "\n"


async def test_a_member_process_sigkilled_mid_work_gives_its_events_to_the_others_at_once(
    make_settings: SettingsFactory,
) -> None:
    # The member is a real `journey consume --exec` process whose hooks never finish; SIGKILL
    # must hand its three events to the member that stays well before the 30 s ack timeout.
    env = {"PATH": "/usr/bin:/bin"}
    async with (
        serving(make_settings()) as harness,
        JourneyClient(f"127.0.0.1:{harness.port}") as client,
    ):
        await client.create_consumer_group("g", start="beginning", ack_timeout=30)
        await client.track("web", ["page-view"], profile_id="ada")  # three system events
        doomed = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "journey.cli", "consume", "g", "--exec", UNTIL_THE_MEMBER_DIES,
            "--concurrency", "3", "--server", f"127.0.0.1:{harness.port}", env=env,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with asyncio.timeout(20):
                while (await client.get_consumer_group("g")).in_flight_count < 3:
                    await asyncio.sleep(0.05)
            staying = Member(pb.ConsumerGroupServiceStub(harness.channel), "g").open()
            with pytest.raises(TimeoutError):
                await staying.read(seconds=0.3)  # nothing for it while the doomed one holds all
            doomed.kill()
            killed_at = time.monotonic()
            got = await staying.deliveries(3, seconds=5)
            handed_over = time.monotonic() - killed_at
        finally:
            if doomed.returncode is None:
                doomed.kill()
            await doomed.wait()
        assert sorted(positions(got)) == [1, 2, 3]
        assert {d.attempt for d in got} == {2}
        assert handed_over < 5  # ack_timeout is 30 s: this came from the stream's end
        staying.close()
