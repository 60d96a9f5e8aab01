"""Several addresses and fake replicas: calls spread, Track retried elsewhere, failover."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from journey_client import Backoff, JourneyClient, Tls, Unavailable, pb, tracked_event
from journey_client.connection import service_config, split_servers, targets
from tests.clients.fake_dns import fake_dns
from tests.clients.fake_server import (
    Context,
    FakeEvents,
    FakeSessions,
    FakeTracker,
    Step,
    fake_server,
    make_log,
    positions,
)
from tests.security.certs import Certificates, make_certificates

FAST = Backoff(initial=0.001, maximum=0.01)


@pytest.mark.parametrize(
    ("given", "servers", "want"),
    [
        ("10.0.0.1:5", ("10.0.0.1:5",), ("10.0.0.1:5",)),
        ("10.0.0.1:5, 10.0.0.2:6", ("10.0.0.1:5", "10.0.0.2:6"), ("ipv4:10.0.0.1:5,10.0.0.2:6",)),
        (["10.0.0.1:5", "10.0.0.2:6,10.0.0.3:7"], None, ("ipv4:10.0.0.1:5,10.0.0.2:6,10.0.0.3:7",)),
        ("[::1]:5,[fe80::1]:6", None, ("ipv6:[::1]:5,[fe80::1]:6",)),
        ("a.example:5,b.example:6", None, ("a.example:5", "b.example:6")),
        ("10.0.0.1:5,[::1]:6", None, ("10.0.0.1:5", "[::1]:6")),
        ("dns:///journey.internal:5", None, ("dns:///journey.internal:5",)),
        ("ipv4:10.0.0.1:5,10.0.0.2:6", None, ("ipv4:10.0.0.1:5,10.0.0.2:6",)),
    ],
)
def test_addresses_become_as_few_grpc_targets_as_grpc_can_take(
    given: str | list[str], servers: tuple[str, ...] | None, want: tuple[str, ...]
) -> None:
    split = split_servers(given)
    if servers is not None:
        assert split == servers
    assert targets(split) == want


@pytest.mark.parametrize(
    ("target", "balanced"),
    [("10.0.0.1:5", False), ("[::1]:5", False), ("ipv4:10.0.0.1:5,10.0.0.2:6", True),
     ("journey.internal:5", True), ("dns:///journey.internal:5", True)],
)  # fmt: skip
def test_round_robin_for_every_target_but_one_ip(target: str, balanced: bool) -> None:
    # One IP keeps pick_first, which connects when a call comes: a server restarted while
    # nobody called is found at once (tests/integration/test_cli.py restarts one).
    config = json.loads(service_config(target))
    assert ("loadBalancingConfig" in config) == balanced
    assert config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


@pytest.mark.parametrize("given", ["", " , ", [], ["dns:///a:1", "b:2"]])
def test_no_address_or_a_grpc_target_among_others_is_refused(given: str | list[str]) -> None:
    with pytest.raises(ValueError, match="address"):
        split_servers(given)


@asynccontextmanager
async def replicas(*fakes: Mapping[str, Any]) -> AsyncIterator[list[str]]:
    """Fake servers, one per dict of fake_server keywords; yields their addresses."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(fake_server(**f)) for f in fakes]


def as_given(addresses: list[str], form: str) -> str | list[str]:
    """The addresses in one of the forms the client takes."""
    if form == "list":
        return addresses
    if form == "host-names":  # grpc has no target for these: a channel per address
        return ",".join(a.replace("127.0.0.1", "localhost") for a in addresses)
    return ",".join(addresses)


FORMS = ["comma-separated", "list", "host-names"]


@pytest.mark.parametrize("form", FORMS)
async def test_calls_are_spread_over_every_address(form: str) -> None:
    fakes = [FakeSessions() for _ in range(3)]
    async with (
        replicas(*({"sessions": f} for f in fakes)) as addresses,
        JourneyClient(as_given(addresses, form), api_key="k") as client,
    ):
        for i in range(30):
            assert (await client.get_session(f"s{i}")).id == f"s{i}"
    # Round-robin: each replica got its share. grpc's round_robin picks among the READY
    # connections, so the first calls can go to the first one up: roughly even, not exactly.
    assert sum(len(f.metadata) for f in fakes) == 30
    assert min(len(f.metadata) for f in fakes) >= 8, [len(f.metadata) for f in fakes]
    assert all(m["authorization"] == "Bearer k" for f in fakes for m in f.metadata)


@pytest.mark.parametrize("form", FORMS)
async def test_a_track_that_meets_unavailable_is_retried_on_another_replica(form: str) -> None:
    down, up = FakeTracker(), FakeTracker(failure=None)
    async with (
        replicas({"tracker": down}, {"tracker": up}) as addresses,
        JourneyClient(as_given(addresses, form)) as client,
    ):
        for _ in range(10):
            response = await client.track("web", ["page-view", tracked_event("click")])
            assert len(set(response.event_ids)) == 2
    assert len(up.requests) == 10  # every call was stored, once, by the replica that was up
    assert down.requests, "round-robin never tried the failing replica"
    # A retry carries the very ids of the failed attempt: a server that stored them (and
    # answered too late) would not store them again.
    stored = {tuple(e.id for e in r.events) for r in up.requests}
    assert all(tuple(e.id for e in r.events) in stored for r in down.requests)
    assert all(e.id for r in up.requests for e in r.events)


async def test_track_gives_every_event_an_id_and_keeps_the_callers() -> None:
    tracker = FakeTracker(failure=None)
    mine = tracked_event("click", {"x": 1})
    async with fake_server(tracker=tracker) as address, JourneyClient(address) as client:
        first = await client.track("web", ["page-view", mine, tracked_event("buy", id="own")])
        second = await client.track("web", ["page-view"])
    ids = list(first.event_ids) + list(second.event_ids)
    assert ids[2] == "own"
    assert all(ids)
    assert len(set(ids)) == 4
    assert mine.id == ""  # the caller's message was copied, not changed
    assert [e.type for e in tracker.requests[0].events] == ["page-view", "click", "buy"]


