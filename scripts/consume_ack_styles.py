"""Measure one Python consumer's events/s against `journey serve`: `await ack()` vs `wait=False`.

Run from the repository root: `.venv/bin/python scripts/consume_ack_styles.py [N] [ROUNDS]`.
It starts a server on SQLite in a temporary directory, tracks about N system events, then, in
each round, drains a new group from the beginning once per style, interleaved.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from journey_client import JourneyClient
from tests.clients.server_process import journey_serve


async def drain(client: JourneyClient, name: str, count: int, wait: bool) -> float:
    """Events/s of one member acking `count` deliveries of a new group (max_in_flight 100)."""
    await client.create_consumer_group(name, start="beginning")
    consumer = client.consume(name, max_in_flight=100)
    got = 0
    began = time.perf_counter()
    async for delivery in consumer:
        await delivery.ack(wait=wait)
        got += 1
        if got == count:
            break
    await consumer.aclose(grace=30)  # the last acks settled: counted in the time
    return count / (time.perf_counter() - began)


async def main(count: int, rounds: int) -> None:
    """Seed, then print each round's figures."""
    directory = Path(tempfile.mkdtemp())
    async with (
        journey_serve(f"sqlite+aiosqlite:///{directory / 'j.db'}", directory) as server,
        JourneyClient(server.address, timeout=60) as client,
    ):
        calls = (count + 2) // 3  # a new profile's Track gives 3 system events
        for first in range(0, calls, 100):
            await asyncio.gather(
                *(
                    client.track("web", ["page-view"], profile_id=f"p{i}")
                    for i in range(first, min(calls, first + 100))
                )
            )
        for round_ in range(rounds):
            for wait in (True, False):
                rate = await drain(client, f"r{round_}-{wait}".lower(), count, wait)
                style = "await ack()" if wait else "ack(wait=False)"
                print(f"round {round_}: {style:16} {rate:8.0f} events/s", flush=True)


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:]]
    asyncio.run(main(*(arguments + [5000, 3][len(arguments) :])))
