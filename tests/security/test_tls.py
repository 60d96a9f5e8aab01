"""TLS and mutual TLS: certificates made for the test, raw stubs over ssl channel credentials."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from journey.app import StartupError, create_server
from journey.config import Settings
from journey_client import pb
from tests.integration.harness import serving
from tests.security.certs import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def tls_settings(tmp_path: Path, certs: Certificates, *, mutual: bool) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}",
        tls_cert_file=str(certs.server_cert),
        tls_key_file=str(certs.server_key),
        tls_client_ca_file=str(certs.ca) if mutual else "",
    )


async def track_over(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """Track one event; the status code it ended with."""
    try:
        await pb.TrackerServiceStub(channel).Track(
            pb.TrackRequest(source_id="web", events=[pb.TrackedEvent(type="t")]), timeout=10
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def credentials(
    certs: Certificates, client: tuple[Path, Path] | None = None, ca: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(ca or certs.ca).read_bytes(),
        private_key=client[1].read_bytes() if client else None,
        certificate_chain=client[0].read_bytes() if client else None,
    )


async def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(
    tmp_path: Path, certs: Certificates
) -> None:
    async with serving(tls_settings(tmp_path, certs, mutual=False)) as h:
        target = f"127.0.0.1:{h.port}"
        async with grpc.aio.secure_channel(target, credentials(certs)) as channel:
            assert await track_over(channel) == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(target) as channel:
            assert await track_over(channel) == grpc.StatusCode.UNAVAILABLE
        # A client that does not trust our CA refuses the server.
        wrong_ca = credentials(certs, ca=certs.rogue_ca)
        async with grpc.aio.secure_channel(target, wrong_ca) as channel:
            assert await track_over(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    tmp_path: Path, certs: Certificates
) -> None:
    async with serving(tls_settings(tmp_path, certs, mutual=True)) as h:
        target = f"127.0.0.1:{h.port}"
        good = credentials(certs, (certs.client_cert, certs.client_key))
        async with grpc.aio.secure_channel(target, good) as channel:
            assert await track_over(channel) == grpc.StatusCode.OK
        async with grpc.aio.secure_channel(target, credentials(certs)) as channel:
            assert await track_over(channel) == grpc.StatusCode.UNAVAILABLE
        rogue = credentials(certs, (certs.rogue_client_cert, certs.rogue_client_key))
        async with grpc.aio.secure_channel(target, rogue) as channel:
            assert await track_over(channel) == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(target) as channel:
            assert await track_over(channel) == grpc.StatusCode.UNAVAILABLE
        # Only the good client's Track got in: one session, so one session-opened.
        async with grpc.aio.secure_channel(target, good) as channel:
            page = await pb.SystemEventServiceStub(channel).ListSystemEvents(
                pb.ListSystemEventsRequest()
            )
        assert [e.type for e in page.system_events].count(
            pb.SystemEventType.SYSTEM_EVENT_TYPE_SESSION_OPENED
        ) == 1


@pytest.mark.parametrize("setting", ["tls_cert_file", "tls_key_file", "tls_client_ca_file"])
async def test_a_missing_or_bad_tls_file_stops_the_start_with_its_setting_named(
    tmp_path: Path, certs: Certificates, setting: str
) -> None:
    settings = tls_settings(tmp_path, certs, mutual=True)
    missing = Settings(**{**settings.__dict__, setting: str(tmp_path / "nowhere.pem")})
    with pytest.raises(StartupError, match=rf"^{setting}: cannot read .*nowhere\.pem"):
        await create_server(missing)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    bad = Settings(**{**settings.__dict__, setting: str(not_pem)})
    with pytest.raises(StartupError, match=rf"^{setting}: .*not\.pem is not PEM"):
        await create_server(bad)
