"""`journey groups ...` and `journey consume` (plain and --exec) against a fake group service."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from journey_client import pb
from journey_client.cli import to_json
from tests.clients.fake_groups import FakeGroups, serve_groups
from tests.clients.fake_server import make_log

ENV = {"PATH": "/usr/bin:/bin"}


async def cli(*args: str) -> tuple[int, str, str]:
    """Run `python -m journey_client ARGS` to its end: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "journey_client", *args, env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def running(pid: int) -> bool:
    """Whether a process runs (a zombie does not: when `sh -c` forked for the command, the
    command's parent is gone and whoever inherits it may be slow to reap it)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def until(condition: object, what: str) -> None:
    async with asyncio.timeout(20):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_groups_commands_send_the_settings_and_print_json() -> None:
    fake = FakeGroups()
    server, address = await serve_groups(fake)
    try:
        code, out, err = await cli(
            "groups", "create", "followups", "--server", address, "--type", "visit-ended",
            "--source", "web", "--from", "beginning", "--ack-timeout", "45s",
            "--max-attempts", "7", "--ordering", "session",
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["name"] == "followups"
        (request,) = fake.admin
        assert request.WhichOneof("start") == "beginning"
        assert list(request.filter.types) == [pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED]
        assert request.filter.source_id == "web"
        assert (request.ack_timeout.ToSeconds(), request.max_attempts) == (45, 7)
        assert request.ordering == pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION

        fake.dead_letters = [pb.DeadLetter(event=e, attempts=5, reason="max attempts")
                             for e in make_log(2)]  # fmt: skip
        code, out, err = await cli("groups", "dead-letters", "followups", "--server", address)
        assert code == 0, err
        assert [json.loads(line)["reason"] for line in out.splitlines()] == ["max attempts"] * 2
        code, out, err = await cli("groups", "redrive", "followups", "--server", address)
        assert (code, out) == (0, "2\n"), err
        code, out, err = await cli("groups", "list", "--server", address)
        assert [json.loads(line)["name"] for line in out.splitlines()] == ["followups"]
        code, out, err = await cli("groups", "delete", "followups", "--server", address)
        assert code == 0, err
        code, out, err = await cli("groups", "get", "followups", "--server", address)
        assert code == 1
        assert "NOT_FOUND" in err
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("groups", "create", "g", "--ack-timeout", "soon"), "--ack-timeout"),
        (("groups", "create", "g", "--ordering", "random"), "--ordering"),
        (("groups", "create", "g", "--max-attempts", "101"), "--max-attempts"),
        (("consume", "g", "--exec-timeout", "5s"), "--exec"),
        (("consume", "g", "--exec", "true", "--concurrency", "0"), "--concurrency"),
    ],
)
async def test_bad_input_exits_2_naming_the_option(args: tuple[str, ...], named: str) -> None:
    code, out, err = await cli(*args, "--server", "127.0.0.1:1")
    assert code == 2, err
    assert named in err
    assert out == ""


async def test_consume_prints_json_lines_and_acks_each_once_written() -> None:
    fake = FakeGroups()
    events = make_log(3)
    fake.add(*events)
    server, address = await serve_groups(fake)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "journey_client", "consume", "g", "--server", address, env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            lines = [(await process.stdout.readline()).decode() for _ in events]
        assert lines == [to_json(e) + "\n" for e in events]  # the same JSON as `subscribe`
        await until(lambda: fake.acked == [1, 2, 3], "acked")
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
        assert fake.requests[0].start.max_in_flight == 100
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await server.stop(None)


async def test_consume_exec_acks_on_exit_0_and_nacks_failures_and_timeouts(
    tmp_path: Path,
) -> None:
    # Position 2 fails its first attempt; position 3 hangs on its first attempt.
    script = tmp_path / "hook.sh"
    script.write_text(
        "#!/bin/sh\n"
        'cat > "$OUT/$JOURNEY_POSITION-$JOURNEY_ATTEMPT.json"\n'
        'echo "$JOURNEY_EVENT_TYPE $JOURNEY_POSITION $JOURNEY_ATTEMPT" >> "$OUT/runs"\n'
        'if [ "$JOURNEY_POSITION-$JOURNEY_ATTEMPT" = 2-1 ]; then exit 3; fi\n'
        'if [ "$JOURNEY_POSITION-$JOURNEY_ATTEMPT" = 3-1 ]; then sleep 30; fi\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    fake = FakeGroups()
    await fake.CreateConsumerGroup(pb.CreateConsumerGroupRequest(name="g"), None)  # type: ignore[arg-type]
    events = make_log(3)
    fake.add(*events)
    server, address = await serve_groups(fake)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "journey_client", "consume", "g", "--server", address,
        "--exec", str(script), "--concurrency", "2", "--exec-timeout", "0.5s",
        env={**ENV, "OUT": str(tmp_path)}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await until(lambda: sorted(fake.acked) == [1, 2, 3], "acked")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, err = await process.communicate()
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await server.stop(None)
    runs = sorted((tmp_path / "runs").read_text().splitlines())
    assert runs == ["visit-ended 1 1", "visit-ended 2 1", "visit-ended 2 2",
                    "visit-ended 3 1", "visit-ended 3 2"]  # fmt: skip
    assert (tmp_path / "2-2.json").read_text() == to_json(events[1]) + "\n"
    nacks = [r for r in fake.requests if r.WhichOneof("request") == "nack"]
    assert len(nacks) == 2
    assert not any(r.nack.HasField("retry_delay") for r in nacks)  # the server's backoff
    assert fake.requests[0].start.max_in_flight == 2
    text = err.decode()
    assert "exit 3; nacked" in text
    assert "killed after 0.5s; nacked" in text


async def test_stopping_consume_exec_kills_the_running_command_and_acks_nothing(
    tmp_path: Path,
) -> None:
    script = tmp_path / "hook.sh"
    script.write_text('#!/bin/sh\necho $$ > "$OUT/pid"\nexec sleep 30\n')
    script.chmod(0o755)
    fake = FakeGroups()
    await fake.CreateConsumerGroup(pb.CreateConsumerGroupRequest(name="g"), None)  # type: ignore[arg-type]
    fake.add(*make_log(1))
    server, address = await serve_groups(fake)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "journey_client", "consume", "g", "--server", address,
        "--exec", str(script), env={**ENV, "OUT": str(tmp_path)},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    pid_file = tmp_path / "pid"
    try:
        await until(lambda: pid_file.exists() and pid_file.read_text().strip(), "started")
        pid = int(pid_file.read_text())
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, err = await process.communicate()
        assert process.returncode == 0, err.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await server.stop(None)
    assert not running(pid)  # the command was killed, not left behind
    assert fake.acked == []
    assert not [r for r in fake.requests if r.WhichOneof("request") in ("ack", "nack")]
