"""The Node.js client's tests (node --test), the live one against a server started here."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from journey.auth import digest
from journey.config import ApiKey, Settings
from tests.integration.harness import serving
from tests.security.certs import make_certificates

pytestmark = pytest.mark.slow

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"


@pytest.mark.parametrize("secure", [False, True], ids=["plaintext", "mutual-tls-and-key"])
async def test_the_node_client_tracks_and_its_subscriber_receives(
    tmp_path: Path, secure: bool
) -> None:
    # The API is the same on either database; the Node client needs only one.
    database = f"sqlite+aiosqlite:///{tmp_path / 'j.db'}"
    settings = Settings(listen="127.0.0.1:0", database_url=database)
    env = {"PATH": os.environ["PATH"]}
    if secure:
        certs = make_certificates(tmp_path)
        key = "node-test-key"
        roles = frozenset({"tracker", "subscriber", "admin"})
        settings = Settings(
            **{
                **settings.__dict__,
                "tls_cert_file": str(certs.server_cert),
                "tls_key_file": str(certs.server_key),
                "tls_client_ca_file": str(certs.ca),
                "api_keys": (ApiKey(sha256=digest(key), roles=roles),),
            }
        )
        env |= {
            "TEST_JOURNEY_TLS_CA": str(certs.ca),
            "TEST_JOURNEY_TLS_CERT": str(certs.client_cert),
            "TEST_JOURNEY_TLS_KEY": str(certs.client_key),
            "TEST_JOURNEY_API_KEY": key,
        }
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed: CI runs the Node.js client's tests")
        pytest.skip("node is not installed")
    assert (NODE_CLIENT / "node_modules").exists(), "run `python3 dev.py test` (it runs npm ci)"
    async with serving(settings) as harness:
        env["TEST_JOURNEY_ADDRESS"] = f"127.0.0.1:{harness.port}"
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
    assert "# pass 25" in report, report  # every test of clients/node/test ran
