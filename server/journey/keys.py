"""`journey keys new`: make a fresh API key and print it with its `[[api_keys]]` lines."""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Sequence

from journey.auth import digest
from journey.config import ROLES

# 32 random bytes: 256 bits, far beyond guessing; URL-safe so it fits any header.
_KEY_BYTES = 32


def new_key() -> str:
    """A fresh random key."""
    return secrets.token_urlsafe(_KEY_BYTES)


def config_lines(key: str, roles: Sequence[str]) -> str:
    """The TOML that lets `key` in with `roles`; holds only the key's digest."""
    unique = list(dict.fromkeys(roles))
    return f'[[api_keys]]\nsha256 = "{digest(key)}"\nroles = {json.dumps(unique)}\n'


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys new --role ROLE [--role ...]` to the `journey` command."""
    keys = commands.add_parser("keys", help="manage API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    new = actions.add_parser("new", help="print a fresh API key and its config lines")
    new.add_argument(
        "--role",
        dest="roles",
        action="append",
        choices=ROLES,
        required=True,
        help="a role the key has (repeat for several)",
    )
    new.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the key once (it is stored nowhere) and the lines for the config file."""
    key = new_key()
    print(f"key (give it to the client; it is not stored anywhere): {key}")
    print("add to the server's config file:")
    print(config_lines(key, args.roles), end="")
    return 0
