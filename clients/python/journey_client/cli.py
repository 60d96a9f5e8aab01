"""The client commands of `journey` (track, subscribe, events, session, profile, settings...)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from journey_client.client import JourneyClient, tracked_event
from journey_client.connection import DEFAULT_SERVER, Tls
from journey_client.errors import JourneyError
from journey_client.filters import DEFAULT_MAX_BATCH_SIZE, TYPE_NAMES, event_filter, parse_start

Command = Callable[[JourneyClient, argparse.Namespace], Awaitable[None]]


class UsageError(Exception):
    """A bad option value that argparse cannot see (bad JSON, unreadable TLS files)."""


def to_json(message: Message, *, indent: int | None = None) -> str:
    """Canonical proto3 JSON (camelCase names, 64-bit integers as strings), as grpcurl prints."""
    data = json_format.MessageToDict(message)
    # Sorted keys: a Struct's keys have no order, and the same event must print the same line.
    separators = None if indent else (",", ":")
    return json.dumps(data, indent=indent, separators=separators, sort_keys=True)


def emit(message: Message, *, indent: int | None = None) -> None:
    """Print one message as JSON and flush, so a pipe sees it at once."""
    print(to_json(message, indent=indent), flush=True)


async def track(client: JourneyClient, args: argparse.Namespace) -> None:
    """Track one event per --type and print the response."""
    try:
        properties = json.loads(args.properties) if args.properties else None
    except json.JSONDecodeError as error:
        raise UsageError(f"--properties is not JSON: {error}") from None
    if properties is not None and not isinstance(properties, dict):
        raise UsageError("--properties must be a JSON object")
    events = [tracked_event(kind, properties) for kind in args.type]
    response = await client.track(
        args.source, events, profile_id=args.profile, session_id=args.session
    )
    emit(response, indent=2)


async def subscribe(client: JourneyClient, args: argparse.Namespace) -> None:
    """Print each matching system event as one JSON line, for ever, resuming across restarts."""
    subscription = client.subscribe(_filter(args), args.start, max_batch_size=args.max_batch_size)
    async for event in subscription:
        emit(event)


async def list_events(client: JourneyClient, args: argparse.Namespace) -> None:
    """Print every stored matching event as one JSON line, following the pages."""
    events = client.list_system_events(
        _filter(args), start_time=args.since, end_time=args.until, page_size=args.page_size
    )
    async for event in events:
        emit(event)


async def get_session(client: JourneyClient, args: argparse.Namespace) -> None:
    """Print a session."""
    emit(await client.get_session(args.session_id), indent=2)


async def end_session(client: JourneyClient, args: argparse.Namespace) -> None:
    """Close a session and print the response."""
    emit(await client.end_session(args.session_id, args.reason), indent=2)


async def get_profile(client: JourneyClient, args: argparse.Namespace) -> None:
    """Print a profile."""
    emit(await client.get_profile(args.profile_id), indent=2)


async def settings(client: JourneyClient, args: argparse.Namespace) -> None:
    """Print the server's settings."""
    emit(await client.get_settings(), indent=2)


def _filter(args: argparse.Namespace) -> Any:
    return event_filter(
        args.type or (), profile_id=args.profile, session_id=args.session, source_id=args.source
    )


def _timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None


