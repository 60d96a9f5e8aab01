"""The Python client installs and imports on its own, with the root's pins."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dependencies(pyproject: Path) -> dict[str, str]:
    """A pyproject's dependencies: name (extras dropped) -> pinned version."""
    out: dict[str, str] = {}
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        out[name.split("[")[0]] = version
    return out


def test_the_client_package_pins_what_the_root_pins() -> None:
    client = dependencies(ROOT / "clients" / "python" / "pyproject.toml")
    root = dependencies(ROOT / "pyproject.toml")
    assert set(client) == {"grpcio", "protobuf", "grpcio-status"}
    assert all(version for version in client.values())
    assert {name: root[name] for name in client} == client


def test_the_client_imports_without_the_server_or_its_database_packages() -> None:
    blocked = ["journey", "sqlalchemy", "aiosqlite", "asyncpg", "grpc_health", "grpc_reflection"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import journey_client, journey_client.cli, journey_client.sync\n"
        "from journey_client import pb\n"
        "assert len(pb.commented_descriptors()) == 9\n"
        "sys.exit(journey_client.cli.main(['settings', '--help']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--server HOST:PORT" in result.stdout
