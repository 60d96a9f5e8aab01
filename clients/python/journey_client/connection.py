"""How to reach the servers: addresses, API key and TLS, turned into channels and call metadata."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

DEFAULT_SERVER = "127.0.0.1:50051"
# grpc's own reconnect backoff starts at 1 s and grows to 120 s, and while it waits every call
# fails at once: a restarted server would be found late. Ours is short; options given win.
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
# Calls that may run twice without harm: Track because every event carries an id (the client
# gives one when the caller did not, and a server stores an id once per source), the rest
# because they only read. EndSession is left out: a retry of a close that committed would
# answer FAILED_PRECONDITION. Subscribe is left out: Subscription resumes it itself, and Consume
# (Consumer joins again). CreateConsumerGroup is in: creating a group again with the same
# settings returns it. DeleteConsumerGroup and RedriveDeadLetters are out, as EndSession.
RETRIED_METHODS = (
    ("journey.v1.TrackerService", "Track"),
    ("journey.v1.SessionService", "GetSession"),
    ("journey.v1.SessionService", "GetProfile"),
    ("journey.v1.SettingsService", "GetSettings"),
    ("journey.v1.SystemEventService", "ListSystemEvents"),
    ("journey.v1.ConsumerGroupService", "CreateConsumerGroup"),
    ("journey.v1.ConsumerGroupService", "GetConsumerGroup"),
    ("journey.v1.ConsumerGroupService", "ListConsumerGroups"),
    ("journey.v1.ConsumerGroupService", "ListDeadLetters"),
)
# Each retry attempt is a new pick: under round_robin, checked, it lands on another replica.
# grpc caps maxAttempts at 5.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config(target: str) -> str:
    """The service config for a target: the retry policy, and round_robin unless it is one IP.

    round_robin spreads calls over every address of the target (an ipv4:/ipv6: list, or a DNS
    name's records). One IP address keeps grpc's default, pick_first: it connects when a call
    comes, so a server restarted while nobody called is found at once by the next call, where
    round_robin reconnects in the background and may still be backing off.
    """
    config: dict[str, Any] = {
        "methodConfig": [
            {
                "name": [{"service": s, "method": m} for s, m in RETRIED_METHODS],
                "retryPolicy": RETRY_POLICY,
            }
        ]
    }
    if _family(target) is None:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return json.dumps(config)


# Prefixes of targets in grpc's own URI syntax, passed to grpc as they are.
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def split_servers(servers: str | Sequence[str]) -> tuple[str, ...]:
    """The addresses in a comma-separated string or a list of them (each may hold commas)."""
    given = [servers] if isinstance(servers, str) else list(servers)
    out: list[str] = []
    for item in given:
        if item.strip().startswith(_SCHEMES):
            out.append(item.strip())  # a grpc target: its commas are its own
        else:
            out.extend(part.strip() for part in item.split(",") if part.strip())
    if not out:
        raise ValueError("no server address given")
    if len(out) > 1 and any(s.startswith(_SCHEMES) for s in out):
        raise ValueError("a grpc target (dns:, ipv4:, ...) must be the only address")
    return tuple(out)


def _family(address: str) -> int | None:
    """4 or 6 for an IP literal with a port (`1.2.3.4:5`, `[::1]:5`), None for a host name."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return None
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).version
    except ValueError:
        return None


def targets(servers: Sequence[str]) -> tuple[str, ...]:
    """The grpc targets for these addresses: one when grpc can take them all, else one each.

    One address goes as it is (a DNS name's records are all used). IP literals of one family
    become one `ipv4:`/`ipv6:` target. grpc has no target for a list of host names (nor for a
    mix of families), so those get a channel each, and the client spreads over the channels.
    """
    if len(servers) == 1:
        return (servers[0],)
    families = {_family(s) for s in servers}
    if families == {4}:
        return ("ipv4:" + ",".join(servers),)
    if families == {6}:
        return ("ipv6:" + ",".join(servers),)
    return tuple(servers)


@dataclass(frozen=True)
class Tls:
    """TLS settings: the CA that signed the server's certificate, and a client cert for mTLS."""

    root_ca: bytes | None = None  # None: the system's trusted roots
    cert_chain: bytes | None = None
    private_key: bytes | None = None

    @classmethod
    def from_files(
        cls,
        root_ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
    ) -> Tls:
        """Read the PEM files (each optional) into a Tls."""

        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        if (cert is None) != (key is None):
            raise ValueError("a client certificate and its key go together")
        return cls(read(root_ca), read(cert), read(key))


@dataclass(frozen=True)
class Connection:
    """Where the servers are and how to talk to them."""

    servers: tuple[str, ...] = (DEFAULT_SERVER,)
    api_key: str | None = None
    tls: Tls | None = None
    channel_options: Sequence[tuple[str, Any]] = field(default=())

    @classmethod
    def to(cls, servers: str | Sequence[str], *args: Any) -> Connection:
        """A Connection to "host:port", "a:1,b:2" or a list of addresses."""
        return cls(split_servers(servers), *args)

    @property
    def server(self) -> str:
        """The addresses as one comma-separated string, for messages."""
        return ",".join(self.servers)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata sent with every call: the API key as a bearer token."""
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    def channels(self) -> list[grpc.aio.Channel]:
        """New asyncio channels to the servers (plaintext unless TLS is set); usually one."""
        return [self._channel(target) for target in targets(self.servers)]

    def _channel(self, target: str) -> grpc.aio.Channel:
        defaults: list[tuple[str, Any]] = [
            *RECONNECT_OPTIONS,
            ("grpc.service_config", service_config(target)),
        ]
        if target.startswith(("ipv4:", "ipv6:")) and "," in target:
            # grpc's default authority for a list is the whole list, which no certificate
            # names: check the first address's host, as a client of that address alone would.
            defaults.append(("grpc.default_authority", target.split(":", 1)[1].split(",")[0]))
        given = {name for name, _ in self.channel_options}
        options = [*(o for o in defaults if o[0] not in given), *self.channel_options]
        if self.tls is None:
            return grpc.aio.insecure_channel(target, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls.root_ca,
            private_key=self.tls.private_key,
            certificate_chain=self.tls.cert_chain,
        )
        return grpc.aio.secure_channel(target, credentials, options=options)
