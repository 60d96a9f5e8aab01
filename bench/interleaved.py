"""Interleaved A/B: two Journey servers up at once, Track load on each in turn, in random order.

`python -m bench.interleaved [--rounds 20] [--seconds 3] [--events 1] [--page-views] [--postgres]
[--a LABEL:PATH:K=V,...] [--b LABEL:PATH:K=V,...]`

On a shared machine, calls/s drifts by more than the effects worth measuring (a few percent)
from one minute to the next. Running A and B back to back, round after round, in an order
drawn at random each round, exposes both to the same drift; the median of the per-round
ratios B/A is then the figure. By default B is this checkout with metrics on, which is
issue 14's overhead target (at most 5% fewer Track calls/s); A may also be the storage-free
baseline (`--a baseline:.`), which is how the full benchmark judges Track of 1 against it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

from bench import postgres, servers
from bench.runner import METRICS_ENV, RUN_ID, Server, parse_variant, run_load
from bench.scenarios import Plan

# Of load per server per round: long enough for a Track scenario's steady state after its
# one-second warm-up, short enough that many rounds fit.
SECONDS = 3.0


def measure(
    a: Server,
    b: Server,
    rounds: int,
    seconds: float,
    events: int,
    seed: int | None = None,
    *,
    page_views: bool = False,
    postgres_db: bool = False,
) -> dict[str, Any]:
    """Run `rounds` rounds of Track load on both servers; per-round figures and their medians.

    `page_views`: scenario 8's realistic events; `postgres_db`: each server on a fresh
    PostgreSQL database (JOURNEY_BENCH_POSTGRES_URL) instead of an SQLite file.
    """
    order = random.Random(seed)
    args = {"callers": 32, "events": events, "seconds": seconds, "with_properties": page_views}
    plan = Plan("track", args, needs_pid=True)
    per_round: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="journey-ab-") as tmp, ExitStack() as stack:
        running = {}
        for server in (a, b):
            workdir = Path(tmp) / server.name
            workdir.mkdir()
            running[server.name] = stack.enter_context(
                _started(stack, server, workdir, postgres_db)
            )
        for number in range(1, rounds + 1):
            pair = [a, b]
            order.shuffle(pair)
            figures: dict[str, Any] = {"round": number, "first": pair[0].name}
            for server in pair:
                target = running[server.name]
                result = run_load(plan, target.target, {"pid": target.pid})
                if "error" in result:
                    raise RuntimeError(f"{server.name}: {result['error']}")
                figures[server.name] = result
            figures["ratio"] = figures[b.name]["calls_per_s"] / figures[a.name]["calls_per_s"]
            print(json.dumps(figures), file=sys.stderr, flush=True)
            per_round.append(figures)
    return summary(a.name, b.name, per_round)


def _started(
    stack: ExitStack, server: Server, workdir: Path, postgres_db: bool
) -> AbstractContextManager[servers.Running]:
    """The baseline, or Journey on a fresh database (left on `stack` until the end)."""
    if server.is_baseline:
        return servers.baseline(workdir)
    if postgres_db:
        name = postgres.database_name(RUN_ID, "ab", server.name)
        database = stack.enter_context(postgres.fresh_database(postgres.admin_url(), name))
    else:
        database = f"sqlite+aiosqlite:///{workdir / 'journey.db'}"
    return servers.journey(
        workdir, database, {}, checkout=server.checkout, env=server.env, name=server.name
    )


def summary(a: str, b: str, per_round: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of each side's calls/s and CPU per call, and of the per-round ratios B/A."""

    def median(name: str, key: str) -> float:
        return float(statistics.median(r[name][key] for r in per_round if key in r[name]))

    return {
        "a": a,
        "b": b,
        "rounds": len(per_round),
        "calls_per_s": {a: median(a, "calls_per_s"), b: median(b, "calls_per_s")},
        "server_cpu_ms_per_call": {
            a: median(a, "server_cpu_ms_per_call"),
            b: median(b, "server_cpu_ms_per_call"),
        },
        "median_ratio": statistics.median(r["ratio"] for r in per_round),
        "ratios": [round(r["ratio"], 3) for r in per_round],
    }


def main() -> None:
    """Parse the command line, measure, print the summary as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.interleaved", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--seconds", type=float, default=SECONDS, help="of load per server per round"
    )
    parser.add_argument("--events", type=int, default=1, help="tracked events per call")
    parser.add_argument("--seed", type=int, default=None, help="for the order of each round")
    parser.add_argument(
        "--page-views", action="store_true", help="scenario 8's page views with 3 properties"
    )
    parser.add_argument(
        "--postgres", action="store_true", help="each server on a fresh PostgreSQL database"
    )
    parser.add_argument(
        "--a", type=parse_variant, default=Server("journey"), metavar="LABEL:PATH[:K=V,...]"
    )
    parser.add_argument(
        "--b",
        type=parse_variant,
        default=Server("journey+metrics", env=METRICS_ENV),
        metavar="LABEL:PATH[:K=V,...]",
        help="default: this checkout with metrics on",
    )
    args = parser.parse_args()
    if args.a.name == args.b.name:
        parser.error("A and B need different labels")
    print(
        json.dumps(
            measure(
                args.a,
                args.b,
                args.rounds,
                args.seconds,
                args.events,
                args.seed,
                page_views=args.page_views,
                postgres_db=args.postgres,
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
