"""The Node.js client's tests (node --test), the live one against a server started here."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from journey.config import Settings
from tests.integration.harness import serving

pytestmark = pytest.mark.slow

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"


async def test_the_node_client_tracks_and_its_subscriber_receives(tmp_path: Path) -> None:
    # The API is the same on either database; the Node client needs only one.
    database = f"sqlite+aiosqlite:///{tmp_path / 'j.db'}"
    settings = Settings(listen="127.0.0.1:0", database_url=database)
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed: CI runs the Node.js client's tests")
        pytest.skip("node is not installed")
    assert (NODE_CLIENT / "node_modules").exists(), "run `python3 dev.py test` (it runs npm ci)"
    async with serving(settings) as harness:
        env = {"PATH": os.environ["PATH"], "TEST_JOURNEY_ADDRESS": f"127.0.0.1:{harness.port}"}
        process = await asyncio.create_subprocess_exec(
            node, "--test", cwd=NODE_CLIENT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
    report = output.decode()
    assert process.returncode == 0, report
    assert "# fail 0" in report, report
    assert "# skipped 0" in report, report  # the live test ran: it skips without an address
    assert "# pass 4" in report, report
