"""The `journey` command: `serve`, and the client commands from journey_client.cli."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from journey import keys
from journey.app import StartupError, TracingUnavailable, create_server
from journey.config import ConfigError, Settings, load_settings
from journey_client import cli as client_cli

log = logging.getLogger("journey")


async def serve(settings: Settings) -> None:
    """Run the server until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server, port = await create_server(settings)
    log.info("listening on port %d", port)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop(settings.shutdown_grace.total_seconds())
    log.info("stopped")


def add_serve_command(commands: Any) -> None:
    """`journey serve [--config FILE]`."""
    parser = commands.add_parser("serve", help="run the server")
    parser.add_argument("--config", metavar="FILE", help="a TOML configuration file")
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Load the configuration and serve until a signal; exit codes 2 (config) and 1 (startup).

    Tracing switched on without journey[otel] installed is 2, like a configuration error.
    """
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"journey: configuration error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info("configuration: %s", json.dumps(settings.describe(), sort_keys=True))
    try:
        asyncio.run(serve(settings))
    except TracingUnavailable as error:
        # Something to install, like a bad setting: not a failure of this host.
        print(f"journey: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(f"journey: {error}", file=sys.stderr)
        return 1
    return 0


# Each adds its subcommands, and gives each a `handler(args) -> exit code`.
COMMANDS: tuple[Callable[[Any], None], ...] = (
    add_serve_command,
    keys.add_commands,
    client_cli.add_commands,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `journey` command: parse, then run the chosen command's handler."""
    parser = argparse.ArgumentParser(
        prog="journey", description="Journey: the system-event server and its client commands."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
