"""The `journey` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

from journey import keys
from journey.app import StartupError, create_server
from journey.config import ConfigError, Settings, load_settings

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `journey` command."""
    parser = argparse.ArgumentParser(prog="journey", description="Journey system-event server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the server")
    serve_parser.add_argument("--config", metavar="FILE", help="a TOML configuration file")
    keys.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "keys":
        return keys.run(args)

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
    except StartupError as error:
        print(f"journey: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
