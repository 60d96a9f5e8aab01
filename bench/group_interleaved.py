"""Consumer groups against NATS JetStream in interleaved rounds: scenarios 11 and 12 side by side.

One run of scenario 11 or 12 drains its backlog in about a second, and on a shared machine
NATS's figure alone moved from 15,000 to 26,000 events/s between runs minutes apart. So each
round runs Journey with ordering NONE, Journey with SESSION and NATS's consumer, one after
another in an order drawn at random each round, every run on a fresh server, database and
stream; the figure is the median of the rounds' Journey / NATS ratios, one per ordering.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.report import ORDERINGS
from bench.runner import NATS, Server, run_one
from bench.scenarios import Scenario, Sizes


def measure(
    none: Scenario, session: Scenario, sizes: Sizes, rounds: int, seed: int | None = None
) -> dict[str, Any]:
    """`rounds` rounds of scenario 11 (`none`), 12 (`session`) and NATS, each in a random order.

    Raises RuntimeError if any run fails: a ratio with a failed side would mean nothing.
    """
    order = random.Random(seed)
    runs = {"none": (none, Server("journey")), "session": (session, Server("journey"))}
    runs["nats"] = (none, Server(NATS))
    per_round: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="journey-groups-ab-") as tmp:
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
                figures[name] = result["events_per_s"]
            for ordering in ORDERINGS:
                figures[f"{ordering}_ratio"] = figures[ordering] / figures["nats"]
            print(figures, file=sys.stderr, flush=True)
            per_round.append(figures)
    return summary(per_round)


def summary(per_round: list[dict[str, Any]]) -> dict[str, Any]:
    """Each side's median events/s and, per ordering, the median of the rounds' ratios."""
    out: dict[str, Any] = {
        "rounds": len(per_round),
        "events_per_s": {
            name: statistics.median(r[name] for r in per_round) for name in (*ORDERINGS, "nats")
        },
    }
    for ordering in ORDERINGS:
        ratios = [r[f"{ordering}_ratio"] for r in per_round]
        out[ordering] = {
            "median_ratio": statistics.median(ratios),
            "ratios": [round(r, 3) for r in ratios],
        }
    return out
