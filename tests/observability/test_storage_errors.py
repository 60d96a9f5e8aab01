"""Storage failures are counted by kind: a full SQLite file, a PostgreSQL that went away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import event

from journey.config import Settings
from tests.faults import test_storage_unavailable as faults
from tests.faults.proxy import Proxy
from tests.faults.test_storage_unavailable import eventually_ok, stop_sweeping, track
from tests.integration.harness import serving, status_of
from tests.observability.scrape import scrape

pytestmark = pytest.mark.slow
# The fault tests' proxied_postgres fixture: the test database behind a proxy that can cut it.
cuttable_postgres = faults.proxied_postgres


async def test_a_full_sqlite_file_counts_as_full(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}"
    settings = Settings(listen="127.0.0.1:0", database_url=url, metrics_listen="127.0.0.1:0")
    async with serving(settings) as h:
        await track(h, "before")
        engines = h.server.database.sync_engines

        def no_more_pages(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA page_count")
            (pages,) = cursor.fetchone()
            cursor.execute(f"PRAGMA max_page_count={pages}")
            cursor.close()

        for engine in engines:
            event.listen(engine, "connect", no_more_pages)
        await stop_sweeping(h)
        await h.server.writer.let_go()
        await h.server.database.close()
        try:
            for i in range(3):
                full = track(h, f"full-{i}", text="x" * 60_000)
                assert await status_of(full) == grpc.StatusCode.UNAVAILABLE
        finally:
            for engine in engines:
                event.remove(engine, "connect", no_more_pages)
            await h.server.writer.let_go()
            await h.server.database.close()
        s = await scrape(h.server.metrics_port)
    assert s.value("journey_storage_errors_total", kind="full") == 3
    assert s.value("journey_storage_errors_total", kind="unavailable") == 0


async def test_postgresql_down_counts_as_unavailable(cuttable_postgres: tuple[Proxy, str]) -> None:
    proxy, url = cuttable_postgres
    settings = Settings(listen="127.0.0.1:0", database_url=url, metrics_listen="127.0.0.1:0")
    async with serving(settings) as h:
        await track(h, "before")
        await stop_sweeping(h)
        proxy.cut()
        assert await status_of(track(h, "down")) == grpc.StatusCode.UNAVAILABLE
        s = await scrape(h.server.metrics_port)
        assert s.value("journey_storage_errors_total", kind="unavailable") == 1
        proxy.restore()
        await eventually_ok(lambda: track(h, "after"))
    assert s.value("journey_storage_errors_total", kind="full") == 0
