"""A tiny DNS server on loopback: a name with several A and AAAA records, for client tests."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import cast

A, AAAA = 1, 28


class FakeDns(asyncio.DatagramProtocol):
    """Answers A and AAAA queries from `records` (name -> addresses); other names: NXDOMAIN."""

    def __init__(self, records: Mapping[str, Sequence[str]]) -> None:
        self.records = records
        self.queries: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the socket to answer on."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """Answer one query (RFC 1035 message format, one question, no compression in it)."""
        ident = struct.unpack("!H", data[:2])[0]
        labels, i = [], 12
        while data[i]:
            labels.append(data[i + 1 : i + 1 + data[i]].decode())
            i += 1 + data[i]
        qtype = struct.unpack("!H", data[i + 1 : i + 3])[0]
        question = data[12 : i + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        version = {A: 4, AAAA: 6}.get(qtype)
        answers = [
            ip.packed
            for ip in map(ipaddress.ip_address, self.records.get(name, ()))
            if ip.version == version
        ]
        rcode = 0 if name in self.records else 3
        reply = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(answers), 0, 0) + question
        for rdata in answers:
            # The name is a pointer to the question's (offset 12); a TTL of 1 s.
            reply += struct.pack("!HHHIH", 0xC00C, qtype, 1, 1, len(rdata)) + rdata
        assert self.transport is not None
        self.transport.sendto(reply, addr)


@asynccontextmanager
async def fake_dns(records: Mapping[str, Sequence[str]]) -> AsyncIterator[tuple[str, FakeDns]]:
    """Serve `records` on a free loopback UDP port; yields its host:port and the server."""
    loop = asyncio.get_running_loop()
    server = FakeDns(records)
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{transport.get_extra_info('sockname')[1]}", server
    finally:
        transport.close()
