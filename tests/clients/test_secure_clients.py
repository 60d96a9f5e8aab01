"""The clients against a Journey that requires mutual TLS and API keys: options, typed errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from journey.auth import digest
from journey.config import ApiKey, Settings
from journey_client import (
    InvalidArgument,
    JourneyClient,
    PermissionDenied,
    Tls,
    Unauthenticated,
    Unavailable,
    tracked_event,
)
from tests.integration.harness import serving
from tests.integration.test_cli import run_cli
from tests.security.certs import Certificates, make_certificates

TRACKER_KEY = "tracker-key-for-tests"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def secure_settings(tmp_path: Path, certs: Certificates) -> Settings:
    """Mutual TLS, and one key that may only track."""
    return Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}",
        tls_cert_file=str(certs.server_cert),
        tls_key_file=str(certs.server_key),
        tls_client_ca_file=str(certs.ca),
        api_keys=(ApiKey(sha256=digest(TRACKER_KEY), roles=frozenset({"tracker"})),),
    )


async def test_the_python_client_passes_mutual_tls_and_its_key_and_types_the_refusals(
    tmp_path: Path, certs: Certificates
) -> None:
    async with serving(secure_settings(tmp_path, certs)) as h:
        address = f"127.0.0.1:{h.port}"
        tls = Tls.from_files(certs.ca, cert=certs.client_cert, key=certs.client_key)
        async with JourneyClient(address, tls=tls, api_key=TRACKER_KEY) as client:
            response = await client.track("web", [tracked_event("page-view")], profile_id="ada")
            assert response.profile_id == "ada"
            with pytest.raises(PermissionDenied, match="subscriber"):
                await client.get_session(response.session_id)
            # Two bad fields at once: the typed error lists one violation for each.
            with pytest.raises(InvalidArgument) as bad:
                await client.track("", [tracked_event("")])
            assert sorted(v.field for v in bad.value.violations) == ["events[0].type", "source_id"]
        async with JourneyClient(address, tls=tls) as client:
            with pytest.raises(Unauthenticated):
                await client.track("web", ["page-view"])
        # Without the client certificate the handshake itself fails.
        async with JourneyClient(address, tls=Tls.from_files(certs.ca), timeout=5) as client:
            with pytest.raises(Unavailable):
                await client.track("web", ["page-view"])


async def test_the_cli_takes_the_tls_files_and_the_key(tmp_path: Path, certs: Certificates) -> None:
    async with serving(secure_settings(tmp_path, certs)) as h:
        track = [
            "track", "--server", f"127.0.0.1:{h.port}",
            "--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert),
            "--tls-key", str(certs.client_key),
            "--source", "web", "--profile", "grace", "--type", "page-view",
        ]  # fmt: skip
        code, output = await run_cli(*track, "--api-key", TRACKER_KEY)
        assert code == 0, output
        assert '"profileId": "grace"' in output
        code, output = await run_cli(*track)
        assert code == 1
        # One line, naming the server and the status.
        assert output.splitlines() == [
            f"journey: 127.0.0.1:{h.port}: UNAUTHENTICATED: missing API key: send the metadata "
            "'authorization: Bearer KEY'"
        ]