def _start(text: str) -> Any:
    try:
        return parse_start(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _batch_size(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, not {text!r}")
    return int(text)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--server",
        action="append",
        metavar="HOST:PORT",
        help=f"a Journey server (default {DEFAULT_SERVER}); repeat it or give a comma-separated "
        "list for replicas: calls are spread over them and fail over between them",
    )
    group.add_argument("--api-key", metavar="KEY", help="sent as `authorization: Bearer KEY`")
    group.add_argument("--tls", action="store_true", help="use TLS with the system's trusted CAs")
    group.add_argument("--tls-ca", metavar="PEM", help="use TLS; trust this CA certificate")
    group.add_argument("--tls-cert", metavar="PEM", help="client certificate, for mutual TLS")
    group.add_argument("--tls-key", metavar="PEM", help="the client certificate's private key")


def _filter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filter")
    group.add_argument(
        "--type",
        action="append",
        choices=list(TYPE_NAMES),
        metavar="TYPE",
        help=f"only this type (repeatable): {', '.join(TYPE_NAMES)}",
    )
    group.add_argument("--profile", default="", metavar="ID", help="only this profile's events")
    group.add_argument("--session", default="", metavar="ID", help="only this session's events")
    group.add_argument("--source", default="", metavar="ID", help="only this source's events")


def _command(commands: Any, name: str, run: Command, help: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=run_client_command, client_command=run)
    _connection_options(parser)
    return parser


def add_commands(commands: Any) -> None:
    """Add the client commands to a `journey` parser's subcommands."""
    parser = _command(commands, "track", track, "track events and print the response as JSON")
    parser.add_argument("--source", required=True, metavar="ID", help="the tracking source")
    parser.add_argument("--profile", default="", metavar="ID", help="the profile id")
    parser.add_argument("--session", default="", metavar="ID", help="the session id")
    parser.add_argument(
        "--type",
        action="append",
        required=True,
        metavar="TYPE",
        help="the event type, e.g. page-view (repeat for several events)",
    )
    parser.add_argument("--properties", metavar="JSON", help="event properties, a JSON object")

    parser = _command(
        commands,
        "subscribe",
        subscribe,
        "print system events as they happen, one JSON object per line; resumes after restarts",
    )
    _filter_options(parser)
    parser.add_argument(
        "--from",
        dest="start",
        type=_start,
        default="end",
        metavar="beginning|end|POSITION",
        help="where to start: beginning, end (default) or after POSITION (exclusive)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=_batch_size,
        default=DEFAULT_MAX_BATCH_SIZE,
        metavar="N",
        help=f"events per message from the server, default {DEFAULT_MAX_BATCH_SIZE}; 0 or 1 for "
        "one each (output is one line per event either way)",
    )

    events = commands.add_parser("events", help="read the stored system-event log")
    listing = _command(
        events.add_subparsers(dest="events_command", required=True, metavar="COMMAND"),
        "list",
        list_events,
        "print stored system events, one JSON object per line",
    )
    _filter_options(listing)
    listing.add_argument("--since", type=_timestamp, metavar="TIME", help="occurred at or after")
    listing.add_argument("--until", type=_timestamp, metavar="TIME", help="occurred before")
    listing.add_argument("--page-size", type=int, default=0, help="events per call (max 1000)")

    session = commands.add_parser("session", help="read or end a session")
    session_commands = session.add_subparsers(dest="session_command", required=True)
    parser = _command(session_commands, "get", get_session, "print a session")
    parser.add_argument("session_id", metavar="SESSION_ID")
    parser = _command(session_commands, "end", end_session, "close a session")
    parser.add_argument("session_id", metavar="SESSION_ID")
    parser.add_argument("--reason", default="", help="becomes the session-closed reason")

    profile = commands.add_parser("profile", help="read a profile")
    parser = _command(
        profile.add_subparsers(dest="profile_command", required=True),
        "get",
        get_profile,
        "print a profile",
    )
    parser.add_argument("profile_id", metavar="PROFILE_ID")

    _command(commands, "settings", settings, "print the server's settings")

    # The consumer-group commands live in their own module, which builds on this one's helpers.
    from journey_client import cli_groups

    cli_groups.add_commands(commands)


async def _run(args: argparse.Namespace) -> None:
    tls_files = (args.tls_ca, args.tls_cert, args.tls_key)
    try:
        tls = Tls.from_files(*tls_files) if args.tls or any(tls_files) else None
    except (OSError, ValueError) as error:
        raise UsageError(f"TLS: {error}") from None
    command: Command = args.client_command
    try:
        client = JourneyClient(_servers(args), api_key=args.api_key, tls=tls)
    except ValueError as error:
        raise UsageError(f"--server: {error}") from None
    async with client:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        # Ctrl-C and SIGTERM end the command cleanly: cancel it, then exit 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        await command(client, args)


def _servers(args: argparse.Namespace) -> list[str]:
    servers: list[str] | None = args.server
    return servers or [DEFAULT_SERVER]


def run_client_command(args: argparse.Namespace) -> int:
    """Run a parsed client command; one-line errors on stderr, non-zero exit codes."""
    # Reconnect notices of `subscribe` go to stderr, keeping stdout pure JSON.
    logging.basicConfig(level=logging.WARNING, format="journey: %(message)s", stream=sys.stderr)
    try:
        asyncio.run(_run(args))
    except asyncio.CancelledError:
        return 0
    except UsageError as error:
        print(f"journey: {error}", file=sys.stderr)
        return 2
    except JourneyError as error:
        print(
            f"journey: {','.join(_servers(args))}: {error.code.name}: {error.message}",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:
        # The reader went away (`| head`): not an error, and nothing more to print.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m journey_client` (the client commands alone)."""
    parser = argparse.ArgumentParser(prog="journey-client", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
