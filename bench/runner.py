"""Runs every scenario against the baseline, Journey (SQLite, PostgreSQL), variants and NATS."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bench import postgres, report, servers
from bench.scenarios import FULL, QUICK, Plan, Scenario, Sizes, chosen_scenarios
from journey.config import Settings

ROOT = Path(__file__).resolve().parent.parent
LOAD_TIMEOUT = 600.0
NATS = "nats"
# Journey with metrics on, beside the journey column (metrics off) in the same run: the
# overhead of metrics is the ratio of the two.
METRICS = "journey+metrics"
METRICS_ENV = {"JOURNEY_METRICS_LISTEN": "127.0.0.1:0"}
# The PostgreSQL columns' worker counts: 1 is journey-pg, N > 1 journey-pg-wN.
DEFAULT_WORKERS = "1,2"
# Of load per run in the interleaved rounds of scenario 8 against NATS: past the one-second
# warm-up, and short enough that 9 rounds of both take about two minutes.
INGEST_ROUND_SECONDS = 4.0
# Tells this run's databases from another run's on the same PostgreSQL server.
RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Server:
    """A column of the table: the baseline, Journey, or Journey from another checkout."""

    name: str
    checkout: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # On a fresh PostgreSQL database rather than an SQLite file.
    postgres: bool = False
    # More settings for Journey's config file (e.g. workers).
    config: dict[str, Any] = field(default_factory=dict)
    # This version in one of its configurations: a candidate for the best Journey figure.
    candidate: bool = False
    # Why every cell of this column is an error without running anything.
    unavailable: str | None = None

    @property
    def is_baseline(self) -> bool:
        """Whether this is the storage-free baseline."""
        return self.name == "baseline"

    @property
    def is_nats(self) -> bool:
        """Whether this is NATS JetStream, a server the benchmark finds rather than starts."""
        return self.name == NATS


def parse_variant(text: str) -> Server:
    """LABEL:PATH[:KEY=VALUE,...]; PATH "." is this checkout."""
    label, _, rest = text.partition(":")
    path, _, env_text = rest.partition(":")
    if not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL:PATH[:KEY=VALUE,...], got {text!r}")
    env = dict(pair.split("=", 1) for pair in env_text.split(",") if pair)
    checkout = None if path == "." else Path(path).resolve()
    return Server(label, checkout, env)


def run_load(plan: Plan, target: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Run the plan's workload in a fresh load-generator process."""
    spec = {"workload": plan.workload, "args": {"target": target, **plan.args, **extra}}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.load", json.dumps(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=LOAD_TIMEOUT,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        return {"error": f"load generator exit {completed.returncode}: {completed.stderr[-1500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def pg_column(workers: int) -> Server:
    """Journey on PostgreSQL with `workers` processes, or an error column if it cannot be."""
    if workers == 1:
        return Server("journey-pg", postgres=True, candidate=True)
    known = {f.name for f in dataclasses.fields(Settings)}
    unavailable = None
    if "workers" not in known:
        unavailable = (
            "this checkout's journey has no `workers` setting "
            "(issue 12's `journey serve --workers` is not merged)"
        )
    return Server(
        f"journey-pg-w{workers}",
        postgres=True,
        config={"workers": workers},
        candidate=True,
        unavailable=unavailable,
    )


def not_run(scenario: Scenario, plan: Plan, server: Server, quick: bool) -> dict[str, Any] | None:
    """Why this Journey column has no figure for this scenario, as its cell; None: run it."""
    if server.unavailable is not None:
        return {"error": server.unavailable}
    if plan.replicas > 1 and not server.postgres:
        return {"skipped": "n/a: replicas share a PostgreSQL database; SQLite is one process"}
    # The quick run keeps to one worker: `--workers` has tests of its own, and CI's time is short.
    quick_ok = scenario.postgres_in_quick and not server.config.get("workers", 1) > 1
    if quick and server.postgres and not quick_ok:
        return {"skipped": "not in the quick run"}
    return None


def scraped_track_calls(port: int) -> float:
    """The Track calls that a server's /metrics counts as answered OK."""
    # Imported here: the rest of the benchmark does not need prometheus-client.
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels.get("grpc_method") == "Track"
        and sample.labels.get("grpc_code") == "OK"
    )


def run_one(
    scenario: Scenario, sizes: Sizes, server: Server, workdir: Path, quick: bool = False
) -> dict[str, Any]:
    """One scenario against one server, on a fresh database."""
    if server.name == METRICS and not scenario.metrics_overhead:
        return {"skipped": "metrics overhead is measured on the Track scenarios only"}
    if server.is_nats:
        if scenario.nats is None:
            return {"skipped": scenario.nats_note}
        return run_load(scenario.nats(sizes), nats_url(), {})
    plan = scenario.plan(sizes)
    if server.is_baseline:
        if plan.baseline_replay is None:
            return {"skipped": scenario.baseline_note}
        try:
            with servers.baseline(workdir, plan.baseline_replay) as running:
                return run_load(
                    plan, running.target, {"pid": running.pid} if plan.needs_pid else {}
                )
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            return {"error": str(error)}
    return not_run(scenario, plan, server, quick) or run_journey(scenario, plan, server, workdir)


def run_journey(scenario: Scenario, plan: Plan, server: Server, workdir: Path) -> dict[str, Any]:
    """Journey (plan.replicas processes) on a fresh SQLite file or PostgreSQL database."""
    extra: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            # Left last: the servers stop before their database is dropped.
            if server.postgres:
                name = postgres.database_name(RUN_ID, scenario.key, server.name)
                url = stack.enter_context(postgres.fresh_database(postgres.admin_url(), name))
            else:
                url = f"sqlite+aiosqlite:///{workdir / 'journey.db'}"
            if plan.seed is not None:
                extra.update(plan.seed(url))
            replicas = [
                stack.enter_context(
                    servers.journey(
                        workdir,
                        url,
                        {**plan.journey_config, **server.config},
                        checkout=server.checkout,
                        env=server.env,
                        name=server.name if i == 0 else f"{server.name}-replica{i + 1}",
                    )
                )
                for i in range(plan.replicas)
            ]
            if plan.needs_pid:
                extra["pid"] = replicas[0].pid
            if plan.replicas > 1:
                extra["subscriber_target"] = replicas[1].target
            result = run_load(plan, replicas[0].target, extra)
            if server.name == METRICS and "error" not in result:
                # Proof that this column ran with metrics on, and that they counted.
                if replicas[0].metrics_port is None:
                    return {"error": "journey+metrics served no /metrics"}
                result["scraped_track_calls"] = scraped_track_calls(replicas[0].metrics_port)
            return result
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return {"error": str(error)}
    except (OSError, SQLAlchemyError) as error:
        return {"error": f"database: {type(error).__name__}: {error}"}


def best_column(
    by_column: dict[str, dict[str, Any]], columns: list[Server], metric: str
) -> Server | None:
    """The candidate column (a Journey configuration) with the most of `metric`; None if none."""
    found = report.best(by_column, [c.name for c in columns if c.candidate], metric, False)
    return None if found is None else next(c for c in columns if c.name == found[0])


def nats_url() -> str:
    """The NATS server's URL (JOURNEY_BENCH_NATS_URL)."""
    return os.environ.get("JOURNEY_BENCH_NATS_URL", "nats://127.0.0.1:4222")


def nats_unreachable(url: str) -> str | None:
    """Why JetStream cannot be used at `url`, or None if it answers."""
    try:
        # Imported here: without nats-py the rest of the benchmark still runs.
        from bench import nats_workloads
    except ImportError as error:
        return f"nats-py is not installed: {error}"
    return asyncio.run(nats_workloads.probe(url))


def nats_status(chosen: list[Scenario], no_nats: bool) -> dict[str, Any]:
    """The NATS column's URL and why it is left out (None: it runs); says so if unreachable."""
    url = nats_url()
    if no_nats:
        return {"url": url, "skipped": "--no-nats"}
    if not any(s.nats is not None for s in chosen):
        return {"url": url, "skipped": "no chosen scenario has a NATS run"}
    reason = nats_unreachable(url)
    if reason is not None:
        print(
            f"NATS JetStream not reachable at {url.removeprefix('nats://')} ({reason}): "
            "the nats column is skipped",
            flush=True,
        )
    return {"url": url, "skipped": reason}


def main() -> None:
    """Parse the command line, run, print the table, write JSON; exit 1 if anything failed."""
    parser = argparse.ArgumentParser(prog="python3 dev.py bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, under a minute")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--only", metavar="KEYS", help="scenario numbers, e.g. 1,3")
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="LABEL:PATH[:KEY=VALUE,...]",
        help="also run Journey from another checkout and/or with JOURNEY_* settings",
    )
    parser.add_argument(
        "--no-nats",
        action="store_true",
        help="leave out the NATS JetStream column (JOURNEY_BENCH_NATS_URL, default local)",
    )
    parser.add_argument(
        "--no-postgres",
        action="store_true",
        help="leave out the PostgreSQL columns (JOURNEY_BENCH_POSTGRES_URL, default local)",
    )
    parser.add_argument(
        "--workers",
        type=postgres.worker_counts,
        default=postgres.worker_counts(DEFAULT_WORKERS),
        metavar="N[,N...]",
        help=f"the PostgreSQL columns' worker counts (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--overhead-rounds",
        type=int,
        default=None,
        metavar="N",
        help="rounds of the interleaved comparisons of scenario 1, metrics off against on and "
        "the baseline against Journey (default 12 each, or 0 with --quick)",
    )
    parser.add_argument(
        "--group-rounds",
        type=int,
        default=None,
        metavar="N",
        help="rounds of scenarios 11 and 12 interleaved with NATS's consumer, when both are "
        "chosen and NATS is up (default 9, or 0 with --quick)",
    )
    parser.add_argument(
        "--ingest-rounds",
        type=int,
        default=None,
        metavar="N",
        help="rounds of scenario 8 interleaved with NATS's publishes, in the configuration best "
        "in scenario 8's columns, when it is chosen and NATS is up (default 9, or 0 with --quick)",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    chosen = chosen_scenarios(args.only)
    columns = [
        Server("baseline"),
        Server("journey", candidate=True),
        Server(METRICS, env=METRICS_ENV),
        *args.variant,
    ]
    pg = postgres.status(wanted=bool(chosen), no_postgres=args.no_postgres)
    if pg["skipped"] is None:
        columns.extend(pg_column(n) for n in args.workers)
    nats = nats_status(chosen, args.no_nats)
    if nats["skipped"] is None:
        columns.append(Server(NATS))
    started = time.time()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="journey-bench-") as tmp:
        for scenario in chosen:
            results[scenario.key] = {}
            for server in columns:
                workdir = Path(tmp) / f"{scenario.key}-{server.name}"
                workdir.mkdir()
                began = time.monotonic()
                result = run_one(scenario, sizes, server, workdir, args.quick)
                results[scenario.key][server.name] = result
                took = f"{time.monotonic() - began:.1f} s"
                print(
                    f"scenario {scenario.key} {server.name} ({took}): {json.dumps(result)}",
                    flush=True,
                )
    rounds = args.overhead_rounds
    if rounds is None:
        rounds = 0 if args.quick else 12
    interleaved = against_baseline = None
    if rounds > 0 and any(s.key == "1" for s in chosen):
        # Imported here: bench.interleaved builds on this module's columns.
        from bench import interleaved as ab

        print(f"metrics overhead, interleaved: {rounds} rounds", flush=True)
        interleaved = ab.measure(
            Server("journey"), Server(METRICS, env=METRICS_ENV), rounds, ab.SECONDS, events=1
        )
        # Scenario 1 runs the baseline and Journey minutes apart, and calls/s here drifts by
        # more than a tenth in that time: its target is judged on interleaved rounds too.
        print(f"Track of 1 against the baseline, interleaved: {rounds} rounds", flush=True)
        against_baseline = ab.measure(
            Server("baseline"), Server("journey"), rounds, ab.SECONDS, events=1
        )
    group_rounds = args.group_rounds
    if group_rounds is None:
        group_rounds = 0 if args.quick else 9
    groups_against_nats = ingest_against_nats = None
    by_key = {s.key: s for s in chosen}
    # Imported here: bench.nats_interleaved builds on this module's columns.
    from bench import nats_interleaved

    if group_rounds > 0 and nats["skipped"] is None and {"11", "12"} <= set(by_key):
        # One run of each drains its backlog in a second, and NATS's own figure moves by
        # half between runs: the target is judged on interleaved rounds.
        print(f"consumer groups against NATS, interleaved: {group_rounds} rounds", flush=True)
        journey = Server("journey")
        sides = {"none": (by_key["11"], journey), "session": (by_key["12"], journey)}
        try:
            groups_against_nats = nats_interleaved.measure(sides, by_key["11"], sizes, group_rounds)
        except RuntimeError as error:
            groups_against_nats = {"error": str(error)}
    ingest_rounds = args.ingest_rounds
    if ingest_rounds is None:
        ingest_rounds = 0 if args.quick else 9
    ingest_best = best_column(results.get("8", {}), columns, "events_per_s")
    if ingest_rounds > 0 and nats["skipped"] is None and ingest_best is not None:
        # NATS's publish rate moved from 8,000 to 30,000 events/s between runs: the target
        # is judged on interleaved rounds, each shorter than the scenario's own run.
        print(f"page-view ingest against NATS, interleaved: {ingest_rounds} rounds", flush=True)
        short = dataclasses.replace(sizes, seconds=INGEST_ROUND_SECONDS)
        sides = {"journey": (by_key["8"], ingest_best)}
        try:
            ingest_against_nats = nats_interleaved.measure(
                sides, by_key["8"], short, ingest_rounds
            ) | {"configuration": ingest_best.name, "seconds": INGEST_ROUND_SECONDS}
        except RuntimeError as error:
            ingest_against_nats = {"error": str(error)}
    doc = report.document(
        chosen,
        results,
        [c.name for c in columns],
        args.quick,
        started,
        nats,
        candidates=[c.name for c in columns if c.candidate],
        postgres=pg,
        interleaved=interleaved,
        against_baseline=against_baseline,
        groups_against_nats=groups_against_nats,
        ingest_against_nats=ingest_against_nats,
    )
    print()
    print(report.markdown(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    failures = report.failures(doc)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    sys.exit(1 if failures else 0)
