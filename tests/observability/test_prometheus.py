"""The shipped alerts and dashboard checked with the real promtool; a real Prometheus scrape."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from journey.config import Settings
from tests.integration.harness import serving, status_of
from tests.observability.scrape import scrape

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "journey.json"
# PromQL words that look like metric names but are not.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
KEYWORDS |= {"unless", "offset", "inf", "nan"}


def tool(name: str) -> str:
    """The path of a Prometheus program; skips without it, but fails in CI, which must run it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: CI runs the Prometheus tests (.ci/run has it)")
        pytest.skip(f"{name} is not installed (Debian's prometheus package has it)")
    return path


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in KEYWORDS:
            continue  # a function, or a keyword
        names.add(match.group())
    return names


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the Grafana dashboard, its variables' queries included."""
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard["templating"]["list"]:
        definition = variable.get("definition", "")
        expressions += re.findall(r"label_values\(([A-Za-z_:][\w:]*)", definition)
    return expressions


def alert_expressions() -> list[str]:
    """The `expr` of each rule in alerts.yml: inline, or a block of the lines indented below it."""
    expressions = []
    lines = (RULES / "alerts.yml").read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"(\s*)(?:- )?expr:\s*(.*)$", line)
        if match is None:
            continue
        if match[2] not in ("|", ">", "|-", ">-"):
            expressions.append(match[2])
            continue
        block = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= len(match[1]):
                break
            block.append(following.strip())
        expressions.append(" ".join(block))
    return expressions


def test_the_name_extraction_finds_names_and_skips_functions_labels_and_keywords() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (le, grpc_method) (rate(a_bucket{x="y z", le="1.0"}'
        "[$__rate_interval]))) / on (instance) group_left b_total + ignoring(kind) c > bool 5"
    )
    assert metric_names(expression) == {"a_bucket", "b_total", "c"}


def test_promtool_checks_and_tests_the_alerts() -> None:
    promtool = tool("promtool")
    for args in (("check", "rules", "alerts.yml"), ("test", "rules", "alerts.test.yml")):
        done = subprocess.run(
            [promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


async def test_the_dashboard_and_alerts_name_only_metrics_a_server_exposes(
    tmp_path: Path,
) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) > 20
    alerts = alert_expressions()
    assert len(alerts) == 4
    wanted = set().union(*map(metric_names, expressions + alerts))
    assert {"grpc_server_handled_total", "journey_sweeper_lateness_seconds_bucket"} <= wanted
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'j.db'}",
        metrics_listen="127.0.0.1:0",
    )
    # Every metric is exposed from the start (at zero), so no traffic is needed.
    async with serving(settings) as h:
        exposed = (await scrape(h.server.metrics_port)).names()
    assert wanted - exposed == set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_real_prometheus_scrapes_journey_and_evaluates_the_alerts(tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'j.db'}",
        metrics_listen="127.0.0.1:0",
    )
    async with serving(settings) as h:
        for i in range(3):
            await h.track("page-view", profile_id=f"p-{i}")
        await status_of(h.track(source_id=""))  # InvalidArgument
        config = tmp_path / "prometheus.yml"
        # JSON is YAML too.
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES / "alerts.yml")],
                    "scrape_configs": [
                        {
                            "job_name": "journey",
                            "static_configs": [{"targets": [f"127.0.0.1:{h.server.metrics_port}"]}],
                        }
                    ],
                }
            )
        )
        api = f"http://127.0.0.1:{free_port()}/api/v1"
        log = (tmp_path / "prometheus.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={api.split('/')[2]}",
            stdout=log,
            stderr=log,
        )
        try:
            track = 'grpc_server_handled_total{job="journey", grpc_method="Track", grpc_code='
            expected = {
                'journey_system_events_total{job="journey", type="visit-started"}': "3",
                'journey_tracked_events_total{job="journey", source_id="other"}': "3",
                track + '"OK"}': "3",
                track + '"InvalidArgument"}': "1",
            }
            found = await _poll(api, expected, process)
            assert found == expected
            # The shipped rules load and evaluate against the real metrics without error.
            groups = (await asyncio.to_thread(get_json, f"{api}/rules"))["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            assert len(rules) == 4
            assert {rule["name"]: rule["health"] for rule in rules} == {
                "JourneySubscriberLagging": "ok",
                "JourneySweeperLate": "ok",
                "JourneyHighErrorRate": "ok",
                "JourneyStorageErrors": "ok",
            }
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            log.close()


async def _poll(
    api: str, expected: dict[str, str], process: asyncio.subprocess.Process
) -> dict[str, str | None]:
    """Query Prometheus until every query has its expected value (or 60 s pass)."""
    found: dict[str, str | None] = {}
    try:
        async with asyncio.timeout(60):
            while True:
                assert process.returncode is None, "prometheus exited; see prometheus.log"
                found = {query: await _value(api, query) for query in expected}
                if found == expected:
                    # The rules are evaluated every second too: one more round for them.
                    await asyncio.sleep(2)
                    return found
                await asyncio.sleep(0.5)
    except TimeoutError:
        return found


async def _value(api: str, query: str) -> str | None:
    url = f"{api}/query?{urllib.parse.urlencode({'query': query})}"
    try:
        answer = await asyncio.to_thread(get_json, url)
    except OSError:
        return None  # not up yet
    results = answer["data"]["result"]
    return str(results[0]["value"][1]) if len(results) == 1 else None
