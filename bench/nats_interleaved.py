"""Journey against NATS JetStream in interleaved rounds: the targets judged against NATS's figure.

On a shared machine NATS's own figure moved by half or more between runs minutes apart (its
consumer 15,000 to 26,000 events/s, its acked publishes of page views 8,000 to 30,000). So
each round runs every side once, in an order drawn at random each round, every run on a fresh
server, database and stream; a target is judged on the median of the rounds' Journey / NATS
ratios, one ratio per Journey side.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.runner import NATS, Server, run_one
from bench.scenarios import Scenario, Sizes

Side = tuple[Scenario, Server]


def measure(
    sides: Mapping[str, Side], nats: Scenario, sizes: Sizes, rounds: int, seed: int | None = None
) -> dict[str, Any]:
    """`rounds` rounds of each Journey side and of `nats` against NATS, each in a random order.

    Each side's figure is its scenario's metric. Raises RuntimeError if any run fails: a
    ratio with a failed side would mean nothing.
    """
    order = random.Random(seed)
    runs = {**sides, "nats": (nats, Server(NATS))}
    per_round: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="journey-nats-ab-") as tmp:
        for number in range(1, rounds + 1):
            names = list(runs)
            order.shuffle(names)
            figures: dict[str, Any] = {"round": number, "order": names}
            for name in names:
                scenario, server = runs[name]
                workdir = Path(tmp) / f"{number}-{name}"
                workdir.mkdir()
                result = run_one(scenario, sizes, server, workdir)
                if "error" in result:
                    raise RuntimeError(f"round {number}, {name}: {result['error']}")
                figures[name] = result[scenario.metric]
            for side in sides:
                figures[f"{side}_ratio"] = figures[side] / figures["nats"]
            print(figures, file=sys.stderr, flush=True)
            per_round.append(figures)
    return summary(per_round, tuple(sides))


def summary(per_round: list[dict[str, Any]], sides: tuple[str, ...]) -> dict[str, Any]:
    """Each side's and NATS's median figure and, per side, the median of the rounds' ratios."""
    out: dict[str, Any] = {
        "rounds": len(per_round),
        "events_per_s": {
            name: statistics.median(r[name] for r in per_round) for name in (*sides, "nats")
        },
    }
    for side in sides:
        ratios = [r[f"{side}_ratio"] for r in per_round]
        out[side] = {
            "median_ratio": statistics.median(ratios),
            "ratios": [round(r, 3) for r in ratios],
        }
    return out
