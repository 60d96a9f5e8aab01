"""Connection options: the API key as a bearer token, TLS and mutual TLS."""

from __future__ import annotations

import grpc
import pytest

from journey_client import JourneyClient, JourneySyncClient, Tls, Unavailable
from tests.clients.fake_server import FakeEvents, FakeSessions, fake_server, make_log
from tests.security.certs import Certificates, make_certificates


async def test_the_api_key_goes_with_every_call_as_a_bearer_token() -> None:
    sessions, events = FakeSessions(), FakeEvents(make_log(2), [])
    async with fake_server(events, sessions) as address:
        async with JourneyClient(address, api_key="k-123") as client:
            await client.get_session("s")
            subscription = client.subscribe(start="beginning")
            await anext(subscription)
            await subscription.aclose()
        async with JourneyClient(address) as client:
            await client.get_session("s")
    assert sessions.metadata[0]["authorization"] == "Bearer k-123"
    assert events.metadata[0]["authorization"] == "Bearer k-123"
    assert "authorization" not in sessions.metadata[1]


def test_the_sync_facade_makes_the_same_calls() -> None:
    import asyncio

    async def scenario() -> None:
        # The fake server runs on this loop, in this thread; the facade on its own loop.
        sessions, events = FakeSessions(), FakeEvents(make_log(5), [])
        async with fake_server(events, sessions) as address:
            session, got, last = await asyncio.to_thread(use_sync_client, address)
        assert session == "abc"
        assert got == [1, 2, 3]
        assert last == 3
        assert sessions.metadata[0]["authorization"] == "Bearer key"

    asyncio.run(scenario())


def use_sync_client(address: str) -> tuple[str, list[int], int | None]:
    """Read a session and three events through JourneySyncClient."""
    with JourneySyncClient(address, api_key="key") as client:
        session = client.get_session("abc").id
        subscription = client.subscribe(start="beginning")
        got = []
        for event in subscription:
            got.append(event.position)
            if len(got) == 3:
                break
        subscription.close()
        return session, got, subscription.last_position


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    return make_certificates(tmp_path_factory.mktemp("pki"))


def server_credentials(pki: Certificates, *, require_client_cert: bool) -> grpc.ServerCredentials:
    """TLS for the fake server; with mutual TLS it trusts client certs signed by the CA."""
    return grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca.read_bytes(),
        require_client_auth=require_client_cert,
    )


async def test_tls_with_the_servers_ca(pki: Certificates) -> None:
    credentials = server_credentials(pki, require_client_cert=False)
    async with fake_server(sessions=FakeSessions(), credentials=credentials) as address:
        tls = Tls.from_files(root_ca=pki.ca)
        async with JourneyClient(address, tls=tls) as client:
            assert (await client.get_session("s")).id == "s"
        # Plaintext against a TLS port does not get through.
        async with JourneyClient(address, timeout=5) as client:
            with pytest.raises(Unavailable):
                await client.get_session("s")


async def test_mutual_tls_needs_the_client_certificate(pki: Certificates) -> None:
    credentials = server_credentials(pki, require_client_cert=True)
    async with fake_server(sessions=FakeSessions(), credentials=credentials) as address:
        client = JourneyClient.with_tls_files(
            address, root_ca=pki.ca, cert=pki.client_cert, key=pki.client_key
        )
        async with client:
            assert (await client.get_session("s")).id == "s"
        async with JourneyClient(address, tls=Tls.from_files(pki.ca), timeout=5) as client:
            with pytest.raises(Unavailable):
                await client.get_session("s")


def test_a_client_certificate_without_its_key_is_refused(pki: Certificates) -> None:
    with pytest.raises(ValueError, match="go together"):
        Tls.from_files(pki.ca, cert=pki.client_cert)
