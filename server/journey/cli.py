"""The `journey` command: `serve`, `migrate`, and the client commands from journey_client.cli."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from journey import keys, runtime, workers
from journey.app import (
    StartupError,
    TracingUnavailable,
    create_server,
    hold_database,
    open_migrated,
)
from journey.config import ConfigError, Settings, load_settings
from journey.logs import configure_logging, database_secrets
from journey.storage import migrate
from journey_client import cli as client_cli

log = logging.getLogger("journey")


async def serve(
    settings: Settings, *, worker: int = 0, ready: Callable[[int], None] | None = None
) -> None:
    """Run the server until SIGTERM or SIGINT, then stop gracefully.

    A worker of `journey serve --workers` (`worker` > 0) shares its port with the others and
    calls `ready` with the port once it serves.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server, port = await create_server(settings, reuse_port=worker > 0)
    if worker:
        log.info("worker %d (pid %d) serving on port %d", worker, os.getpid(), port)
    else:
        log.info("listening on port %d", port)
    runtime.settle_heap()
    if ready is not None:
        ready(port)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop(settings.shutdown_grace.total_seconds())
    log.info("stopped")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return value


def add_serve_command(commands: Any) -> None:
    """`journey serve [--config FILE] [--workers N]`, `journey migrate [--config FILE] [--sql]`."""
    parser = commands.add_parser("serve", help="run the server")
    parser.add_argument("--config", metavar="FILE", help="a TOML configuration file")
    parser.add_argument(
        "--workers",
        metavar="N",
        type=_positive,
        help="server processes sharing the port (PostgreSQL only); overrides `workers`",
    )
    parser.set_defaults(handler=run_serve)
    parser = commands.add_parser(
        "migrate", help="bring the database's schema up to date (serve also does, at start)"
    )
    parser.add_argument("--config", metavar="FILE", help="a TOML configuration file")
    parser.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL that makes an empty database current, and change nothing",
    )
    parser.set_defaults(handler=run_migrate)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    if getattr(args, "workers", None) is not None:
        settings = dataclasses.replace(settings, workers=args.workers)
    return settings


def _log_to_stderr(settings: Settings) -> Callable[[str], str]:
    """Log to stderr as configured; returns what masks secrets in a message printed directly."""
    return configure_logging(
        settings.log_level, settings.log_format, database_secrets(settings.database_url)
    )


def run_serve(args: argparse.Namespace) -> int:
    """Load the configuration and serve until a signal; exit codes 2 (config) and 1 (startup).

    Tracing switched on without journey[otel] installed is 2, like a configuration error.
    """
    try:
        settings = _settings(args)
    except ConfigError as error:
        print(f"journey: configuration error: {error}", file=sys.stderr)
        return 2
    redact = _log_to_stderr(settings)
    log.info("configuration: %s", json.dumps(settings.describe(), sort_keys=True))
    try:
        if settings.workers > 1:
            return _serve_workers(settings, args.config)
        runtime.tune()
        asyncio.run(serve(settings))
    except TracingUnavailable as error:
        # Something to install, like a bad setting: not a failure of this host.
        print(f"journey: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(f"journey: {redact(str(error))}", file=sys.stderr)
        return error.exit_code
    except workers.WorkersError as error:
        print(f"journey: {redact(str(error))}", file=sys.stderr)
        return error.exit_code
    return 0


def _serve_workers(settings: Settings, config: str | None) -> int:
    """Migrate once, reserve the port, then run `settings.workers` worker processes."""
    asyncio.run(_migrate_once(settings))
    reservation = workers.PortReservation(settings.listen)
    try:
        supervisor = workers.Supervisor(
            settings.workers,
            functools.partial(run_worker, config),
            reservation.listen,
            settings.shutdown_grace.total_seconds(),
        )
        code = supervisor.run()
    finally:
        reservation.close()
    log.info("stopped")
    return code


async def _migrate_once(settings: Settings) -> migrate.Outcome | None:
    database = await open_migrated(settings)
    await database.close()
    return database.migration


def run_worker(config: str | None, number: int, listen: str, ready: Connection) -> None:
    """A worker process of `journey serve --workers` (started with `spawn`: a fresh interpreter)."""
    workers.die_with_parent()
    # The parent handles Ctrl-C for the group and sends each worker SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loaded = load_settings(config)
    settings = dataclasses.replace(
        loaded,
        listen=listen,
        metrics_listen=workers.metrics_listen_for(loaded.metrics_listen, number),
    )
    redact = _log_to_stderr(settings)

    def tell_parent(port: int) -> None:
        ready.send(port)
        ready.close()

    runtime.tune()
    try:
        asyncio.run(serve(settings, worker=number, ready=tell_parent))
    except StartupError as error:
        print(f"journey: worker {number}: {redact(str(error))}", file=sys.stderr)
        sys.exit(error.exit_code)


def run_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations and print them; with --sql, print the SQL and change nothing."""
    try:
        settings = _settings(args)
    except ConfigError as error:
        print(f"journey: configuration error: {error}", file=sys.stderr)
        return 2
    if args.sql:
        migrate.write_sql(settings.database_url, sys.stdout)
        return 0
    redact = _log_to_stderr(settings)
    try:
        lock = hold_database(settings)
        try:
            outcome = asyncio.run(_migrate_once(settings))
        finally:
            if lock is not None:
                lock.release()
    except StartupError as error:
        print(f"journey: {redact(str(error))}", file=sys.stderr)
        return error.exit_code
    assert outcome is not None
    if outcome.stamped:
        print(f"a database made before migrations: stamped at {migrate.BASELINE}")
    for revision in outcome.applied:
        print(f"applied {revision}")
    if not outcome.applied:
        print(f"nothing to apply: the database is at {outcome.head}")
    else:
        print(f"the database is at {outcome.head}")
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
