"""The consumer-group commands of `journey`: `groups create|list|get|delete|...` and `consume`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from journey_client import cli
from journey_client.client import JourneyClient
from journey_client.consumer import Consumer
from journey_client.errors import JourneyError, NotFound
from journey_client.groups import ORDERINGS, parse_duration
from journey_client.hook import Hook, run_hooks

log = logging.getLogger("journey_client")

# When the group's ack timeout cannot be read (an API key without the role): what the server
# uses by default, and what --exec-timeout then defaults to.
DEFAULT_ACK_TIMEOUT = 30.0


async def create(client: JourneyClient, args: argparse.Namespace) -> None:
    """Create a group (or get it, when it exists with the same settings) and print it."""
    group = await client.create_consumer_group(
        args.name,
        cli._filter(args),
        args.start,
        ack_timeout=args.ack_timeout,
        max_attempts=args.max_attempts,
        ordering=args.ordering,
    )
    cli.emit(group, indent=2)


async def list_groups(client: JourneyClient, args: argparse.Namespace) -> None:
    """Print every group as one JSON line."""
    async for group in client.list_consumer_groups():
        cli.emit(group)


async def get(client: JourneyClient, args: argparse.Namespace) -> None:
    """Print a group and its state."""
    cli.emit(await client.get_consumer_group(args.name), indent=2)


async def delete(client: JourneyClient, args: argparse.Namespace) -> None:
    """Delete a group."""
    await client.delete_consumer_group(args.name)
    print(f"journey: deleted consumer group {args.name}", file=sys.stderr)


async def dead_letters(client: JourneyClient, args: argparse.Namespace) -> None:
    """Print a group's dead letters, one JSON line each."""
    async for dead_letter in client.list_dead_letters(args.name):
        cli.emit(dead_letter)


async def redrive(client: JourneyClient, args: argparse.Namespace) -> None:
    """Put a group's dead letters back and print how many."""
    count = await client.redrive_dead_letters(args.name)
    print(f"journey: {count} dead letters of {args.name} put back", file=sys.stderr)
    print(count, flush=True)


async def consume(client: JourneyClient, args: argparse.Namespace) -> None:
    """Print each delivery's event as a JSON line and ack it once flushed; or run --exec."""
    if args.exec is None:
        if args.concurrency is not None or args.exec_timeout is not None:
            raise cli.UsageError("--concurrency and --exec-timeout go with --exec")
        consumer = client.consume(args.name, max_in_flight=args.max_in_flight or 100)
        try:
            async for delivery in consumer:
                cli.emit(delivery.event)  # flushed: only then is it acked
                await delivery.ack(wait=False)
        finally:
            await consumer.aclose()
        return
    ack_timeout = await _ack_timeout(client, args.name)
    timeout = args.exec_timeout or ack_timeout
    concurrency = args.concurrency or 1
    # Extends every third of the ack timeout (two chances to arrive in time): a run allowed
    # longer than the ack timeout, or one that ends near it, is not handed to another member.
    hook = Hook(args.exec, concurrency=concurrency, timeout=timeout, extend_every=ack_timeout / 3)
    # Held events wait for a free run while their ack timeout ticks: hold no more than run.
    consumer = client.consume(args.name, max_in_flight=args.max_in_flight or concurrency)
    log.warning(
        "consuming %s: running %r for each event (%d at once, at most %gs each)",
        args.name,
        args.exec,
        concurrency,
        timeout,
    )
    await _run(consumer, hook)


async def _run(consumer: Consumer, hook: Hook) -> None:
    try:
        await run_hooks(consumer, hook, cli.to_json)
    finally:
        await consumer.aclose()


async def _ack_timeout(client: JourneyClient, name: str) -> float:
    try:
        group = await client.get_consumer_group(name)
    except NotFound:
        raise
    except JourneyError as error:
        log.warning("cannot read group %s (%s): assuming a %gs ack timeout", name, error,
                    DEFAULT_ACK_TIMEOUT)  # fmt: skip
        return DEFAULT_ACK_TIMEOUT
    return group.ack_timeout.ToTimedelta().total_seconds() or DEFAULT_ACK_TIMEOUT


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text!r}")
    return seconds


def _whole(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number {low} to {high}, not {text!r}"
            )
        return int(text)

    return parse


def add_commands(commands: Any) -> None:
    """Add `groups` and `consume` to a `journey` parser's subcommands."""
    groups = commands.add_parser("groups", help="create, inspect and delete consumer groups")
    subcommands = groups.add_subparsers(dest="groups_command", required=True, metavar="COMMAND")
    parser = cli._command(
        subcommands, "create", create, "create a consumer group (or get it if it is the same)"
    )
    parser.add_argument("name", metavar="NAME", help="1-64 of [a-z0-9._-], from a letter/digit")
    cli._filter_options(parser)
    parser.add_argument(
        "--from",
        dest="start",
        type=cli._start,
        default="end",
        metavar="beginning|end|POSITION",
        help="where the group starts: beginning, end (default) or after POSITION",
    )
    parser.add_argument(
        "--ack-timeout",
        type=_duration,
        metavar="DURATION",
        help="how long a member may hold an event unacknowledged (default 30s; 1s to 1h)",
    )
    parser.add_argument(
        "--max-attempts",
        type=_whole(0, 100),
        default=0,
        metavar="N",
        help="deliveries before an event is dead-lettered (default 5; 1 to 100)",
    )
    parser.add_argument(
        "--ordering",
        choices=list(ORDERINGS),
        default="none",
        help="per-key order: none (default), session or profile",
    )
    cli._command(subcommands, "list", list_groups, "print every consumer group, one JSON line each")
    for name, run, text in (
        ("get", get, "print a consumer group and its state"),
        ("delete", delete, "delete a consumer group; its members' streams end"),
        ("dead-letters", dead_letters, "print a group's dead letters, one JSON line each"),
        ("redrive", redrive, "deliver a group's dead letters again; prints how many"),
    ):
        cli._command(subcommands, name, run, text).add_argument("name", metavar="NAME")

    parser = cli._command(
        commands,
        "consume",
        consume,
        "join a consumer group: print each event as a JSON line and ack it once written, or "
        "run a command per event (--exec)",
    )
    parser.add_argument("name", metavar="NAME", help="the consumer group")
    parser.add_argument(
        "--max-in-flight",
        type=_whole(1, 1000),
        metavar="N",
        help="unacknowledged events held at once (default 100; with --exec, --concurrency)",
    )
    parser.add_argument(
        "--exec",
        metavar="CMD",
        help="run CMD (with sh) once per event: the event's JSON on stdin, JOURNEY_EVENT_TYPE, "
        "JOURNEY_POSITION, JOURNEY_ATTEMPT and JOURNEY_EVENT_ID in its environment; exit 0 "
        "acks, any other exit nacks (retried with backoff, then dead-lettered)",
    )
    parser.add_argument(
        "--concurrency",
        type=_whole(1, 1000),
        metavar="N",
        help="with --exec: runs at once (default 1)",
    )
    parser.add_argument(
        "--exec-timeout",
        type=_duration,
        metavar="DURATION",
        help="with --exec: kill a run after this long and nack its event (default: the "
        "group's ack timeout; longer runs are kept alive with extends)",
    )