async def test_track_gives_up_with_unavailable_when_every_replica_is_down() -> None:
    fakes = [FakeTracker(), FakeTracker()]
    async with (
        replicas(*({"tracker": f} for f in fakes)) as addresses,
        JourneyClient(addresses, timeout=2) as client,
    ):
        with pytest.raises(Unavailable):
            await client.track("web", ["page-view"])
    # grpc's retry policy (5 attempts a round, over both), then more rounds with backoff until
    # the timeout: both replicas were asked, more than one round's worth.
    counts = [len(f.requests) for f in fakes]
    assert min(counts) > 0
    assert sum(counts) > 5


async def test_end_session_is_not_retried() -> None:
    # A close that committed but answered UNAVAILABLE would, retried, answer FAILED_PRECONDITION.
    fakes = [FakeSessions(failure=(grpc.StatusCode.UNAVAILABLE, "down", ())) for _ in range(2)]

    async def end_session(self: FakeSessions, request: object, context: Context) -> None:
        self.metadata.append({})
        await context.abort(grpc.StatusCode.UNAVAILABLE, "down")

    for fake in fakes:
        fake.EndSession = end_session.__get__(fake)  # type: ignore[method-assign]
    async with (
        replicas(*({"sessions": f} for f in fakes)) as addresses,
        JourneyClient(addresses) as client,
    ):
        with pytest.raises(Unavailable):
            await client.end_session("s")
    assert sum(len(f.metadata) for f in fakes) == 1


@dataclass
class Replica(FakeEvents):
    """One replica of a shared log. The first one asked sends three events, then goes away: it
    cuts the stream and answers UNAVAILABLE to every later call. The others serve the log."""

    shared: dict[str, Replica] = field(default_factory=dict)

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeResponse]:
        """Cut or refuse if this is the replica going away, else serve as FakeEvents does."""
        if self.shared.setdefault("dying", self) is self:
            self.script = [Step(0) if self.requests else Step(3)]
        async for response in super().Subscribe(request, context):
            yield response


def asked(fake: FakeEvents) -> list[str | int]:
    """What each Subscribe call asked for: a start name or the after_position."""
    return [
        r.after_position
        if r.WhichOneof("start") == "after_position"
        else str(r.WhichOneof("start"))
        for r in fake.requests
    ]


@pytest.mark.parametrize("form", FORMS)
async def test_a_subscription_cut_on_one_replica_resumes_on_another(form: str) -> None:
    shared: dict[str, Replica] = {}
    fakes = [Replica(make_log(10), [], shared=shared) for _ in range(2)]
    got: list[pb.SystemEvent] = []
    async with (
        replicas(*({"events": f} for f in fakes)) as addresses,
        JourneyClient(as_given(addresses, form), backoff=FAST) as client,
    ):
        subscription = client.subscribe(start="beginning")
        async with asyncio.timeout(10):
            async for event in subscription:
                got.append(event)
                if len(got) == 10:
                    break
        await subscription.aclose()
    dying = shared["dying"]
    (survivor,) = [f for f in fakes if f is not dying]
    assert positions(got) == list(range(1, 11))  # nothing lost, nothing twice, in order
    assert asked(dying)[0] == "beginning"
    assert asked(survivor) == [3]  # resumed there, after the last event delivered
    assert set(asked(dying)[1:]) <= {3}
    assert subscription.last_position == 10


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("form", FORMS)
async def test_tls_with_several_addresses(pki: Certificates, form: str) -> None:
    # grpc's default authority for an ipv4: list is the whole list, which fails the hostname
    # check: the client names the first address's host instead.
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())]
    )
    fakes = [FakeSessions(), FakeSessions()]
    async with replicas(*({"sessions": f, "credentials": credentials} for f in fakes)) as addresses:
        tls = Tls.from_files(root_ca=pki.ca)
        async with JourneyClient(as_given(addresses, form), tls=tls, timeout=5) as client:
            for i in range(6):
                assert (await client.get_session(f"s{i}")).id == f"s{i}"
    assert min(len(f.metadata) for f in fakes) >= 1  # both reached over TLS


async def test_a_dns_name_with_several_records_is_spread_and_fails_over() -> None:
    # This machine's "localhost" has one record, so a DNS server of our own serves a name with
    # an A and an AAAA record; grpc's resolver asks it when the target names it (dns://HOST/).
    v4, v6 = FakeTracker(failure=None), FakeTracker(failure=None)
    async with (
        fake_dns({"journey.test": ["127.0.0.1", "::1"]}) as (dns, resolver),
        fake_server(tracker=v4) as on_v4,
    ):
        port = on_v4.rpartition(":")[2]
        async with fake_server(tracker=v6, listen=f"[::1]:{port}") as on_v6:
            assert on_v6 == f"[::1]:{port}"
            async with JourneyClient(f"dns://{dns}/journey.test:{port}", timeout=5) as client:
                for _ in range(10):
                    await client.track("web", ["page-view"])
                assert len(v4.requests) >= 4, (len(v4.requests), len(v6.requests))
                assert len(v6.requests) >= 4, (len(v4.requests), len(v6.requests))
                # The IPv4 replica goes away mid-way: A record and all, its calls go to the other.
                v4.failure = grpc.StatusCode.UNAVAILABLE
                for _ in range(10):
                    await client.track("web", ["page-view"])
        assert len(v6.requests) >= 14
        assert {name for name, _ in resolver.queries} == {"journey.test"}
