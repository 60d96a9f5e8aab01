"""Real `journey` processes: `migrate`, a newer schema, one process per SQLite file and per port."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from journey.storage import migrate
from tests.faults.process import CLEAN_ENV, running, start_server, write_config
from tests.integration.test_cli import run_cli

pytestmark = pytest.mark.slow


async def tables_of(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda c: sorted(inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def set_revision(url: str, revision: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
            )
    finally:
        await engine.dispose()


async def is_serving(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_migrate_prints_what_it_applied_then_that_nothing_is_pending(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url)
    code, output = await run_cli("migrate", "--config", str(config))
    assert code == 0, output
    assert "applied 0001_baseline\napplied 0002_fill_encoded\n" in output
    assert f"the database is at {migrate.head()}" in output
    assert "alembic_version" in await tables_of(database_url)
    code, output = await run_cli("migrate", "--config", str(config))
    assert code == 0, output
    assert "applied" not in output
    assert f"nothing to apply: the database is at {migrate.head()}" in output


async def test_migrate_sql_prints_the_ddl_and_changes_nothing(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url)
    code, output = await run_cli("migrate", "--sql", "--config", str(config))
    assert code == 0, output
    assert re.search(r"CREATE TABLE system_events \(\s+position (BIGINT|INTEGER) NOT NULL", output)
    assert "CREATE UNIQUE INDEX ux_tracked_events_source_event" in output
    assert "CREATE TABLE alembic_version" in output
    assert f"INSERT INTO alembic_version (version_num) VALUES ('{migrate.BASELINE}')" in output
    assert "UPDATE alembic_version SET version_num='0002_fill_encoded'" in output
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "journey.db").exists()
    else:
        assert "BIGSERIAL" in output
        assert await tables_of(database_url) == []


async def test_serve_and_migrate_refuse_a_newer_schema_with_both_revisions_named(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url)
    code, output = await run_cli("migrate", "--config", str(config))
    assert code == 0, output
    await set_revision(database_url, "0042_from_the_future")
    for command in ("serve", "migrate"):
        code, output = await run_cli(command, "--config", str(config))
        assert code == 2, output
        assert "0042_from_the_future" in output
        assert f"its newest is {migrate.head()}" in output
        assert "listening" not in output
        assert "Traceback" not in output


async def test_a_second_serve_on_one_sqlite_file_is_refused_naming_it(tmp_path: Path) -> None:
    database = tmp_path / "journey.db"
    config = write_config(tmp_path, f"sqlite+aiosqlite:///{database}")
    async with running(config) as first:
        code, output = await run_cli("serve", "--config", str(config))
        assert code == 2, output
        assert f"the SQLite database {database} is in use by another journey process" in output
        assert f"(pid {first.process.pid})" in output
        assert "listening" not in output
        code, output = await run_cli("migrate", "--config", str(config))
        assert code == 2, output
        assert str(database) in output
        assert await is_serving(first.port)
        first.terminate()
        assert await first.wait() == 0
    # Stopped, it lets go of the file.
    async with running(config) as again:
        assert await is_serving(again.port)


async def test_a_port_belongs_to_one_server(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first_config = write_config(tmp_path / "a", f"sqlite+aiosqlite:///{tmp_path / 'a' / 'j.db'}")
    async with running(first_config) as first:
        second = write_config(tmp_path / "b", f"sqlite+aiosqlite:///{tmp_path / 'b' / 'j.db'}")
        second.write_text(second.read_text().replace("127.0.0.1:0", first.target))
        code, output = await run_cli("serve", "--config", str(second))
        assert code == 2, output
        assert f"cannot listen on {first.target}: address in use" in output
        assert "listening" not in output
        assert await is_serving(first.port)


async def test_several_workers_on_sqlite_are_refused_naming_postgresql(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'j.db'}")
    code, output = await run_cli("serve", "--config", str(config), "--workers", "2")
    assert code == 2
    assert "workers: 2 processes cannot share an SQLite database" in output
    assert "use PostgreSQL" in output
    code, output = await run_cli("serve", "--config", str(config), "--workers", "0")
    assert code == 2
    assert "--workers: expected a whole number >= 1, not '0'" in output


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.timeout(180)
async def test_replicas_starting_together_on_postgresql_migrate_once(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url)
    servers = await asyncio.gather(*(start_server(config, CLEAN_ENV) for _ in range(3)))
    try:
        for server in servers:
            assert await is_serving(server.port)
    finally:
        for server in servers:
            server.terminate()
        codes = [await server.wait() for server in servers]
    assert codes == [0, 0, 0]
    logs = ["".join(server.output) for server in servers]
    for revision in (
        "0001_baseline",
        "0002_fill_encoded",
        "0003_consumer_groups",
        "0004_group_entry_indexes",
        "0005_group_waiting_in_log",
    ):
        assert sum(f"applied schema revision {revision}" in log for log in logs) == 1, logs
