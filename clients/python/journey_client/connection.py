"""How to reach a server: address, API key and TLS, turned into a channel and call metadata."""

from __future__ import annotations

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
    """Where the server is and how to talk to it."""

    server: str = DEFAULT_SERVER
    api_key: str | None = None
    tls: Tls | None = None
    channel_options: Sequence[tuple[str, Any]] = field(default=())

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata sent with every call: the API key as a bearer token."""
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    def channel(self) -> grpc.aio.Channel:
        """A new asyncio channel to the server (plaintext unless TLS is set)."""
        given = {name for name, _ in self.channel_options}
        options = [*(o for o in RECONNECT_OPTIONS if o[0] not in given), *self.channel_options]
        if self.tls is None:
            return grpc.aio.insecure_channel(self.server, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls.root_ca,
            private_key=self.tls.private_key,
            certificate_chain=self.tls.cert_chain,
        )
        return grpc.aio.secure_channel(self.server, credentials, options=options)
