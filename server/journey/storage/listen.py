"""PostgreSQL commit notifications: the channel the writer notifies, and a connection to hear it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]  # ships no type hints

from journey.storage.database import Database

# Every commit that adds system events sends its last position here, as text.
CHANNEL = "journey_commits"
# Seconds to open the listening connection, as for the pool's (database.py).
CONNECT_TIMEOUT = 5.0


class Listening(Protocol):
    """A connection that hears CHANNEL; it is no longer heard once closed."""

    def is_closed(self) -> bool:
        """Whether the connection has ended (then notifications are being missed)."""
        ...

    def terminate(self) -> None:
        """Close at once, without waiting for the server."""
        ...


# Opens a Listening connection: calls the first callback with each notified position and the
# second once the connection is lost.
Listen = Callable[[Callable[[int], None], Callable[[], None]], Awaitable[Listening]]


# Opens a Listening connection on some channel: calls the first callback with each payload.
ListenText = Callable[[Callable[[str], None], Callable[[], None]], Awaitable[Listening]]


def listener(database: Database) -> Listen | None:
    """How to listen for other processes' commits; None where only one process writes (SQLite)."""
    listen_text = text_listener(database, CHANNEL)
    if listen_text is None:
        return None

    async def listen(on_position: Callable[[int], None], on_lost: Callable[[], None]) -> Listening:
        return await listen_text(lambda payload: on_position(int(payload)), on_lost)

    return listen


def text_listener(database: Database, channel: str) -> ListenText | None:
    """How to listen on `channel` for other processes' payloads; None on SQLite."""
    if database.engine.dialect.name != "postgresql":
        return None
    # Its own connection, not one from the pool: the pool resets a connection when it is
    # released, and the reset runs UNLISTEN *.
    url = database.engine.url
    arguments: dict[str, Any] = url.translate_connect_args(username="user")
    if "ssl" in url.query:
        arguments["ssl"] = url.query["ssl"]

    async def listen(on_payload: Callable[[str], None], on_lost: Callable[[], None]) -> Listening:
        connection = await asyncpg.connect(**arguments, timeout=CONNECT_TIMEOUT)
        listening: Listening = connection
        try:
            connection.add_termination_listener(lambda _connection: on_lost())
            await connection.add_listener(
                channel, lambda _connection, _pid, _channel, payload: on_payload(payload)
            )
        except BaseException:
            connection.terminate()
            raise
        return listening

    return listen
